"""``msagent eval DATA... --backbone B --policy P --protocol noc --out DIR``.

DATA is a dataset path understood by :mod:`msagent.datasets` (BiomedParse layout, image/mask
folders with a CSV, NIfTI label maps) or ``mni152`` (axial MNI152 slices with brain, grey and
white matter masks, built with nilearn). Reruns into the same ``--out`` resume.

``--volumes`` reads NIfTI datasets (and ``mni152``) as whole-volume cases, one per (volume,
label), run under the 3-D protocols: ``--policy`` through the 3-D agent (key slice,
propagation, ``--review-slices``), ``--protocol cvpr`` in its 3-D form; ``noc`` has no 3-D
form and its volume runs are recorded as skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="dataset path(s), or 'mni152'")
    parser.add_argument("--out", type=Path, required=True, help="output directory (resumable)")
    parser.add_argument("--backbone", action="append", default=[], required=True,
                        help="registered backbone (repeatable), e.g. litemedsam")
    parser.add_argument("--policy", action="append", default=[],
                        help="agent policy (repeatable): expert, oracle-box, qwen, gpt, ...")
    parser.add_argument("--protocol", action="append", default=[], choices=["noc", "cvpr"],
                        help="click protocol (repeatable): noc (RITM NoC@85/90, ≤20 clicks), "
                             "cvpr (CVPR 2025: box + 5 clicks, DSC/NSD AUC)")
    parser.add_argument("--max-turns", type=int, default=5, help="agent turns (default 5)")
    parser.add_argument("--prompt-mode", choices=["accumulate", "latest"], default="accumulate")
    parser.add_argument("--multimask", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--max-clicks", type=int, default=20, help="NoC protocol click limit")
    parser.add_argument("--refine-from", metavar="SPEC", help="the refine protocol: every --policy "
                        "episode starts from an initial mask, from a folder of predictions named "
                        "by case id (<id>.png/.npy/.tif), degrade:KINDS (seeded degradations "
                        "of the ground truth: erode, dilate, shift, drop, add; one per case), or "
                        "proposal (the backbone's own mask for the case's target: a backbone "
                        "that proposes from text, e.g. sam3; a folder named proposal: ./proposal)")
    parser.add_argument("--refine-strength", type=float, default=0.15,
                        help="degradation size as a fraction of the target's diameter (0.15)")
    parser.add_argument("--refine-seed", type=int, default=0)
    parser.add_argument("--volumes", action="store_true",
                        help="whole-volume cases of NIfTI datasets (one per volume and label, "
                             "3-D scores) instead of their slices; mni152: the MNI152 volume")
    parser.add_argument("--review-slices", type=int, default=3, metavar="N",
                        help="volumes: review episodes per volume after propagation (default 3)")
    parser.add_argument("--propagation", choices=["auto", "native", "generic"], default="auto",
                        help="volumes: the backbone's own 3-D memory (auto: where it has one) "
                             "or slice-by-slice generic propagation")
    parser.add_argument("--nsd-tolerance", type=float, default=2.0,
                        help="NSD tolerance in mm (pixels when a case has no spacing)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N cases of the data")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="concurrent episodes (asyncio; for API policies)")
    parser.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                        help="run on a Ray cluster ('auto' or ray://host:10001)")
    parser.add_argument("--no-retry-errors", action="store_true",
                        help="on resume, keep failed cases failed instead of running them again")
    parser.add_argument("--no-report", action="store_true", help="skip plots and report.html")
    parser.add_argument("--no-masks", action="store_true", help="do not save predicted masks")
    parser.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--policy-option", action="append", default=[], metavar="KEY=VALUE")


def open_data(specs: list[str], out: Path, volumes: bool = False):
    """One dataset (or refs list) from the DATA arguments (whole-volume cases with ``volumes``)."""
    from msagent.errors import InvalidInput

    try:
        from msagent import datasets
    except ImportError:
        raise InvalidInput("reading datasets needs msagent.datasets (this install lacks it)") from None
    parts = []
    for spec in specs:
        built = out / f"data-{spec.lower()}{'-volumes' if volumes else ''}"
        path = datasets.resolve_dataset(spec, built, volumes=volumes)
        parts.append(datasets.open_dataset(path, volumes=volumes))
    return parts[0] if len(parts) == 1 else datasets.concat(parts)


def run(args: argparse.Namespace) -> int:
    from msagent.errors import InvalidInput
    from msagent.evaluation import EvalConfig, evaluate, markdown_table
    from msagent.options import parse_options

    if not args.policy and not args.protocol:
        raise InvalidInput("nothing to evaluate: give --policy (e.g. expert, oracle-box) and/or "
                           "--protocol noc/cvpr")
    if args.review_slices < 0:
        raise InvalidInput(f"--review-slices must be 0 or more, got {args.review_slices}")
    config = EvalConfig(max_turns=args.max_turns, prompt_mode=args.prompt_mode,
                        multimask={"auto": None, "on": True, "off": False}[args.multimask],
                        max_clicks=args.max_clicks, nsd_tolerance=args.nsd_tolerance,
                        refine_from=args.refine_from, refine_strength=args.refine_strength,
                        refine_seed=args.refine_seed, review_slices=args.review_slices,
                        propagation=args.propagation)
    if args.refine_from and not args.policy:
        raise InvalidInput("--refine-from refines agent episodes: give --policy (e.g. expert)")
    if args.refine_from and args.volumes:
        raise InvalidInput("--refine-from has no 3-D form: evaluate volumes without it, or "
                           "refine their slices (without --volumes)")
    if config.refines_proposals:  # before any data is read: names, without loading them
        from msagent.agent.proposal import check_can_propose

        for backbone in args.backbone:
            check_can_propose(backbone)
    data = open_data(args.data, args.out, volumes=args.volumes)
    cases = getattr(data, "refs", data)  # lazy refs: a failing file becomes an error record
    summary = evaluate(
        cases, args.out, backbones=args.backbone, policies=args.policy, protocols=args.protocol,
        config=config, backbone_options=parse_options(args.backbone_option),
        policy_options=parse_options(args.policy_option), concurrency=args.concurrency,
        limit=args.limit, retry_errors=not args.no_retry_errors, report=not args.no_report,
        ray_address=args.ray, save_masks=not args.no_masks)
    print(markdown_table(summary))
    print("\n" + written_files(args.out, report=not args.no_report), file=sys.stdout)
    errors = sum(s["n_errors"] for s in summary.values())
    return 0 if errors == 0 else 1


def written_files(out: Path, report: bool = True) -> str:
    """The outputs that exist (never one that was skipped), and why a wanted one is missing."""
    names = [("results", "results.csv"), ("parquet", "results.parquet"),
             ("summary", "summary.json")] + ([("report", "report.html")] if report else [])
    lines = [f"{label}: {out / name}" for label, name in names if (out / name).exists()]
    if not (out / "results.parquet").exists():
        lines.append("no results.parquet: pyarrow is not installed (pip install '.[data]' in a "
                     "msagent clone)")
    if report and not (out / "report.html").exists():
        lines.append("no report.html: matplotlib is not installed (pip install '.[plot]' in a "
                     "msagent clone)")
    return "\n".join(lines)
