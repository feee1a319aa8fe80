"""``msagent segment VOLUME TARGET --slices ...``: slice-by-slice episodes on a 3-D volume.

VOLUME is a NIfTI file or a DICOM series (a directory or .dcm files). Each chosen slice of
``--plane`` (axial by default) is taken as displayed (see :mod:`msagent.io.volume`), windowed
to uint8 with one mapping for the whole volume (``--window``: a CT preset or W/L; else a DICOM
CT's stored window; else the volume's 0.5–99.5th percentiles), and segmented by one agent
episode. The masks are put back into the voxel grid: ``--out mask.nii.gz`` writes a NIfTI
aligned with the input (same shape and affine; the input's header for NIfTI input);
``--out seg.dcm`` or ``--dicom-seg seg.dcm`` writes a DICOM SEG referencing the input series
(DICOM input only). ``--trajectory`` writes one JSON line per slice.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def is_volume(path: str) -> bool:
    from .. import io

    return io.is_nifti(path) or (Path(path).exists() and io.is_dicom(path))


def parse_slices(spec: str, count: int) -> list[int]:
    """"all", "40:60" (end exclusive), "40:60:2", "12,14,20" or a mix "1,5:8" → indices."""
    from ..errors import InvalidInput

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
    from .. import io

    if window:
        return io.parse_window(window)
    stored = io.default_window(volume) if volume.modality == "CT" else None
    return stored or io.percentile_window(volume.data)


def run_volume(args: argparse.Namespace) -> int:
    from .. import io
    from ..agent import Agent
    from ..api import PAPER_BACKBONE, PAPER_POLICY, resolve
    from ..errors import InvalidInput
    from .segment import parse_options

    volume = io.read_volume(args.image)
    gt_volume = _ground_truth(args, volume)
    width, level = window_for(volume, args.window)
    indices = parse_slices(args.slices or "all", volume.n_slices(args.plane))
    segmenter = resolve("segmenter", args.backbone, "MSAGENT_BACKBONE", PAPER_BACKBONE,
                        parse_options(args.backbone_option))
    policy = resolve("policy", args.policy, "MSAGENT_POLICY", PAPER_POLICY,
                     parse_options(args.policy_option))
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
        trajectory = agent.run(image, args.target, gt, case_id=f"{args.plane}-{index}",
                               meta={"slice": index, "plane": args.plane})
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


def _ground_truth(args, volume):
    from .. import io
    from ..errors import InvalidInput

    if not args.ground_truth:
        return None
    labels = io.read_volume(args.ground_truth)
    if labels.shape != volume.shape or not np.allclose(labels.affine, volume.affine, atol=1e-3):
        raise InvalidInput(f"the ground truth {args.ground_truth} ({labels.shape}) is not on the "
                           f"image's voxel grid ({volume.shape}); resample it first")
    data = labels.data == args.label if args.label is not None else labels.data != 0
    return io.Volume(data, volume.affine)


def _write_outputs(args, volume, masks, trajectories) -> None:
    from .. import io
    from ..errors import InvalidInput
    from .segment import write_text

    for out in [p for p in (args.out, args.dicom_seg) if p]:
        name = str(out).lower()
        if io.is_nifti(name):
            io.write_mask_nifti(masks, out, volume if volume.header is not None else
                                io.Volume(volume.data, volume.affine))
        elif name.endswith(".dcm"):
            io.write_dicom_seg(masks, volume, out, label=args.target)
        else:
            raise InvalidInput(f"--out {out}: use .nii.gz (NIfTI mask) or .dcm (DICOM SEG)")
        print(f"wrote {out}")
    if args.trajectory:
        write_text(Path(args.trajectory), "\n".join(t.to_json() for t in trajectories) + "\n")
    if args.overlay:
        log.warning("--overlay is for 2-D images; open the mask volume over the input in a viewer")
