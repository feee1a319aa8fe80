"""``msagent stats SOURCE``: statistics of a trajectory set (JSON summary and PNG plot)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="trajectory set from `msagent generate`")
    parser.add_argument("--out", type=Path, help="folder for stats.json and stats.png (default SOURCE)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")


def run(args: argparse.Namespace) -> int:
    from msagent.generation.stats import stats_for

    out = args.out or args.source
    stats = stats_for(args.source, out, plot=not args.no_plot)
    acceptance = stats["acceptance"]
    final = stats["final_iou"]["mean"]
    print(f"{stats['trajectories']} trajectories, {stats['kept']} kept; mean turns "
          f"{_fmt(stats['mean_turns'])}; final IoU {_fmt(final)}; acceptance "
          f"{_fmt(acceptance['candidate_rate'])} of candidates")
    print(f"wrote {out / 'stats.json'}" + ("" if args.no_plot else f" and {out / 'stats.png'}"))
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
