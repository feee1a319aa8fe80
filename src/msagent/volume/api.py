"""The one-call 3-D API: ``msagent.segment_volume(volume, target, backbone=..., policy=...)``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from msagent import _console, metrics
from msagent.backbones.segmenter import Segmenter
from msagent.errors import InvalidImage, InvalidInput, InvalidTarget
from msagent.policies.base import Policy
from msagent.volume.agent import VolumeAgent, split_options
from msagent.volume.stack import SlicedVolume, build_stack, label_stack
from msagent.volume.trajectory import VolumeEpisode, VolumeTrajectory


@attrs.frozen(eq=False)
class VolumeResult:
    """What :func:`segment_volume` returns.

    ``mask``: the 3-D bool mask in the input's voxel order (the input array's shape, or the
    file's ``data[i, j, k]``); ``trajectory``: the whole run (:class:`VolumeTrajectory`);
    ``stack``: how the slices were taken (window, plane or axis, spacing). With a ground truth,
    ``dice``/``iou``/``nsd`` are 3-D scores (NSD at ``nsd_tolerance`` mm with the voxel spacing)
    and ``slice_dice`` the Dice per slice where the target or the prediction is."""

    mask: np.ndarray
    trajectory: VolumeTrajectory
    sliced: SlicedVolume
    dice: float | None = None
    iou: float | None = None
    nsd: float | None = None
    slice_dice: Mapping[int, float] = attrs.field(factory=dict)

    @property
    def key_slice(self) -> int:
        return self.trajectory.key_slice

    @property
    def episodes(self) -> tuple[VolumeEpisode, ...]:
        return self.trajectory.episodes

    @property
    def slice_scores(self) -> Mapping[int, float]:
        """The backbone's predicted score per slice with target (NaN on episode seeds)."""
        return self.trajectory.scores

    @property
    def timings(self) -> Mapping[str, float]:
        return self.trajectory.timings

    @property
    def counts(self) -> Mapping[str, int]:
        return self.trajectory.counts


def segment_volume(volume: Any, target: str, *, backbone: str | Segmenter | None = None,
                   policy: str | Policy | None = None, ground_truth: Any = None,
                   key_slice: int | None = None, plane: str = "axial", axis: int | None = None,
                   spacing: Sequence[float] | None = None, window: Any = None,
                   label: int | None = None, max_turns: int = 5, review_slices: int = 3,
                   propagation: str = "auto", backbone_options: Mapping[str, Any] | None = None,
                   policy_options: Mapping[str, Any] | None = None, max_voxels: int | None = None,
                   nsd_tolerance: float = 2.0, **options: Any) -> VolumeResult:
    """Segment ``target`` through a whole volume: an agent episode on a key slice, propagation
    through the volume, then review episodes on the slices most likely wrong, each correction
    propagated again (see :mod:`msagent.volume.agent`).

    ``volume``: a NIfTI path, a DICOM series (folder or file), an :class:`msagent.io.Volume`
    (sliced along ``plane``) or a 3-D NumPy array with ``spacing`` (mm per array axis; sliced
    along ``axis``, 0 by default). ``window``: a CT preset or "W/L" (default: a DICOM CT's
    stored window, else the volume's percentiles), applied once to the whole volume.
    ``ground_truth``: a label volume on the same grid (``label`` picks a value), for 3-D scores
    and the ``expert``/``oracle-box`` policies. ``propagation``: "auto" (the backbone's own
    3-D memory where it has one: medsam2, sam2, sam3), "native" or "generic". Other options
    (``key_rule``: "auto", "survey" or "proposal", the slice whose proposal for ``target``
    scores best, for a backbone that proposes; ``proposal_slices``, ``survey_slices``,
    ``review_below``, ``min_score``, ``min_area``, ``max_in_memory``, and
    :class:`msagent.Agent`'s ``prompt_mode``/``multimask``) go to
    :class:`~msagent.volume.agent.VolumeAgent`.
    """
    from msagent.plugins.loading import check_ground_truth, load_backbone_for, load_policy_for

    if not isinstance(target, str) or not target.strip():
        raise InvalidTarget("target must be a non-empty description, e.g. 'liver in abdomen CT'")
    if isinstance(volume, np.ndarray) and volume.ndim == 2:
        raise InvalidImage(f"segment_volume needs a 3-D volume, got a 2-D image {volume.shape}; "
                           "use msagent.segment for a 2-D image")
    status = _console.Status()
    with status.step("reading and windowing the volume"):
        stack = build_stack(volume, plane=plane, axis=axis, spacing=spacing, window=window,
                            max_voxels=max_voxels)
    gt = None if ground_truth is None else label_stack(ground_truth, stack, "ground truth", label)
    check_ground_truth(policy, gt)
    options, agent_options = split_options(  # before a backbone loads
        options, max_turns=max_turns, propagation=propagation, review_slices=review_slices)
    if isinstance(nsd_tolerance, bool) or not isinstance(nsd_tolerance, (int, float)) \
            or not np.isfinite(nsd_tolerance) or nsd_tolerance < 0:
        raise InvalidInput(f"nsd_tolerance is a distance in mm (0 or more), got {nsd_tolerance!r}")
    agent_policy = load_policy_for(policy, policy_options or {})
    segmenter = load_backbone_for(backbone, backbone_options or {})
    agent = VolumeAgent(agent_policy, segmenter, max_turns=max_turns, propagation=propagation,
                        review_slices=review_slices, agent_options=agent_options, **options)
    started = time.perf_counter()
    trajectory = agent.run(stack.slices, target.strip(), gt, key_slice=key_slice,
                           where=stack.where, progress=status.line if _console.wanted() else None)
    display = trajectory.final_masks()
    scores: dict[str, Any] = {}
    if gt is not None:  # display order: the stack's spacing is (slice, row, column)
        scores = {**metrics.volume_metrics(display, gt, stack.slices.spacing, nsd_tolerance),
                  "slice_dice": {i: metrics.dice(display[i], gt[i]) for i in range(len(gt))
                                 if display[i].any() or gt[i].any()}}
    status.line(f"segmented {len(trajectory.masks)} slice(s) in "
                f"{time.perf_counter() - started:.1f} s")
    return VolumeResult(mask=stack.to_voxels(display), trajectory=trajectory, sliced=stack, **scores)
