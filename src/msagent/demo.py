"""The Quickstart demo: an expert episode with LiteMedSAM on a real MRI slice.

``python -m msagent.demo [--out DIR] [--target brain|"white matter"|"gray matter"]`` takes an
axial slice of the MNI152 T1 template that nilearn ships (no download), runs the simulated
expert policy driving the ``litemedsam`` backbone, prints IoU/Dice per turn, and writes the
per-turn overlays, the final mask and the trajectory JSON.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from msagent import _console, io, render
from msagent._console import turn_lines
from msagent.agent.segment import segment
from msagent.io.atomic import atomic_write
from msagent.testing import MNI_TARGETS, mni152_slice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msagent.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--target", default="brain", choices=sorted(MNI_TARGETS))
    parser.add_argument("--backbone", default="litemedsam")
    parser.add_argument("--policy", default="expert")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning, module="timm")  # litemedsam's import

    image, gt = mni152_slice(args.target)
    rgb = io.to_rgb_uint8(image)
    print(f"MNI152 T1 axial slice {rgb.shape[1]}×{rgb.shape[0]}, target: {args.target}, "
          f"backbone: {args.backbone}, policy: {args.policy}")
    result = segment(rgb, args.target, backbone=args.backbone, policy=args.policy, ground_truth=gt)
    print("\n".join(turn_lines(result.trajectory)[-1 if _console.live() else 0:]))

    out: Path = args.out
    io.save_png(rgb, out / "image.png")
    io.save_mask_png(gt, out / "ground_truth.png")
    io.save_mask_png(result.mask, out / "mask.png")
    for step in result.trajectory.executed_steps:
        io.save_png(render.overlay(rgb, step.mask), out / f"overlay_turn{step.index + 1}.png")
    io.save_png(render.trajectory_strip(rgb, result.trajectory, ground_truth=gt), out / "turns.png")
    atomic_write(out / "trajectory.json", result.trajectory.to_json(indent=1).encode())
    print(f"final IoU {result.iou:.3f}, Dice {result.dice:.3f} after {result.turns} turn(s); "
          f"wrote {out}/turns.png, overlays, mask.png and trajectory.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
