"""The on-disk trajectory set: one Parquet row per generated trajectory (needs pyarrow).

A trajectory set is a folder::

    manifest.json                 the job (sources, backbone, generator options, sharding)
    shards/part-00000.parquet     rows of the cases [0, shard_size), in case order
    images/ab/ab12…ef.png         the original images, named by content hash
    overlays/<case>-<sample>.png  per-turn overlay strips (for people)

Columns: :data:`COLUMNS`. ``trajectory`` holds the lossless JSON of the
:class:`~msagent.types.Trajectory` (masks run-length coded), ``ground_truth`` the run-length
coded ground truth; the other columns are denormalised for quick queries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from msagent.errors import InvalidInput
from msagent.types import Trajectory, decode_mask

SHARD_DIR = "shards"
MANIFEST = "manifest.json"

#: (column, arrow type name) in order; see :func:`schema`.
COLUMNS = (
    ("case_index", "int64"), ("sample", "int32"), ("case_id", "string"), ("dataset", "string"),
    ("modality", "string"), ("class", "string"), ("split", "string"), ("target", "string"),
    ("strategy", "string"), ("kept", "bool"), ("drop_reason", "string"), ("turns", "int32"),
    ("final_iou", "float64"), ("final_dice", "float64"), ("stop_reason", "string"),
    ("actions", "list<string>"), ("ious", "list<float64>"), ("height", "int32"),
    ("width", "int32"), ("image_path", "string"), ("image_sha256", "string"),
    ("overlay_path", "string"), ("ground_truth", "string"), ("backbone", "string"),
    ("generator", "string"), ("trajectory", "string"),
)


def schema():
    """The Arrow schema of a shard."""
    import pyarrow as pa

    types = {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(), "bool": pa.bool_(),
             "float64": pa.float64(), "list<string>": pa.list_(pa.string()),
             "list<float64>": pa.list_(pa.float64())}
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS])


def action_label(step) -> str:
    """'add_bbox', 'add_point+', 'add_point-', 'stop_action' or 'invalid'."""
    if step.action is None or step.error:
        return "invalid"
    if step.action.kind == "add_point":
        return "add_point+" if step.action.arguments.get("point_type") == "positive" else "add_point-"
    return step.action.kind


def make_row(*, case_index: int, sample: int, case, trajectory: Trajectory, kept: bool,
             reason: str, image_path: str, image_sha256: str, overlay_path: str | None,
             ground_truth_rle: dict, backbone: str, generator: str) -> dict[str, Any]:
    """One shard row (see :data:`COLUMNS`)."""
    executed = trajectory.executed_steps
    last = executed[-1] if executed else None
    meta = case.meta
    return {
        "case_index": case_index, "sample": sample, "case_id": case.id,
        "dataset": str(meta.get("dataset", "")), "modality": str(meta.get("modality", "")),
        "class": str(meta.get("class", "")), "split": str(meta.get("split", "")),
        "target": case.target, "strategy": str(trajectory.meta.get("strategy", "")),
        "kept": bool(kept), "drop_reason": reason, "turns": trajectory.turns,
        "final_iou": None if last is None else last.iou,
        "final_dice": None if last is None else last.dice,
        "stop_reason": trajectory.stop_reason,
        "actions": [action_label(s) for s in trajectory.steps],
        "ious": [float(s.iou) for s in executed if s.iou is not None],
        "height": int(case.image.shape[0]), "width": int(case.image.shape[1]),
        "image_path": image_path, "image_sha256": image_sha256, "overlay_path": overlay_path,
        "ground_truth": json.dumps(ground_truth_rle), "backbone": backbone,
        "generator": generator, "trajectory": trajectory.to_json(),
    }


@attrs.frozen(eq=False)
class TrajectoryRecord:
    """One row of a trajectory set, with the trajectory parsed. ``root`` is the set's folder."""

    row: dict
    trajectory: Trajectory
    root: Path

    @property
    def case_id(self) -> str:
        return self.row["case_id"]

    @property
    def kept(self) -> bool:
        return bool(self.row["kept"])

    @property
    def key(self) -> str:
        """A unique id of the trajectory: ``{case_id}#{sample}``."""
        return f"{self.row['case_id']}#{self.row['sample']}"

    def image(self) -> np.ndarray:
        """The original H×W×3 uint8 image."""
        from msagent.io import to_rgb_uint8

        return to_rgb_uint8(self.root / self.row["image_path"])

    def ground_truth(self) -> np.ndarray:
        """The H×W bool ground truth."""
        return decode_mask(json.loads(self.row["ground_truth"]))


def shard_paths(root: str | os.PathLike) -> list[Path]:
    """The committed shards of a trajectory set, in order."""
    root = Path(root)
    if not (root / SHARD_DIR).is_dir():
        raise InvalidInput(f"{root} is not a trajectory set (no {SHARD_DIR}/ folder); "
                           "create one with `msagent generate`")
    return sorted((root / SHARD_DIR).glob("part-*.parquet"))


def read_shard(path: str | os.PathLike, root: str | os.PathLike | None = None,
               kept_only: bool = False) -> Iterator[TrajectoryRecord]:
    """The records of one shard file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    base = Path(root) if root is not None else path.parent.parent
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInput(f"{path} is damaged ({type(exc).__name__}); run the same `msagent "
                           "generate` again: it recomputes damaged shards") from None
    for row in rows:
        if kept_only and not row["kept"]:
            continue
        yield TrajectoryRecord(row, Trajectory.from_json(row["trajectory"]), base)


def read_trajectories(root: str | os.PathLike, kept_only: bool = False) -> Iterator[TrajectoryRecord]:
    """Every record of a trajectory set, in case order (``kept_only``: skip dropped ones)."""
    for path in shard_paths(root):
        yield from read_shard(path, root, kept_only)


def read_manifest(root: str | os.PathLike) -> dict | None:
    from msagent.io.atomic import read_json_file

    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    return read_json_file(path, "generation manifest", f"delete {root} and generate again")
