"""``msagent segment IMAGE TARGET``: one agent episode on a 2-D image; on a volume (NIfTI file
or DICOM series) one episode per slice (``--slices``; see :mod:`msagent.cli._volume`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="PNG/JPEG/TIFF/.npy image, or a volume: .nii/.nii.gz or a "
                        "DICOM series (directory or .dcm)")
    parser.add_argument("target", help='what to segment, e.g. "left kidney in abdomen CT"')
    parser.add_argument("--backbone", help="registered backbone (default $MSAGENT_BACKBONE, then medsam2)")
    parser.add_argument("--policy", help="registered policy (default $MSAGENT_POLICY, then qwen)")
    parser.add_argument("--ground-truth", help="mask of the same size: per-turn IoU/Dice; needed by expert")
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option for the backbone (repeatable), e.g. device=cuda")
    parser.add_argument("--policy-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option for the policy (repeatable), e.g. model=gpt-4o")
    parser.add_argument("--out", type=Path, help="write the final mask as PNG")
    parser.add_argument("--overlay", type=Path, help="write a per-turn overlay strip as PNG")
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


def parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs; values are parsed as JSON when they can be (numbers, true, null)."""
    from ..errors import InvalidInput

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"option {pair!r} must look like KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run(args: argparse.Namespace) -> int:
    from .. import api, io, render
    from ._volume import is_volume, run_volume

    if is_volume(args.image):
        return run_volume(args)
    if args.slices or args.dicom_seg:
        from ..errors import InvalidInput

        raise InvalidInput("--slices/--dicom-seg apply to volumes (.nii/.nii.gz or DICOM) only")

    result = api.segment(
        args.image, args.target, backbone=args.backbone, policy=args.policy,
        ground_truth=args.ground_truth, max_turns=args.max_turns,
        backbone_options=parse_options(args.backbone_option),
        policy_options=parse_options(args.policy_option))
    trajectory = result.trajectory
    print_turns(trajectory)
    if args.out:
        io.save_mask_png(result.mask, args.out)
    if args.overlay:
        image = io.to_rgb_uint8(args.image)
        io.save_png(render.trajectory_strip(image, trajectory), args.overlay)
    if args.trajectory:
        write_text(args.trajectory, trajectory.to_json(indent=1))
    return 0 if trajectory.turns else 1


def print_turns(trajectory) -> None:
    for step in trajectory.steps:
        kind = step.action.kind if step.action else "invalid"
        line = f"turn {step.index + 1}: {kind:<12}"
        if step.action is not None and step.action.arguments:
            line += " " + json.dumps(dict(step.action.arguments))
        if step.iou is not None:
            line += f"  IoU {step.iou:.3f}  Dice {step.dice:.3f}"
        elif step.score is not None:
            line += f"  score {step.score:.3f}"
        if step.error:
            line += f"  ({step.error})"
        print(line)
    print(f"stopped: {trajectory.stop_reason}; {trajectory.turns} mask-producing call(s)",
          file=sys.stdout)


def write_text(path: Path, text: str) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
