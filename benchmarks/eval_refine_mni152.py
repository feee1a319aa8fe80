"""The refine protocol on the MNI152 slices (brain, white and grey matter; litemedsam): for each
seeded degradation of the ground truth, Dice/NSD before (the initial mask) and after an episode
of the expert that starts from it, and the oracle-box baseline (one tight box, on top of the
initial mask, and without it). ``python benchmarks/eval_refine_mni152.py [--out DIR]``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from msagent.agent.refine import DEGRADATIONS
from msagent.datasets import make_mni152_dataset, open_dataset
from msagent.evaluation import EvalConfig, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--strength", type=float, default=0.15)
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="refine-"))
    data = open_dataset(make_mni152_dataset(root / "mni152"))
    rows = []
    for kind in DEGRADATIONS:
        config = EvalConfig(refine_from=f"degrade:{kind}", refine_strength=args.strength)
        summary = evaluate(data.refs, root / kind, backbones=["litemedsam"],
                           policies=["expert", "oracle-box"], config=config, report=False,
                           progress=False)
        for method in ("expert", "oracle-box"):
            s = summary[f"litemedsam/{method}"]
            rows.append((kind, method, s["dice_before"], s["dice"], s["nsd_before"], s["nsd"],
                         s["refine_not_worse"], s["refine_cases"], s["turns_mean"]))
    plain = evaluate(data.refs, root / "plain", backbones=["litemedsam"], policies=["oracle-box"],
                     report=False, progress=False)["litemedsam/oracle-box"]
    print("| degradation | method | Dice before | Dice after | NSD before | NSD after | not worse | turns |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, method, db, da, nb, na, ok, n, turns in rows:
        print(f"| {kind} | {method} | {db:.3f} | {da:.3f} | {nb:.3f} | {na:.3f} | {ok}/{n} | {turns:.2f} |")
    expert = [r for r in rows if r[1] == "expert"]
    gain = sum(r[3] - r[2] for r in expert) / len(expert)
    print(f"\nexpert: mean Dice gain {gain:+.3f} over {sum(r[7] for r in expert)} cases; "
          f"oracle-box without an initial mask: Dice {plain['dice']:.3f}, NSD {plain['nsd']:.3f}")


if __name__ == "__main__":
    main()
