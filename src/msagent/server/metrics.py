"""Server counters and latency summaries (in memory, thread-safe)."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

import numpy as np


class Latency:
    """Count, mean and percentiles (over the last ``window`` samples) of durations in seconds."""

    def __init__(self, window: int = 10_000) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(seconds)
            self.count += 1
            self.total += seconds

    def summary(self) -> dict[str, float | int]:
        """``{"count", "mean_ms", "p50_ms", "p99_ms"}`` (milliseconds; zeros before any sample)."""
        with self._lock:
            samples = np.fromiter(self._samples, dtype=np.float64)
            count, total = self.count, self.total
        if samples.size == 0:
            return {"count": count, "mean_ms": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
        p50, p99 = np.percentile(samples, [50, 99]) * 1000
        return {"count": count, "mean_ms": round(total / count * 1000, 3),
                "p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


class Metrics:
    """Everything ``GET /metrics`` reports besides the embedding cache and sessions."""

    def __init__(self) -> None:
        self.encode = Latency()  # actual encoder runs (cache misses)
        self.decode = Latency()  # per request, queueing for a batch included
        self.batch = Latency()  # per decoder run (one batch)
        self.propose = Latency()  # per proposal from text (Engine.propose)
        self.batch_sizes: Counter[int] = Counter()
        self.statuses: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def record_status(self, status: int) -> None:
        with self._lock:
            self.statuses[f"{status // 100}xx"] += 1

    def record_batch(self, size: int, seconds: float) -> None:
        self.batch.add(seconds)
        with self._lock:
            self.batch_sizes[size] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            sizes = dict(self.batch_sizes)
            statuses = dict(self.statuses)
            counters = dict(self.counters)
        runs = sum(sizes.values())
        decoded = sum(size * n for size, n in sizes.items())
        return {
            "encode": self.encode.summary(),
            "decode": self.decode.summary(),
            "propose": self.propose.summary(),
            "batches": {**self.batch.summary(),
                        "mean_size": round(decoded / runs, 3) if runs else 0.0,
                        "max_size": max(sizes, default=0)},
            "requests": statuses,
            "counters": counters,
        }
