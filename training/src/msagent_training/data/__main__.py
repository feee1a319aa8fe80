"""``python -m msagent_training.data rl``: one RL prompt parquet file (single file, ``--limit``).

    # RL prompts from a dataset (any layout msagent.datasets.open_dataset reads)
    python -m msagent_training.data rl --dataset DATA_DIR --split train --out rl_train.parquet
    # RL prompts from the cases of a trajectory set (`msagent generate` output)
    python -m msagent_training.data rl --trajectories TRAJ_DIR --out rl_train.parquet

The SFT data has one route, msagent's own: ``msagent export TRAJ --format verl-sft --out DIR``
(the same rows: :func:`msagent.export.verl.sft_row`).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Iterator

from msagent.types import Case


def _cases_from_trajectories(root: str, kept_only: bool) -> Iterator[Case]:
    from msagent.generation import read_trajectories

    seen: set[str] = set()
    for record in read_trajectories(root, kept_only=kept_only):
        if record.case_id in seen:  # several samples of one case: one RL prompt
            continue
        seen.add(record.case_id)
        yield Case(id=record.case_id, image=record.image(), target=record.trajectory.target,
                   ground_truth=record.ground_truth(), meta={k: record.row.get(k, "") for k in
                                                             ("dataset", "modality", "split")})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m msagent_training.data",
        description="Build a verl RL prompt parquet file (SFT data: msagent export --format verl-sft).")
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("rl", help="RL prompt parquet")
    p.add_argument("--dataset", help="dataset path (msagent.datasets.open_dataset)")
    p.add_argument("--split", help="dataset split (e.g. train)")
    p.add_argument("--trajectories", help="trajectory set folder (`msagent generate` output)")
    p.add_argument("--all", action="store_true",
                   help="include cases whose trajectories the generator dropped (default: kept only)")
    p.add_argument("--out", required=True, help="output .parquet path")
    p.add_argument("--limit", type=int, help="at most this many rows")
    p.add_argument("--data-source", default="msagent", help="data_source column value")
    p.add_argument("--policy-image-size", type=int, default=512,
                   help="side of the policy images, a multiple of 32 (default 512)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from .parquet import write_rl_parquet

    options = dict(policy_image_size=args.policy_image_size, data_source=args.data_source)
    if bool(args.dataset) == bool(args.trajectories):
        print("rl: give exactly one of --dataset or --trajectories", file=sys.stderr)
        return 2
    if args.dataset:
        from msagent.datasets import open_dataset

        cases = iter(open_dataset(args.dataset, split=args.split))
    else:
        cases = _cases_from_trajectories(args.trajectories, kept_only=not args.all)
    count = write_rl_parquet(itertools.islice(cases, args.limit), args.out, **options)
    print(f"wrote {count} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
