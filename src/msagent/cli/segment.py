"""``msagent segment IMAGE TARGET``: one agent episode on a 2-D image; on a volume (NIfTI file
or DICOM series) one episode per slice (``--slices``), or with ``--3d`` a 3-D run (a key slice,
propagation, review; see :mod:`msagent.cli._volume`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from msagent.cli._outputs import check_path
from msagent.options import parse_options
from msagent.types import Trajectory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="PNG/JPEG/TIFF/.npy image, or a volume: .nii/.nii.gz or a "
                        "DICOM series (directory or .dcm)")
    parser.add_argument("target", help='what to segment, e.g. "left kidney in abdomen CT"')
    parser.add_argument("--backbone", help="registered backbone (default $MSAGENT_BACKBONE, then medsam2)")
    parser.add_argument("--policy", help="registered policy (default $MSAGENT_POLICY, then qwen)")
    parser.add_argument("--ground-truth", help="mask of the same size: per-turn IoU/Dice; needed by expert")
    parser.add_argument("--initial-mask", help="a prediction to refine instead of starting from "
                        "nothing (e.g. nnU-Net's): a binary mask of the same size, or for a volume "
                        "a label volume on its voxel grid (nonzero, or --label, is the target); "
                        "'proposal': the backbone's own mask for the target (sam3; a file named "
                        "proposal: ./proposal)")
    parser.add_argument("--max-turns", type=at_least(1), default=5)
    parser.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option for the backbone (repeatable), e.g. device=cuda")
    parser.add_argument("--policy-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option for the policy (repeatable), e.g. model=gpt-4o")
    parser.add_argument("--out", type=Path, help="write the final mask: PNG for a 2-D image; "
                        ".nii.gz (NIfTI) or .dcm (DICOM SEG) for a volume")
    parser.add_argument("--overlay", type=Path, help="write a per-turn overlay strip as PNG "
                        "(2-D images)")
    parser.add_argument("--trajectory", type=Path, help="write the trajectory as JSON")
    volume = parser.add_argument_group("volumes (NIfTI / DICOM input)")
    volume.add_argument("--slices", help="slices to segment: all (default), A:B, A:B:STEP or A,B,C "
                        "(voxel indices along the plane's axis)")
    volume.add_argument("--plane", choices=["axial", "coronal", "sagittal"], default="axial")
    volume.add_argument("--window", help="CT window: a preset (abdomen, lung, bone, brain, liver, "
                        "mediastinum, soft_tissue, ...) or WIDTH/LEVEL in HU, e.g. 400/40")
    volume.add_argument("--label", type=int, help="label value of the target in a --ground-truth "
                        "label map (default: any nonzero)")
    volume.add_argument("--dicom-seg", type=Path, help="also write a DICOM SEG (DICOM input)")
    volume.add_argument("--series-uid", help="the SeriesInstanceUID to read when the DICOM folder "
                        "holds several series (the error lists them)")
    volume.add_argument("--allow-irregular-slices", action="store_true",
                        help="read a DICOM series with missing or duplicate slices (uneven or zero "
                        "spacing) as it is; only a DICOM SEG can then be written, not NIfTI")
    three_d = parser.add_argument_group("3-D runs (--3d): a key slice, propagation, review")
    three_d.add_argument("--3d", dest="three_d", action="store_true",
                         help="segment the whole volume: an episode on a key slice, propagation "
                         "through the volume, review episodes on the slices most likely wrong")
    three_d.add_argument("--key-slice", type=int, help="the key slice (default: the expert's "
                         "largest target area, else a survey of a few slices)")
    three_d.add_argument("--review-slices", type=at_least(0), default=3,
                         help="at most this many review episodes (default 3; 0: none)")
    three_d.add_argument("--propagation", choices=["auto", "native", "generic"], default="auto",
                         help="auto (default): the backbone's own 3-D memory where it has one "
                         "(medsam2, sam2), else slice by slice")


def at_least(least: int):
    """An argparse type: a whole number of at least ``least`` (else argparse's one-line error,
    exit 2, rather than the agent's traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its message
    return parse


def run(args: argparse.Namespace) -> int:
    from msagent import _console, io, render
    from msagent._console import turn_lines
    from msagent.agent.segment import segment
    from msagent.cli._volume import is_volume, run_volume
    from msagent.errors import SegmentationFailed
    from msagent.io.atomic import atomic_write

    if is_volume(args.image):
        return run_volume(args)
    check_image_outputs(args)
    if args.three_d:
        from msagent.errors import InvalidInput

        raise InvalidInput(f"--3d segments a volume (.nii/.nii.gz or a DICOM series); {args.image} "
                           "is a 2-D image")

    try:
        result = segment(
            args.image, args.target, backbone=args.backbone, policy=args.policy,
            ground_truth=args.ground_truth, max_turns=args.max_turns,
            initial_mask=args.initial_mask, backbone_options=parse_options(args.backbone_option),
            policy_options=parse_options(args.policy_option))
    except SegmentationFailed as exc:  # the replies are still worth reading
        print("\n".join(turn_lines(cast(Trajectory, exc.trajectory))[-1 if _console.live() else 0:]))
        if args.trajectory:
            atomic_write(args.trajectory, cast(Trajectory, exc.trajectory).to_json(indent=1).encode())
        raise
    trajectory = result.trajectory
    print("\n".join(turn_lines(trajectory)[-1 if _console.live() else 0:]))
    if not result.ok:
        print(f"msagent: warning: the episode ended early ({result.stop_reason}): {result.error}; "
              "the mask is the last one produced", file=sys.stderr)
    if args.out:
        io.save_mask_png(result.mask, args.out)
    if args.overlay:
        image = io.to_rgb_uint8(args.image)
        gt = io.to_mask(args.ground_truth, image.shape[:2]) if args.ground_truth else None
        io.save_png(render.trajectory_strip(image, trajectory, ground_truth=gt), args.overlay)
    if args.trajectory:
        atomic_write(args.trajectory, trajectory.to_json(indent=1).encode())
    return 0 if result.ok else 1


def check_image_outputs(args: argparse.Namespace) -> None:
    """Refuse options and output names a 2-D run cannot honour, before any work."""
    from msagent.errors import InvalidInput

    volume_only = [flag for flag, value in (("--slices", args.slices), ("--dicom-seg", args.dicom_seg),
                                            ("--key-slice", args.key_slice),
                                            ("--series-uid", args.series_uid),
                                            ("--allow-irregular-slices", args.allow_irregular_slices))
                   if value]
    if volume_only:
        raise InvalidInput(f"{', '.join(volume_only)} apply to volumes (.nii/.nii.gz or DICOM) only")
    for path in (args.out, args.overlay, args.trajectory):
        check_path(path)
    for flag, path in (("--out", args.out), ("--overlay", args.overlay)):
        if path is not None and Path(path).suffix.lower() != ".png":
            raise InvalidInput(f"{flag} {path}: for a 2-D image this is written as PNG; name it "
                               ".png (NIfTI and DICOM SEG outputs are for volumes)")
