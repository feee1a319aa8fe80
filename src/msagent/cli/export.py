"""``msagent export SOURCE --format FORMAT --out DIR``: SFT/RL training files."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("verl-sft", "llamafactory", "verl-rl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, nargs="?",
                        help="trajectory set from `msagent generate` (or use --dataset for verl-rl)")
    parser.add_argument("--format", choices=FORMATS, default="verl-sft",
                        help="verl-sft (MultiTurnSFTDataset parquet), llamafactory (ShareGPT JSON "
                             "+ dataset_info.json), verl-rl (RLHFDataset prompt parquet)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (rerun to resume)")
    parser.add_argument("--dataset", action="append", default=[], metavar="PATH",
                        help="verl-rl straight from dataset path(s) or 'mni152' instead of a trajectory set")
    parser.add_argument("--split", help="dataset split for --dataset")
    parser.add_argument("--image-size", type=int, default=512,
                        help="observation image side, a multiple of 32 (default 512, the checkpoint's)")
    parser.add_argument("--tool-calls", choices=("inline", "structured"), default="inline",
                        help="verl-sft: calls inside the assistant text (checkpoint format) or as "
                             "tool_calls with JSON-string arguments")
    parser.add_argument("--include-dropped", action="store_true",
                        help="SFT formats: also trajectories the generator's filters dropped")
    parser.add_argument("--name", default="msagent_sft", help="LLaMA-Factory dataset name")
    parser.add_argument("--agent-name", help="verl-rl: agent_name column (the agent loop to use)")
    parser.add_argument("--layout", choices=("msagent", "upstream"), default="msagent",
                        help="verl-rl: msagent's row layout (default) or upstream MedSAM-Agent's, "
                             "which its MedSAMDataset, RL tools and reward read (original image, "
                             "PNG ground truth, extra_info.target_description)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from msagent.errors import InvalidInput
    from msagent.export.conversation import check_size
    from msagent.export.job import export_rl_prompts, export_trajectories

    check_size(args.image_size)
    if args.dataset:
        if args.format != "verl-rl" or args.source is not None:
            raise InvalidInput("--dataset exports verl-rl prompts only, without a trajectory set")
        from msagent.datasets import concat, open_dataset

        dataset = concat(open_dataset(p, split=args.split) for p in args.dataset)
        summary = export_rl_prompts(dataset, args.out, image_size=args.image_size,
                                    agent_name=args.agent_name, layout=args.layout,
                                    progress=not args.quiet)
    elif args.source is None:
        raise InvalidInput("give a trajectory set (from `msagent generate`) or --dataset PATH")
    else:
        summary = export_trajectories(
            args.source, args.out, args.format, image_size=args.image_size,
            tool_format=args.tool_calls, include_dropped=args.include_dropped, name=args.name,
            agent_name=args.agent_name, layout=args.layout, progress=not args.quiet)
    print(f"{summary.out}: {summary.rows} {summary.format} rows in {summary.parts} part(s) "
          f"({summary.parts_written} written now)")
    return 0
