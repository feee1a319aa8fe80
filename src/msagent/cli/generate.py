"""``msagent generate DATASET... --out DIR``: expert trajectories as a sharded Parquet set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="+", metavar="DATASET",
                        help="dataset paths: BiomedParse folder, image/mask folder with targets.csv, "
                             "MSD/nnU-Net NIfTI folder, or 'mni152' (MNI152 slices, built offline)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (rerun to resume)")
    parser.add_argument("--backbone", default="litemedsam", help="registered backbone (default litemedsam)")
    parser.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                        help="backbone option (repeatable), e.g. device=cpu")
    parser.add_argument("--generator", default="hybrid", help="registered generator (default hybrid)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="generator option (repeatable), e.g. box_ratio=0.7 tau=0.02")
    parser.add_argument("--seed", type=int, help="generator seed (same as --option seed=N)")
    parser.add_argument("--split", help="dataset split, e.g. train (BiomedParse; default all)")
    parser.add_argument("--limit", type=int, help="only the first N cases")
    parser.add_argument("--shard-size", type=int, default=16, help="cases per shard (default 16)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per backbone (default 1); part of the job's identity")
    parser.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run on Ray: a local cluster without ADDRESS, else join ADDRESS "
                             "(write --ray=ADDRESS, or --ray after the datasets)")
    parser.add_argument("--workers", type=int, help="Ray workers (default: CPUs // threads)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    volumes = parser.add_argument_group("whole volumes (--volumes): the expert's 3-D runs")
    volumes.add_argument("--volumes", action="store_true",
                         help="NIfTI datasets as whole volumes: 3-D runs (key slice, propagation, "
                         "review) whose key and review episodes become the trajectories")
    volumes.add_argument("--policy", default="expert", help="the policy of the 3-D runs (default expert)")
    volumes.add_argument("--review-slices", type=int, default=3, help="review episodes per volume")
    volumes.add_argument("--propagation", choices=["auto", "native", "generic"], default="auto")


def run(args: argparse.Namespace) -> int:
    from msagent.generation import generate
    from msagent.options import parse_options

    if args.volumes:
        return run_volumes(args)
    options = parse_options(args.option)
    if args.seed is not None:
        options["seed"] = args.seed
    summary = generate(
        [_dataset_path(spec, args.out) for spec in args.datasets], args.out, backbone=args.backbone,
        backbone_options=parse_options(args.backbone_option), generator=args.generator,
        generator_options=options, split=args.split, limit=args.limit,
        shard_size=args.shard_size, threads=args.threads, overlays=not args.no_overlays,
        ray=args.ray, workers=args.workers, progress=not args.quiet)
    print(f"{summary.out}: {summary.cases} cases in {summary.shards} shards "
          f"({summary.shards_written} written now); {summary.trajectories} trajectories, "
          f"{summary.kept} kept")
    return 0


def run_volumes(args: argparse.Namespace) -> int:
    """``--volumes``: :func:`msagent.generation.volumes.generate_volume_set`."""
    from msagent.datasets import open_dataset, resolve_dataset
    from msagent.errors import InvalidInput
    from msagent.generation.volumes import generate_volume_set
    from msagent.options import parse_options

    if args.ray is not None or args.option or args.generator != "hybrid" or args.split:
        raise InvalidInput("--volumes runs 3-D runs locally: --ray, --option, --generator and "
                           "--split apply to 2-D generation")
    cases: list[Any] = []
    for spec in args.datasets:
        path = resolve_dataset(spec, args.out.parent / f"{args.out.name}-data-{spec.lower()}-volumes",
                               volumes=True)
        cases.extend(open_dataset(path, volumes=True).refs)
    out, total, written = generate_volume_set(
        cases, args.out, backbone=args.backbone, policy=args.policy,
        backbone_options=parse_options(args.backbone_option), limit=args.limit,
        overlays=not args.no_overlays, progress=not args.quiet,
        review_slices=args.review_slices, propagation=args.propagation)
    print(f"{out}: {total} volume(s) ({written} run now); export with `msagent export {out} "
          "--format verl-sft --out DIR`")
    return 0


def _dataset_path(spec: str, out: Path) -> str:
    """A dataset path; ``mni152`` builds the small MNI152 folder beside the output."""
    from msagent.datasets import resolve_dataset

    return str(resolve_dataset(spec, out.parent / f"{out.name}-data-{spec.lower()}"))
