"""Shard work and atomic commits: the unit a local run or a Ray worker processes.

A shard is the fixed range of cases ``[i·S, (i+1)·S)`` of the job's case list. A worker
turns it into rows plus files (image and overlay PNGs) in memory; the driver commits it:
the files first, each through a temporary file and ``os.replace``, then the shard's Parquet
file the same way. A shard therefore exists complete or not at all, and a rerun after any
interruption recomputes exactly the missing shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from msagent.backbones.segmenter import Segmenter, image_key
from msagent.generation.base import TrajectoryGenerator
from msagent.generation.records import SHARD_DIR, make_row, schema
from msagent.io.atomic import atomic_write, parquet_bytes
from msagent.render import trajectory_strip
from msagent.types import encode_mask


@attrs.frozen(eq=False)
class ShardResult:
    """What a worker returns for shard ``index``: the rows and the files (relative path →
    bytes) to commit."""

    index: int
    rows: list[dict[str, Any]]
    files: dict[str, bytes]
    cases: int


def shard_path(out: Path, index: int) -> Path:
    return Path(out) / SHARD_DIR / f"part-{index:05d}.parquet"


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image (deterministic for the same pixels)."""
    buffer = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def safe_name(case_id: str) -> str:
    """A file-name form of a case id, unique through a short hash of the id."""
    short = hashlib.sha1(case_id.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', case_id).strip('_')[:80]}-{short}"


@attrs.define
class ShardWorker:
    """Runs ``generator`` with ``segmenter`` on the cases of a shard."""

    segmenter: Segmenter
    generator: TrajectoryGenerator
    overlays: bool = True
    backbone: str = ""
    generator_name: str = ""

    def run(self, index: int, start: int, refs: Sequence) -> ShardResult:
        """Shard ``index`` whose first case has the job-wide index ``start``."""
        rows: list[dict[str, Any]] = []
        files: dict[str, bytes] = {}
        for offset, ref in enumerate(refs):
            case = ref.load()
            sha = image_key(case.image)
            image_rel = f"images/{sha[:2]}/{sha}.png"
            files.setdefault(image_rel, png_bytes(case.image))
            gt = case.ground_truth if case.ground_truth is not None \
                else np.zeros(case.image.shape[:2], bool)
            rle = encode_mask(np.asarray(gt, dtype=bool))
            for sample, attempt in enumerate(self.generator.attempt(case, self.segmenter)):
                trajectory = attempt.trajectory
                overlay_rel = None
                if self.overlays and trajectory.executed_steps:
                    overlay_rel = f"overlays/{safe_name(case.id)}-{sample}.png"
                    files[overlay_rel] = png_bytes(trajectory_strip(case.image, trajectory))
                rows.append(make_row(
                    case_index=start + offset, sample=sample, case=case, trajectory=trajectory,
                    kept=attempt.kept, reason=attempt.reason, image_path=image_rel,
                    image_sha256=sha, overlay_path=overlay_rel, ground_truth_rle=rle,
                    backbone=self.backbone or self.segmenter.name,
                    generator=self.generator_name or self.generator.name))
        return ShardResult(index, rows, files, len(refs))


def commit(out: Path, result: ShardResult) -> None:
    """Write a shard's files, then its Parquet file (the commit point)."""
    for rel, data in sorted(result.files.items()):
        target = out / rel
        if rel.startswith("images/") and target.is_file():
            continue  # content-addressed: already there from another shard
        atomic_write(target, data)
    atomic_write(shard_path(out, result.index), parquet_bytes(result.rows, schema()))


def remove_stale_temporaries(out: Path) -> int:
    """Delete temporary files left by an interrupted run; returns how many."""
    count = 0
    for tmp in Path(out).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads (if torch is loaded) for the block, then restore them."""
    torch = sys.modules.get("torch")
    if threads is None or torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
