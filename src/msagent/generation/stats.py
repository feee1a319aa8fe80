"""Statistics of a trajectory set: turns, action mix, IoU per step, acceptance, filters.

:func:`compute_stats` summarises records (from :func:`msagent.generation.read_trajectories`)
overall, per dataset and per class:

- ``trajectories``, ``kept``, ``dropped`` (by reason), ``strategies`` (incl. fallbacks);
- ``turns_histogram``: executed actions per kept trajectory → count;
- ``actions``: counts of add_bbox, add_point+ (positive), add_point- (negative),
  stop_action and invalid replies, over kept trajectories;
- ``iou_by_step``: mean IoU after the t-th executed action (t = 1, 2, …) and how many kept
  trajectories reached t; ``final_iou`` mean/median;
- ``acceptance``: of the candidate actions the expert previewed, the fraction that passed the
  ΔIoU test (``candidate_rate``), and of the expert's decisions that needed a test, the
  fraction that found an accepted candidate (``decision_rate``).

:func:`plot_stats` draws a 2×2 PNG (matplotlib, ``msagent[plot]``).
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from msagent.io.atomic import atomic_write

ACTION_LABELS = ("add_bbox", "add_point+", "add_point-", "stop_action", "invalid")


class _Group:
    """Accumulates the statistics of one group of records."""

    def __init__(self) -> None:
        self.trajectories = 0
        self.kept = 0
        self.dropped: Counter = Counter()
        self.strategies: Counter = Counter()
        self.turns: Counter = Counter()
        self.actions: Counter = Counter()
        self.ious: dict[int, list[float]] = defaultdict(list)
        self.final: list[float] = []
        self.previews = self.accepted = self.decisions = 0

    def add(self, record) -> None:
        row, trajectory = record.row, record.trajectory
        self.trajectories += 1
        strategy = row["strategy"] or "unknown"
        if trajectory.meta.get("requested_strategy") not in (None, strategy):
            strategy = f"{trajectory.meta['requested_strategy']}->{strategy}"
        self.strategies[strategy] += 1
        for step in trajectory.steps:
            self.previews += int(step.usage.get("expert_previews", 0))
            if "expert_accepted" in step.usage:
                self.decisions += 1
                self.accepted += int(step.usage["expert_accepted"])
        if not row["kept"]:
            self.dropped[row["drop_reason"] or "dropped"] += 1
            return
        self.kept += 1
        self.turns[int(row["turns"])] += 1
        self.actions.update(row["actions"])
        for t, value in enumerate(row["ious"], start=1):
            self.ious[t].append(float(value))
        if row["final_iou"] is not None:
            self.final.append(float(row["final_iou"]))

    def summary(self) -> dict[str, Any]:
        return {
            "trajectories": self.trajectories, "kept": self.kept,
            "keep_rate": _ratio(self.kept, self.trajectories),
            "dropped": dict(sorted(self.dropped.items())),
            "strategies": dict(sorted(self.strategies.items())),
            "turns_histogram": {str(k): v for k, v in sorted(self.turns.items())},
            "mean_turns": _mean([k for k, v in self.turns.items() for _ in range(v)]),
            "actions": {label: int(self.actions.get(label, 0)) for label in ACTION_LABELS},
            "iou_by_step": [{"step": t, "mean": _mean(v), "n": len(v)}
                            for t, v in sorted(self.ious.items())],
            "final_iou": {"mean": _mean(self.final),
                          "median": float(np.median(self.final)) if self.final else None},
            "acceptance": {"previews": self.previews, "accepted": self.accepted,
                           "candidate_rate": _ratio(self.accepted, self.previews),
                           "decisions": self.decisions,
                           "decision_rate": _ratio(self.accepted, self.decisions)},
        }


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def compute_stats(records: Iterable) -> dict[str, Any]:
    """The summary (JSON-safe) of ``records``: overall, ``by_dataset`` and ``by_class``."""
    overall = _Group()
    by_dataset: dict[str, _Group] = defaultdict(_Group)
    by_class: dict[str, _Group] = defaultdict(_Group)
    for record in records:
        overall.add(record)
        by_dataset[record.row["dataset"] or "unknown"].add(record)
        by_class[record.row["class"] or record.row["target"]].add(record)
    return {**overall.summary(),
            "by_dataset": {k: g.summary() for k, g in sorted(by_dataset.items())},
            "by_class": {k: g.summary() for k, g in sorted(by_class.items())}}


def plot_stats(stats: dict[str, Any], path: str | os.PathLike) -> Path:
    """A 2×2 figure: turns histogram, action mix, mean IoU after each step (overall and per
    dataset), keep rate per dataset. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    turns = stats["turns_histogram"]
    axes[0, 0].bar([int(k) for k in turns], list(turns.values()), color="#4c72b0")
    axes[0, 0].set(title="executed actions per kept trajectory", xlabel="turns", ylabel="trajectories")
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    actions = stats["actions"]
    axes[0, 1].bar(list(actions), list(actions.values()), color="#55a868")
    axes[0, 1].set(title="action mix (kept trajectories)", ylabel="count")
    axes[0, 1].tick_params(axis="x", rotation=20)
    _iou_curve(axes[1, 0], "all", stats["iou_by_step"], width=2.5)
    for name, group in stats["by_dataset"].items():
        _iou_curve(axes[1, 0], name, group["iou_by_step"], width=1.0)
    axes[1, 0].set(title="mean IoU after each action", xlabel="action", ylabel="IoU", ylim=(0, 1))
    axes[1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1, 0].legend(fontsize=7)
    names = list(stats["by_dataset"])
    axes[1, 1].bar(names, [stats["by_dataset"][n]["keep_rate"] or 0 for n in names], color="#c44e52")
    axes[1, 1].set(title="keep rate per dataset", ylim=(0, 1))
    axes[1, 1].tick_params(axis="x", rotation=20)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return Path(path)


def _iou_curve(ax, label: str, points: list[dict], width: float) -> None:
    if points:
        ax.plot([p["step"] for p in points], [p["mean"] for p in points], marker="o",
                linewidth=width, label=label)


def stats_for(source: str | os.PathLike, out: str | os.PathLike | None = None,
              plot: bool = True) -> dict[str, Any]:
    """Statistics of the trajectory set ``source``; with ``out``, write ``stats.json`` (and
    ``stats.png``) there."""
    from msagent.generation.records import read_trajectories

    stats = compute_stats(read_trajectories(source))
    if out is not None:
        out = Path(out)
        atomic_write(out / "stats.json", json.dumps(stats, indent=1).encode())
        if plot:
            plot_stats(stats, out / "stats.png")
    return stats
