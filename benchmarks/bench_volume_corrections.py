"""3-D corrections, quick (``tox -e bench``; issue 28): the CVPR 2025 3-D protocol and the
expert's review corrections under the correction rule before issue 28 (``today``) and the
local rule (``local``), in one run, on MNI152 (2 mm) and a 48×256×256 CT phantom with the
click-responsive stand-in (:class:`msagent.testing.BandBackbone`); about a minute on 2 CPU
cores. Goals, per target under ``local``: the DSC after the 5 clicks ≥ after the box; 10
reviews ≥ 3 reviews; none of the 10 reviews lowers the 3-D Dice; and the mean DSC_AUC ≥
``today``'s. Each goal is printed OK or FAIL
(never a non-zero exit: run_all goes on). The full measurement, LiteMedSAM included, is
``benchmarks/eval_volume_corrections.py`` (docs/volumes.md, "Corrections").

    python benchmarks/bench_volume_corrections.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import eval_volume_corrections as full  # noqa: E402


def goals(result: dict) -> list[str]:
    lines = []
    for volume, backbones in result["volumes"].items():
        for name, targets in backbones.items():
            rows = {t: v["local"] for t, v in targets.items()}
            clicks = [t for t, r in rows.items() if r["dsc_by_step"][-1] < r["dsc_by_step"][0]]
            reviews = [t for t, r in rows.items() if r["review10"] < r["review3"]]
            harmful = [t for t, r in rows.items() if r["review10_worse"]]
            before = np.mean([v["today"]["dsc_auc"] for v in targets.values()])
            after = np.mean([r["dsc_auc"] for r in rows.values()])
            for goal, failed in (("clicks ≥ box on every target", clicks),
                                 ("10 reviews ≥ 3 on every target", reviews),
                                 ("no review lowers the 3-D Dice", harmful)):
                lines.append(f"{'OK' if not failed else 'FAIL'}  {volume}, {name}: {goal}"
                             + (f" (not: {', '.join(failed)})" if failed else ""))
            lines.append(f"{'OK' if after >= before else 'FAIL'}  {volume}, {name}: mean DSC_AUC "
                         f"{before:.3f} → {after:.3f} ({after / before:.3f}×)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-output/bench_volume_corrections"))
    args = parser.parse_args()
    sys.argv = [sys.argv[0], "--quick", "--rules", "today,local", "--out", str(args.out)]
    result = full.main()
    print("\n".join(goals(result)))


if __name__ == "__main__":
    main()
