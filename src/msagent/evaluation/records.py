"""Per-case records and their append-only store (resumable, nothing lost or repeated).

Each finished (backbone, method, case) becomes one JSON line in ``records.jsonl``, written
with a single ``write`` on a file opened for appending and flushed with ``fsync``. The case's
mask, overlay and trajectory files are written first (temporary file + atomic rename), so a
record never points at a missing file. An interrupted run leaves at most one torn last line,
which :class:`RecordStore` drops when it opens the file again; a rerun skips every key that
has a successful record. Failed cases (status ``error``) are retried on a rerun unless
``retry_errors=False``; skipped cases are not run again; the newest record of a key wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from msagent.io.atomic import atomic_write, parquet_bytes

log = logging.getLogger(__name__)
Key = tuple[str, str, str]  # (backbone, method, case_id)


@attrs.frozen
class CaseRecord:
    """The result of one case under one (backbone, method). Metrics are None on error.

    ``curves`` maps a metric name to its value after each step (turn or click);
    ``values`` holds protocol scalars (``noc85``, ``noc90``, ``dsc_auc``, ``nsd_auc``, ...).
    ``kind`` is "image" (a 2-D case) or "volume" (a whole-volume case, scored in 3-D: ``slices``
    × ``height`` × ``width`` in display order; ``values`` adds ``key_slice``, ``count_encodes``,
    ...). A skipped case (status ``skipped``) says why in ``error``.
    """

    backbone: str
    method: str
    case_id: str
    protocol: str = "agent"  # "agent" | "noc" | "cvpr"
    status: str = "ok"  # "ok" | "error" | "skipped"
    error: str | None = None
    dataset: str = ""
    modality: str = ""
    label: str = ""
    target: str = ""
    dice: float | None = None
    iou: float | None = None
    nsd: float | None = None
    turns: int | None = None
    stop_reason: str = ""
    curves: Mapping[str, list] = attrs.field(factory=dict)
    values: Mapping[str, Any] = attrs.field(factory=dict)
    usage: Mapping[str, float] = attrs.field(factory=dict)
    seconds: float = 0.0
    height: int = 0
    width: int = 0
    kind: str = "image"  # "image" | "volume"
    slices: int = 0  # a volume's slice count (0 for an image)
    mask_file: str | None = None
    overlay_file: str | None = None
    trajectory_file: str | None = None

    @property
    def key(self) -> Key:
        return (self.backbone, self.method, self.case_id)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CaseRecord":
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def flat(self) -> dict[str, Any]:
        """One table row: scalars as columns, ``values`` spread out, curves as lists."""
        row = {k: v for k, v in self.to_dict().items() if k not in ("curves", "values", "usage")}
        for name, value in self.values.items():
            if name not in row:
                row[name] = value
        for name, curve in self.curves.items():
            row[f"{name}_curve"] = [float(v) for v in curve]
        for name, value in self.usage.items():
            row[f"usage_{name}"] = value
        return row


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``; a hash suffix keeps changed names distinct."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"
    if clean != text:
        clean = f"{clean[:80]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return clean


class RecordStore:
    """The append-only ``records.jsonl`` of one evaluation directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._latest: dict[Key, CaseRecord] = {}
        self._repair_and_load()

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        good_end = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a torn last line from an interrupted write
            try:
                record = CaseRecord.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                log.warning("dropping an unreadable record line in %s (%s)", self.path, exc)
                break
            self._latest[record.key] = record
            good_end += len(line)
        if good_end < len(raw):
            log.warning("%s ended in a partial record (interrupted run); truncating it", self.path)
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)

    def done(self, retry_errors: bool = True) -> set[Key]:
        """Keys that need no new run: successes and skips (an empty ground truth, a protocol
        without a 3-D form), and errors too unless ``retry_errors``."""
        return {k for k, r in self._latest.items()
                if r.ok or r.status == "skipped" or not retry_errors}

    def append(self, record: CaseRecord) -> None:
        line = (json.dumps(record.to_dict(), default=_jsonable, allow_nan=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._latest[record.key] = record

    def records(self) -> list[CaseRecord]:
        """The newest record of every key, in first-written order."""
        return list(self._latest.values())


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _column(pa, values: list) -> Any:
    """An Arrow array of ``values``; a column of mixed kinds (say numbers and text in a
    policy's usage field) becomes JSON text rather than failing the export."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v, default=str) for v in values])


def write_tables(records: Iterable[CaseRecord], out_dir: Path) -> dict[str, Path]:
    """``results.csv`` (lists as JSON text) and, with pyarrow, ``results.parquet``."""
    import csv
    import io

    rows = [r.flat() for r in records]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    written = {"csv": out_dir / "results.csv"}
    atomic_write(written["csv"], buffer.getvalue().encode())
    try:
        import pyarrow as pa
    except ImportError:
        log.warning("pyarrow is not installed: skipping results.parquet "
                    "(pip install '.[data]' in a msagent clone)")
        return written
    table = pa.table({c: _column(pa, [row.get(c) for row in rows]) for c in columns})
    written["parquet"] = out_dir / "results.parquet"
    atomic_write(written["parquet"], parquet_bytes(table))
    return written
