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
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from msagent.backbones.propagation import SliceStack
from msagent.backbones.segmenter import image_key
from msagent.errors import InvalidInput
from msagent.generation.records import MANIFEST, make_row
from msagent.generation.shards import ShardResult, commit, png_bytes, safe_name, shard_path
from msagent.io.atomic import atomic_write, parquet_is_complete, read_json_file
from msagent.render import trajectory_strip
from msagent.types import Case, encode_mask
from msagent.volume.trajectory import VolumeTrajectory

FORMAT = "msagent-trajectories/1"
log = logging.getLogger(__name__)


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
    rows: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
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


def generate_volume_set(cases: Iterable[Any], out: str | os.PathLike, *,
                        backbone: Any = "litemedsam", policy: Any = "expert",
                        backbone_options: Mapping[str, Any] | None = None,
                        policy_options: Mapping[str, Any] | None = None, limit: int | None = None,
                        overlays: bool = True, progress: bool = True,
                        **agent_options: Any) -> tuple[Path, int, int]:
    """3-D runs of ``policy`` (the expert by default) on whole-volume cases
    (:class:`msagent.datasets.VolumeCase`, e.g. ``open_dataset(path, volumes=True).refs``),
    written as a trajectory set: one shard per volume, committed after its images, so a
    rerun (after any interruption, kill -9 included) computes exactly the missing volumes.
    ``agent_options`` go to :class:`msagent.VolumeAgent` (``review_slices``, ``max_turns``,
    ``propagation``, ...); they, the backbone, the policy and the case ids are the job's
    identity (``manifest.json``). Returns (out, volumes, volumes written now)."""
    from msagent.plugins.loading import instance_of, name_of
    from msagent.volume.agent import VolumeAgent

    out = Path(out)
    cases = list(cases)[:limit]
    names = {"backbone": name_of(backbone), "policy": name_of(policy)}
    settings = {**names, "backbone_options": dict(backbone_options or {}),
                "policy_options": dict(policy_options or {}), "agent": dict(agent_options)}
    ids = [case.id for case in cases]
    _claim(out, {"format": FORMAT, "kind": "volume-episodes", "runs": ids, "settings": settings,
                 "cases_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()})
    todo = [i for i in range(len(cases)) if not parquet_is_complete(shard_path(out, i))]
    if not todo:
        return out, len(cases), 0
    segmenter = instance_of("segmenter", backbone, backbone_options)
    agent_policy = instance_of("policy", policy, policy_options)
    agent = VolumeAgent(agent_policy, segmenter, **agent_options)
    bar = _bar(len(todo), progress)
    for index in todo:
        loaded = cases[index].load()
        gt = loaded.ground_truth
        if agent_policy.needs_ground_truth and not gt.any():
            log.info("volume %s: empty ground truth, no episodes", cases[index].id)
            commit(out, ShardResult(index, [], {}, 1))
        else:
            trajectory = agent.run(loaded.sliced.slices, cases[index].target, gt,
                                   case_id=cases[index].id, where=loaded.sliced.where)
            run = VolumeRun(trajectory, loaded.sliced.slices, gt, dict(cases[index].meta))
            commit(out, volume_shard(index, run, overlays=overlays))
        bar.update(1)
    bar.close()
    return out, len(cases), len(todo)


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="volume", desc="msagent generate --volumes", disable=not enabled)


def _claim(out: Path, manifest: dict) -> None:
    """Write ``manifest`` into a new set, or check that an existing set has the same one."""
    path = out / MANIFEST
    if path.exists():
        previous = read_json_file(path, "trajectory set manifest", f"delete {out} or use another folder")
        if previous != manifest:
            raise InvalidInput(f"{out} holds another trajectory set (other volumes or settings); "
                               "use another folder, or the same arguments to resume")
    else:
        atomic_write(path, json.dumps(manifest, indent=1).encode())


def write_volume_set(runs: Iterable[VolumeRun], out: str | os.PathLike, *,
                     overlays: bool = True) -> Path:
    """Write ``runs`` as a trajectory set in ``out`` (one shard per run, in order). A shard
    already there and complete is kept, so a rerun over the same runs resumes; a folder made
    from other runs is refused (the manifest records each run's case id)."""
    out = Path(out)
    runs = list(runs)
    ids = [r.trajectory.case_id for r in runs]
    _claim(out, {"format": FORMAT, "kind": "volume-episodes", "runs": ids,
                 "cases_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()})
    for index, run in enumerate(runs):
        if parquet_is_complete(shard_path(out, index)):
            continue
        commit(out, volume_shard(index, run, overlays=overlays))
    return out
