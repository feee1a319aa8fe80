"""3-D runs as a trajectory set: the episodes of the expert's volume runs, for SFT export.

A 3-D run (:class:`msagent.VolumeTrajectory`) holds one episode per slice it worked on: the
key episode (a box, then corrective clicks, from nothing) and review episodes, which start
from the propagated mask of a slice that looked wrong (the refine conversation). Written as
an ordinary trajectory set (:mod:`msagent.generation.records`, one shard per volume, each
committed atomically after its images), ``msagent export`` turns them into SFT rows like any
other trajectory: the policy learns to start a volume and to correct a propagated slice.

Rows: one per episode with a trajectory, ``case_id`` ``<volume case>/slice-<i>``,
``strategy`` ``volume-key``/``volume-review``/``volume-survey``; key and review episodes are
kept, survey episodes (one first action on a candidate key slice) are dropped
(``drop_reason`` "survey"). The expert's "no target here" decisions have no episode and
no row.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ..backbones.propagation import SliceStack
from ..errors import InvalidInput
from ..io.atomic import atomic_write, parquet_is_complete, read_json_file
from ..render import trajectory_strip
from ..segmenter import image_key
from ..types import Case, encode_mask
from ..volume_trajectory import VolumeTrajectory
from .records import MANIFEST, make_row
from .shards import ShardResult, commit, png_bytes, safe_name, shard_path

FORMAT = "msagent-trajectories/1"


@attrs.frozen(eq=False)
class VolumeRun:
    """One finished 3-D run with what its rows need: the slices and the ground truth (both
    slices × H × W, display order; the ground truth may be None)."""

    trajectory: VolumeTrajectory
    stack: SliceStack
    ground_truth: np.ndarray | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)


def volume_shard(index: int, run: VolumeRun, *, overlays: bool = True) -> ShardResult:
    """The rows and files of one volume run (shard ``index``)."""
    trajectory = run.trajectory
    rows, files = [], {}
    backbone = str(trajectory.meta.get("backbone", ""))
    generator = f"volume-{trajectory.meta.get('policy', '')}"
    for sample, episode in enumerate(trajectory.episodes):
        if episode.trajectory is None:
            continue
        image = run.stack.image(episode.slice)
        sha = image_key(image)
        image_rel = f"images/{sha[:2]}/{sha}.png"
        files.setdefault(image_rel, png_bytes(image))
        gt = np.zeros(run.stack.image_size, bool) if run.ground_truth is None \
            else np.asarray(run.ground_truth[episode.slice], bool)
        case_id = f"{trajectory.case_id or 'volume'}/slice-{episode.slice}"
        case = Case(case_id, image, trajectory.target, gt,
                    meta={**run.meta, "slice": episode.slice, "role": episode.role})
        overlay_rel = None
        if overlays and episode.trajectory.executed_steps:
            overlay_rel = f"overlays/{safe_name(case_id)}-{sample}.png"
            files[overlay_rel] = png_bytes(trajectory_strip(image, episode.trajectory))
        episode_trajectory = attrs.evolve(
            episode.trajectory, meta={**episode.trajectory.meta, "strategy": f"volume-{episode.role}",
                                      "review_reason": episode.reason})
        kept = episode.role != "survey"
        rows.append(make_row(
            case_index=index, sample=sample, case=case, trajectory=episode_trajectory, kept=kept,
            reason="" if kept else "survey", image_path=image_rel, image_sha256=sha,
            overlay_path=overlay_rel, ground_truth_rle=encode_mask(gt), backbone=backbone,
            generator=generator))
    return ShardResult(index, rows, files, 1)


def write_volume_set(runs: Iterable[VolumeRun], out: str | os.PathLike, *,
                     overlays: bool = True) -> Path:
    """Write ``runs`` as a trajectory set in ``out`` (one shard per run, in order). A shard
    already there and complete is kept, so a rerun over the same runs resumes; a folder made
    from other runs is refused (the manifest records each run's case id)."""
    out = Path(out)
    runs = list(runs)
    ids = [r.trajectory.case_id for r in runs]
    manifest = {"format": FORMAT, "kind": "volume-episodes", "runs": ids,
                "cases_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()}
    path = out / MANIFEST
    if path.exists():
        previous = read_json_file(path, "trajectory set manifest", f"delete {out} or use another folder")
        if previous != manifest:
            raise InvalidInput(f"{out} holds another trajectory set; use another folder")
    else:
        atomic_write(path, json.dumps(manifest, indent=1).encode())
    for index, run in enumerate(runs):
        if parquet_is_complete(shard_path(out, index)):
            continue
        commit(out, volume_shard(index, run, overlays=overlays))
    return out
