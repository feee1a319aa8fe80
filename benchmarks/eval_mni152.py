"""The README's evaluation example: litemedsam × {expert, oracle-box} + NoC + CVPR protocols on
axial MNI152 T1 slices (:func:`msagent.datasets.make_mni152_dataset`: nilearn ships the
template and its brain, grey- and white-matter masks), on CPU. The same run as

    msagent eval mni152 --backbone litemedsam --policy expert --policy oracle-box \
        --protocol noc --protocol cvpr --out bench-output/eval-mni152

plus the README figure:

    python benchmarks/eval_mni152.py --out bench-output/eval-mni152 --figure docs/eval-example.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from msagent.evaluation import evaluate, markdown_table


def figure(summary: dict, path: Path) -> None:
    """Three panels: Dice per method, NoC IoU-vs-clicks, CVPR DSC/NSD per interaction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    order = {"oracle-box": 0, "expert": 1, "cvpr": 2, "noc": 3}
    names = sorted(summary, key=lambda n: order.get(n.split("/")[1], 9))
    axes[0].bar([n.split("/")[1] for n in names], [summary[n]["dice"] for n in names],
                color="tab:blue")
    for i, n in enumerate(names):
        axes[0].text(i, summary[n]["dice"] + 0.01, f"{summary[n]['dice']:.3f}", ha="center", fontsize=8)
    axes[0].set(title="Mean Dice (final mask)", ylim=(0, 1.05))
    noc = next((s for s in summary.values() if s.get("iou_by_click")), None)
    if noc:
        clicks = np.arange(1, len(noc["iou_by_click"]) + 1)
        axes[1].plot(clicks, noc["iou_by_click"], marker="o", markersize=3)
        for y in (0.85, 0.9):
            axes[1].axhline(y, color="gray", linestyle=":")
        axes[1].set_xticks([1, 5, 10, 15, 20])
        axes[1].set(title=f"NoC protocol: NoC@85 {noc['noc85']:.1f}, NoC@90 {noc['noc90']:.1f}",
                    xlabel="clicks", ylabel="mean IoU", ylim=(0, 1.02))
    cvpr = next((s for s in summary.values() if s.get("dsc_by_step")), None)
    if cvpr:
        steps = np.arange(len(cvpr["dsc_by_step"]))
        axes[2].plot(steps, cvpr["dsc_by_step"], marker="o", label="DSC")
        axes[2].plot(steps, cvpr["nsd_by_step"], marker="s", linestyle="--", label="NSD")
        axes[2].set_xticks(steps, ["box"] + [f"+{i}" for i in steps[1:]])
        axes[2].set(title=f"CVPR 2025: DSC AUC {cvpr['dsc_auc']:.2f}, NSD AUC {cvpr['nsd_auc']:.2f}",
                    xlabel="interaction", ylim=(0, 1.02))
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("litemedsam on 9 MNI152 T1 slices (brain, grey and white matter; CPU)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-output/eval-mni152"))
    parser.add_argument("--figure", type=Path, help="also write the README figure here")
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    from msagent import datasets

    cases = datasets.open_dataset(datasets.make_mni152_dataset(args.out / "data-mni152")).refs
    start = time.perf_counter()
    summary = evaluate(cases, args.out, backbones=["litemedsam"], policies=["expert", "oracle-box"],
                       protocols=["noc", "cvpr"], backbone_options={"device": "cpu"},
                       concurrency=args.concurrency)
    print(markdown_table(summary))
    print(f"\n{len(cases)} cases in {time.perf_counter() - start:.0f} s; report: {args.out / 'report.html'}")
    if args.figure:
        figure(summary, args.figure)


if __name__ == "__main__":
    main()
