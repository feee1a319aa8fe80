"""``msagent segment VOLUME TARGET --slices ...``: slice-by-slice episodes on a 3-D volume.

VOLUME is a NIfTI file or a DICOM series (a directory or .dcm files). Each chosen slice of
``--plane`` (axial by default) is taken as displayed (see :mod:`msagent.io.volume`), windowed
to uint8 with one mapping for the whole volume (``--window``: a CT preset or W/L; else a DICOM
CT's stored window; else the volume's 0.5–99.5th percentiles), and segmented by one agent
episode. The masks are put back into the voxel grid: ``--out mask.nii.gz`` writes a NIfTI
aligned with the input (same shape and affine; the input's header for NIfTI input);
``--out seg.dcm`` or ``--dicom-seg seg.dcm`` writes a DICOM SEG referencing the input series
(DICOM input only). ``--trajectory`` writes one JSON line per slice.

``--3d`` segments the whole volume instead (:func:`msagent.segment_volume`): an episode on a key
slice (``--key-slice``, else the expert's largest target area or a survey), propagation
(``--propagation``), at most ``--review-slices`` review episodes; ``--trajectory`` then writes
the run's :class:`~msagent.VolumeTrajectory` as one JSON document.

Outputs are checked before any slice is segmented: their formats, that a DICOM SEG has DICOM
input, and that a NIfTI output can place the slices (a series read with
``--allow-irregular-slices`` has none). ``--series-uid`` picks one of several DICOM series.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def is_volume(path: str | Path) -> bool:
    """A NIfTI name, any folder (read as a DICOM series, whose reader explains an empty or
    non-DICOM folder) or a DICOM file."""
    from msagent import io

    path = Path(path)
    return io.is_nifti(path) or path.is_dir() or (path.exists() and io.is_dicom(path))


def parse_slices(spec: str, count: int) -> list[int]:
    """"all", "40:60" (end exclusive), "40:60:2", "12,14,20" or a mix "1,5:8" → indices."""
    from msagent.errors import InvalidInput

    if spec.strip().lower() == "all":
        return list(range(count))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if ":" in part:
                bounds = [int(v) if v else None for v in part.split(":")]
                out.extend(range(count)[slice(*bounds)])
            elif part:
                out.append(int(part))
        except ValueError:
            raise InvalidInput(f"bad --slices {spec!r}: use all, A:B, A:B:STEP or A,B,C") from None
    bad = [i for i in out if not 0 <= i < count]
    if bad:
        raise InvalidInput(f"slices {bad} are outside 0..{count - 1}")
    return sorted(dict.fromkeys(out))


def window_for(volume, window: str | None) -> tuple[float, float]:
    from msagent import io

    return io.choose_window(volume, window).pair


def run_volume(args: argparse.Namespace) -> int:
    from msagent import io
    from msagent.agent import Agent
    from msagent.errors import InvalidInput
    from msagent.options import parse_options
    from msagent.plugins.loading import PAPER_BACKBONE, PAPER_POLICY, resolve

    check_output_names(args)
    volume = io.read_volume(args.image, series_uid=args.series_uid,
                            allow_irregular=args.allow_irregular_slices)
    check_outputs_fit(args, volume)
    if getattr(args, "three_d", False):
        return run_volume_3d(args, volume)
    if args.key_slice is not None:
        raise InvalidInput("--key-slice applies to 3-D runs: add --3d")
    gt_volume = _label_volume(args.ground_truth, "ground truth", volume, args.label)
    from msagent.agent.proposal import PROPOSAL, check_can_propose, wants_proposal

    proposals = wants_proposal(args.initial_mask)  # each slice starts from its own proposal
    initial_volume = None if proposals else \
        _label_volume(args.initial_mask, "initial mask", volume, args.label)
    width, level = window_for(volume, args.window)
    indices = parse_slices(args.slices or "all", volume.n_slices(args.plane))
    segmenter = resolve("segmenter", args.backbone, "MSAGENT_BACKBONE", PAPER_BACKBONE,
                        parse_options(args.backbone_option))
    policy = resolve("policy", args.policy, "MSAGENT_POLICY", PAPER_POLICY,
                     parse_options(args.policy_option))
    if proposals:
        check_can_propose(segmenter)
    agent = Agent(policy, segmenter, max_turns=args.max_turns)
    masks = np.zeros(volume.shape, dtype=bool)
    trajectories = []
    for index in indices:
        gray = io.apply_window(volume.slice(index, args.plane), width, level)
        image = np.repeat(gray[:, :, None], 3, axis=2)
        gt = None if gt_volume is None else gt_volume.slice(index, args.plane)
        if gt is not None and not gt.any():
            if policy.needs_ground_truth:
                continue  # nothing to segment for a simulated expert
            gt = None
        initial = PROPOSAL if proposals else \
            None if initial_volume is None else initial_volume.slice(index, args.plane)
        trajectory = agent.run(image, args.target, gt, case_id=f"{args.plane}-{index}",
                               meta={"slice": index, "plane": args.plane}, initial_mask=initial,
                               initial_source="" if proposals else args.initial_mask or "")
        volume.put_slice(masks, trajectory.final_mask, index, args.plane)
        trajectories.append(trajectory)
        steps = trajectory.executed_steps
        quality = f"  IoU {steps[-1].iou:.3f}" if steps and steps[-1].iou is not None else ""
        print(f"{args.plane} slice {index}: {trajectory.turns} call(s), "
              f"{int(trajectory.final_mask.sum())} px{quality}")
    if not trajectories:
        raise InvalidInput("no slice was segmented: with an expert policy, the ground truth must "
                           "have foreground in the chosen --slices")
    _write_outputs(args, volume, masks, trajectories)
    return 0


def run_volume_3d(args: argparse.Namespace, volume) -> int:
    """``--3d``: :func:`msagent.segment_volume` on the whole volume; NIfTI / DICOM SEG out, the
    :class:`~msagent.VolumeTrajectory` as JSON (``--trajectory``)."""
    from msagent import io
    from msagent.errors import InvalidInput
    from msagent.io.atomic import atomic_write
    from msagent.options import parse_options
    from msagent.volume.api import segment_volume

    if args.slices:
        raise InvalidInput("--slices chooses slices for slice-by-slice episodes; a --3d run "
                           "covers the whole volume (use --key-slice to choose where it starts)")
    if args.initial_mask:
        raise InvalidInput("--initial-mask is for slice-by-slice runs; a --3d run starts from a "
                           "key slice")
    gt = _label_volume(args.ground_truth, "ground truth", volume, args.label)
    result = segment_volume(
        volume, args.target, backbone=args.backbone, policy=args.policy,
        ground_truth=None if gt is None else gt.data, key_slice=args.key_slice,
        plane=args.plane, window=args.window, max_turns=args.max_turns,
        review_slices=args.review_slices, propagation=args.propagation,
        backbone_options=parse_options(args.backbone_option),
        policy_options=parse_options(args.policy_option))
    trajectory = result.trajectory
    for episode in trajectory.episodes:
        steps = episode.trajectory.executed_steps if episode.trajectory else ()
        what = episode.decision or f"{len(steps)} call(s)"
        why = f" ({episode.reason})" if episode.reason else ""
        print(f"{episode.role} slice {episode.slice}{why}: {what}"
              f"{', seeded' if episode.seeded else ''}")
    extent = f"slices {min(trajectory.masks)}..{max(trajectory.masks)}" if trajectory.masks else "none"
    quality = f"  3-D Dice {result.dice:.3f}  NSD {result.nsd:.3f}" if result.dice is not None else ""
    counts = trajectory.counts
    print(f"{args.plane}: target on {len(trajectory.masks)} slice(s) ({extent}), "
          f"{trajectory.propagation} propagation, {counts['encodes']} encodes, "
          f"{counts['propagation_decodes']} propagation decodes, "
          f"{trajectory.timings['total']:.1f} s{quality}")
    for out in [p for p in (args.out, args.dicom_seg) if p]:
        if io.is_nifti(out):
            io.write_mask_nifti(result.mask, out, volume)
        else:
            io.write_dicom_seg(result.mask, volume, out, label=args.target)
        print(f"wrote {out}")
    if args.trajectory:
        atomic_write(args.trajectory, trajectory.to_json().encode())
    return 0


def _label_volume(path, what: str, volume, label: int | None):
    """A label volume on ``volume``'s voxel grid as a bool volume (``label``, or nonzero)."""
    from msagent import io
    from msagent.errors import InvalidInput

    if not path:
        return None
    labels = io.read_volume(path)
    if labels.data.dtype.kind == "f" and not np.isfinite(labels.data).all():
        raise InvalidInput(f"the {what} {path} has NaN or infinite voxels; a label map holds 0 "
                           "(background) and label values")
    mismatch = io.grid_mismatch(labels, volume)
    if mismatch:
        raise InvalidInput(f"the {what} {path} is not on the image's voxel grid: {mismatch}; "
                           "resample it onto the image first")
    data = labels.data == label if label is not None else labels.data != 0
    return io.Volume(data, volume.affine)


def check_output_names(args) -> None:
    """Refuse output names a volume cannot be written to (before reading anything)."""
    from msagent import io
    from msagent.cli._outputs import check_path
    from msagent.errors import InvalidInput

    for path in (args.out, args.dicom_seg, args.trajectory):
        check_path(path)
    if args.out and not (io.is_nifti(args.out) or str(args.out).lower().endswith(".dcm")):
        raise InvalidInput(f"--out {args.out}: a volume's mask is written as .nii/.nii.gz (NIfTI) "
                           "or .dcm (DICOM SEG); PNG masks are for 2-D images")
    if args.dicom_seg and not str(args.dicom_seg).lower().endswith(".dcm"):
        raise InvalidInput(f"--dicom-seg {args.dicom_seg}: a DICOM SEG file name ends in .dcm")
    seg = args.dicom_seg or (args.out if str(args.out or "").lower().endswith(".dcm") else None)
    if seg:  # the target becomes the SEG's segment label: checked before the run, not after
        from msagent.io.dicom_seg import check_segment_label

        try:
            check_segment_label(args.target)
        except InvalidInput as exc:
            flag = "--dicom-seg" if args.dicom_seg else "--out"
            raise InvalidInput(f"{flag} {seg}: {exc}") from None
    if args.overlay:
        raise InvalidInput("--overlay is for 2-D images; for a volume, open the mask (--out) "
                           "over the input in a viewer")


def check_outputs_fit(args, volume) -> None:
    """Refuse outputs this volume cannot have (before segmenting any slice)."""
    from msagent import io
    from msagent.errors import InvalidInput

    for out in [p for p in (args.out, args.dicom_seg) if p]:
        if io.is_nifti(out) and volume.irregular:
            raise InvalidInput(f"{out}: a NIfTI affine cannot place this series' slices "
                               f"({volume.irregular}); write a DICOM SEG instead (--out seg.dcm)")
        if not io.is_nifti(out) and not volume.datasets:
            raise InvalidInput(f"{out}: a DICOM SEG needs DICOM input; {args.image} is NIfTI, so "
                               "write a NIfTI mask (--out mask.nii.gz)")


def _write_outputs(args, volume, masks, trajectories) -> None:
    from msagent import io
    from msagent.io.atomic import atomic_write

    for out in [p for p in (args.out, args.dicom_seg) if p]:
        if io.is_nifti(out):
            io.write_mask_nifti(masks, out, volume)
        else:
            io.write_dicom_seg(masks, volume, out, label=args.target)
        print(f"wrote {out}")
    if args.trajectory:
        atomic_write(args.trajectory, ("\n".join(t.to_json() for t in trajectories) + "\n").encode())
