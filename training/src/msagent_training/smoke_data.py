"""Small real datasets for smoke runs and tests: phantom cases, expert trajectories on them.

``python -m msagent_training.smoke_data OUT_DIR [--cases N] [--backbone litemedsam]`` writes
``OUT_DIR/rl.parquet`` and ``OUT_DIR/sft.parquet``. The cases are bright ellipses on noise
(:func:`msagent.testing.make_phantom`) with their exact masks; the trajectories come from the
``expert`` policy driving the backbone through :class:`msagent.Agent`, as ``msagent generate``
would produce them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from msagent.types import Case, Trajectory

log = logging.getLogger(__name__)


def phantom_cases(count: int = 4, *, height: int = 96, width: int = 128, seed: int = 0) -> list[Case]:
    """``count`` phantom cases of varied ellipse size and position."""
    from msagent.testing import make_phantom

    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        ry, rx = int(rng.integers(height // 8, height // 4)), int(rng.integers(width // 8, width // 4))
        cy = int(rng.integers(ry + 2, height - ry - 2))
        cx = int(rng.integers(rx + 2, width - rx - 2))
        image, mask = make_phantom(height, width, (cy, cx), (ry, rx), seed=seed + index)
        cases.append(Case(id=f"phantom-{index:03d}", image=image, target="bright ellipse",
                          ground_truth=mask, meta={"dataset": "phantom", "modality": "synthetic"}))
    return cases


def expert_trajectories(cases: list[Case], segmenter, *, max_turns: int = 3,
                        **expert_options) -> list[tuple[np.ndarray, Trajectory]]:
    """(image, trajectory) of the ``expert`` policy on each case."""
    import msagent

    policy = msagent.load_policy("expert", **expert_options)
    agent = msagent.Agent(policy, segmenter, max_turns=max_turns)
    return [(case.image, agent.run(case.image, case.target, case.ground_truth, case_id=case.id))
            for case in cases]


def write_smoke_data(out_dir: str, *, cases: int = 4, backbone: str = "litemedsam",
                     max_turns: int = 3, policy_image_size: int = 512) -> Path:
    """Write ``rl.parquet`` and ``sft.parquet`` for ``cases`` phantoms into ``out_dir``
    (expert trajectories of at most ``max_turns`` actions; ``policy_image_size`` px images)."""
    import msagent

    from .data import write_rl_parquet, write_sft_parquet

    out = Path(out_dir)
    items = phantom_cases(cases)
    segmenter = msagent.load_backbone(backbone, device="cpu")
    size = {"policy_image_size": policy_image_size, "progress": False}
    write_rl_parquet(items, out / "rl.parquet", **size)
    write_sft_parquet(expert_trajectories(items, segmenter, max_turns=max_turns),
                      out / "sft.parquet", **size)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msagent_training.smoke_data",
                                     description="Write tiny RL/SFT parquet files of phantom cases.")
    parser.add_argument("out_dir")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--backbone", default="litemedsam")
    parser.add_argument("--max-turns", type=int, default=3, help="expert actions per trajectory")
    parser.add_argument("--policy-image-size", type=int, default=512)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    write_smoke_data(args.out_dir, cases=args.cases, backbone=args.backbone,
                     max_turns=args.max_turns, policy_image_size=args.policy_image_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
