"""``python -m msagent_training.data``: build verl parquet files.

    # RL prompts from a dataset (any layout msagent.datasets.open_dataset reads)
    python -m msagent_training.data rl --dataset DATA_DIR --split train --out rl_train.parquet
    # RL prompts from the cases of a trajectory set (`msagent generate` output)
    python -m msagent_training.data rl --trajectories TRAJ_DIR --out rl_train.parquet
    # multi-turn SFT chats from a trajectory set (kept trajectories only)
    python -m msagent_training.data sft --trajectories TRAJ_DIR --out sft_train.parquet
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Iterator

from msagent.types import Case


def _cases_from_trajectories(root: str, kept_only: bool) -> Iterator[Case]:
    from msagent.generation.records import read_trajectories

    seen: set[str] = set()
    for record in read_trajectories(root, kept_only=kept_only):
        if record.case_id in seen:  # several samples of one case: one RL prompt
            continue
        seen.add(record.case_id)
        yield Case(id=record.case_id, image=record.image(), target=record.trajectory.target,
                   ground_truth=record.ground_truth(), meta={k: record.row.get(k, "") for k in
                                                             ("dataset", "modality", "split")})


def _trajectories(root: str, kept_only: bool):
    from msagent.generation.records import read_trajectories

    for record in read_trajectories(root, kept_only=kept_only):
        yield record.image(), record.trajectory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m msagent_training.data",
                                     description="Build verl RL / multi-turn SFT parquet files.")
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("rl", "sft"):
        p = sub.add_parser(kind, help=f"{kind.upper()} parquet")
        if kind == "rl":
            p.add_argument("--dataset", help="dataset path (msagent.datasets.open_dataset)")
            p.add_argument("--split", help="dataset split (e.g. train)")
        p.add_argument("--trajectories", help="trajectory set folder (`msagent generate` output)")
        p.add_argument("--all", action="store_true",
                       help="include trajectories the generator dropped (default: kept only)")
        p.add_argument("--out", required=True, help="output .parquet path")
        p.add_argument("--limit", type=int, help="at most this many rows")
        p.add_argument("--data-source", default="msagent", help="data_source column value")
        p.add_argument("--policy-image-size", type=int, default=512,
                       help="side of the policy images, a multiple of 32 (default 512)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from .parquet import write_rl_parquet, write_sft_parquet

    options = dict(policy_image_size=args.policy_image_size, data_source=args.data_source)
    if args.kind == "rl":
        if bool(args.dataset) == bool(args.trajectories):
            print("rl: give exactly one of --dataset or --trajectories", file=sys.stderr)
            return 2
        if args.dataset:
            from msagent.datasets import open_dataset

            cases = iter(open_dataset(args.dataset, split=args.split))
        else:
            cases = _cases_from_trajectories(args.trajectories, kept_only=not args.all)
        count = write_rl_parquet(itertools.islice(cases, args.limit), args.out, **options)
    else:
        if not args.trajectories:
            print("sft: --trajectories is required", file=sys.stderr)
            return 2
        items = _trajectories(args.trajectories, kept_only=not args.all)
        count = write_sft_parquet(itertools.islice(items, args.limit), args.out, **options)
    print(f"wrote {count} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
