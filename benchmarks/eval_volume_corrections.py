"""Do 3-D corrections help? The CVPR 2025 3-D protocol and the expert's review corrections on
MNI152 (nilearn, 2 mm, axial: brain, white matter, grey matter) and the synthetic CT phantom
(:func:`msagent.testing.make_ct_phantom`: liver, spleen, kidneys, aorta), with LiteMedSAM and
the click-responsive stand-in (:class:`msagent.testing.BandBackbone`), under each correction
rule named in ``--rules``, all in one run:

- ``today``: the rule before issue 28 (a correction's seed re-propagates to the midpoint with
  the next seed; reviews ranked by the lowest Dice, the expert choosing with the truth);
- ``local``: the rule of :mod:`msagent.volume.propagation` (a correction re-propagates only
  as far as it keeps changing the result near what it changed, docs/volumes.md) and the
  review ranking of :func:`msagent.volume.agent.rank_reviews` (expected wrong voxels).

Per target and rule: the CVPR 3-D DSC after each of the 6 steps (box, then 5 clicks),
DSC_AUC/NSD_AUC, the expert's 3-D Dice after 0, 3 and 10 reviews (and how many of those
reviews changed nothing; of the 10, how many lowered the 3-D Dice: each seeded episode's
``dice_after``), an oracle box on every slice (no propagation), encodes and decodes
(the backbone's calls). The embeddings of a volume are computed once and shared by every run
on it (the backbone's cache), so ``encodes`` counts the embeddings a run asked for.

    python benchmarks/eval_volume_corrections.py [--quick] [--backbones litemedsam,band]
        [--volumes mni152,phantom] [--phantom-shape 100,512,512] [--rules today,local]

``--quick``: the stand-in only, MNI152 and a 48×256×256 phantom (under 3 min on 2 CPU cores).
Writes ``results.json`` and ``results.md`` to ``--out`` (bench-output/eval-volume-corrections).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import attrs
import numpy as np

import msagent
from msagent import metrics
from msagent.agent.refine import mask_box
from msagent.evaluation.volume_protocols import run_cvpr_3d, run_volume_agent
from msagent.testing import CT_PHANTOM_ORGANS, CT_PHANTOM_SPACING, BandBackbone, make_ct_phantom
from msagent.types import Prompts
from msagent.volume.agent import VolumeAgent
from msagent.volume.stack import build_stack

sys.path.insert(0, str(Path(__file__).parent))
from bench_volume import mni152  # noqa: E402

MNI_TARGETS = ("brain", "white matter", "gray matter")
PHANTOM_TARGETS = ("liver", "spleen", "left kidney", "right kidney", "aorta")
REVIEWS = (0, 3, 10)


class Calls:
    """Counts the embeddings a run asks for (``encode`` and the run's store's
    ``encode_uncached``) and the decoded prompt sets; the store's encodes go through the
    backbone's cache, so every run on a volume shares one encode per slice."""

    def __init__(self, segmenter) -> None:
        self.encodes = self.decodes = 0
        encode, decode = segmenter.encode, segmenter.decode_prompts

        def front(image):
            self.encodes += 1
            return encode(image)

        def decode_prompts(embedding, prompt_sets, prev_logits, *, multimask):
            self.decodes += len(prompt_sets)
            return decode(embedding, prompt_sets, prev_logits, multimask=multimask)

        segmenter.encode = segmenter.encode_uncached = front
        segmenter.decode_prompts = decode_prompts

    def take(self) -> tuple[int, int]:
        out = (self.encodes, self.decodes)
        self.encodes = self.decodes = 0
        return out


def phantom(shape: tuple[int, int, int]):
    volume, labels = make_ct_phantom(shape)
    scale = [b * f / n for b, f, n in zip(CT_PHANTOM_SPACING, (100, 512, 512), shape)]
    stack = build_stack(volume, spacing=scale, window="abdomen").slices
    names = {name: value for value, (name, _) in CT_PHANTOM_ORGANS.items()}
    return stack, {t: labels == names[t] for t in PHANTOM_TARGETS}


def volumes(which, shape):
    if "mni152" in which:
        stack, _ = mni152("brain")
        yield "mni152", stack, {t: mni152(t)[1] for t in MNI_TARGETS}
    if "phantom" in which:
        stack, gts = phantom(shape)
        yield "phantom " + "×".join(map(str, shape)), stack, gts


def backbone(name: str):
    if name == "band":
        return BandBackbone(cache_size=512)
    return msagent.load_backbone(name, device="cpu", cache_size=512)


def rule_options(rule: str) -> tuple[dict, dict]:
    """(run_cvpr_3d options, VolumeAgent options) of a rule."""
    if rule == "today":
        if "correction" not in {f.name for f in attrs.fields(VolumeAgent)}:
            return {}, {}  # the code before the rule
        return {"correction": "nearest"}, {"correction": "nearest", "review_rank": "dice"}
    if rule == "local":
        return {"correction": "local"}, {"correction": "local", "review_rank": "expected"}
    raise SystemExit(f"unknown rule {rule!r}")


def oracle_box(seg, stack, gt) -> float:
    mask = np.zeros(gt.shape, bool)
    for index in np.flatnonzero(gt.reshape(len(gt), -1).any(1)):
        mask[index] = seg.decode(seg.encode(stack.image(index)), Prompts(box=mask_box(gt[index]))).mask
    return float(metrics.dice(mask, gt))


def run_target(seg, calls: Calls, stack, gt, target: str, rules) -> dict:
    out: dict = {"oracle_box": oracle_box(seg, stack, gt)}
    calls.take()
    for rule in rules:
        cvpr_options, agent_options = rule_options(rule)
        row: dict = {}
        start = time.perf_counter()
        outcome = run_cvpr_3d(seg, stack, gt, propagation="generic", **cvpr_options)
        row["cvpr_s"] = time.perf_counter() - start
        row["cvpr_encodes"], row["cvpr_decodes"] = calls.take()
        row["dsc_by_step"] = [round(float(v), 4) for v in outcome.curves["dice"]]
        row["nsd_by_step"] = [round(float(v), 4) for v in outcome.curves["nsd"]]
        row["dsc_auc"], row["nsd_auc"] = (float(outcome.values["dsc_auc"]),
                                          float(outcome.values["nsd_auc"]))
        for reviews in REVIEWS:
            agent = VolumeAgent(msagent.load_policy("expert"), seg, review_slices=reviews,
                                propagation="generic", **agent_options)
            start = time.perf_counter()
            result = run_volume_agent(agent, stack, target, gt)
            row[f"review{reviews}_s"] = time.perf_counter() - start
            row[f"review{reviews}"] = float(result.values["dice"])
            row[f"review{reviews}_encodes"], row[f"review{reviews}_decodes"] = calls.take()
            episodes = [e for e in result.trajectory.episodes if e.role == "review"]
            row[f"review{reviews}_unchanged"] = sum(1 for e in episodes if not e.seeded)
            row[f"review{reviews}_slices"] = [e.slice for e in episodes]
            # the 3-D Dice after the key episode and after each review that changed the volume
            curve = [e.dice_after for e in result.trajectory.episodes if e.seeded]
            row[f"review{reviews}_curve"] = [round(float(v), 4) for v in curve]
            row[f"review{reviews}_worse"] = sum(b < a - 1e-4 for a, b in zip(curve, curve[1:]))
        out[rule] = row
        print(f"  {target:12s} {rule:6s} cvpr {' '.join(f'{v:.3f}' for v in row['dsc_by_step'])} "
              f"AUC {row['dsc_auc']:.2f}/{row['nsd_auc']:.2f}  reviews 0/3/10 "
              f"{row['review0']:.3f}/{row['review3']:.3f}/{row['review10']:.3f} "
              f"(oracle box {out['oracle_box']:.3f}; reviews lowering it: "
              f"{row['review10_worse']})", flush=True)
    return out


def markdown(result: dict) -> str:
    rules = result["rules"]
    lines = ["# 3-D corrections: CVPR 3-D protocol and expert reviews, per rule", "",
             "| volume | backbone | target | rule | DSC box → clicks 1..5 | DSC_AUC | NSD_AUC | "
             "Dice 0 / 3 / 10 reviews (unchanged) | of 10 reviews: lowered the Dice / changed it | "
             "oracle box | encodes | decodes (cvpr; 10 reviews) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for volume, backbones in result["volumes"].items():
        for name, targets in backbones.items():
            for target, t in targets.items():
                for rule in rules:
                    r = t[rule]
                    steps = " ".join(f"{v:.3f}" for v in r["dsc_by_step"])
                    lines.append(
                        f"| {volume} | {name} | {target} | {rule} | {steps} | {r['dsc_auc']:.3f} | "
                        f"{r['nsd_auc']:.3f} | {r['review0']:.3f} / {r['review3']:.3f} / "
                        f"{r['review10']:.3f} ({r['review3_unchanged']}, {r['review10_unchanged']}) | "
                        f"{r['review10_worse']} / {len(r['review10_curve']) - 1} | "
                        f"{t['oracle_box']:.3f} | {r['cvpr_encodes']}; {r['review10_encodes']} | "
                        f"{r['cvpr_decodes']}; {r['review10_decodes']} |")
    lines += ["", "Goals per backbone and rule (every target): clicks ≥ box, 10 reviews ≥ 3, "
              "3 reviews ≥ oracle box, no review lowers the Dice; mean DSC_AUC:", ""]
    for volume, backbones in result["volumes"].items():
        for name, targets in backbones.items():
            for rule in rules:
                rows = [t[rule] for t in targets.values()]
                clicks = sum(r["dsc_by_step"][-1] >= r["dsc_by_step"][0] for r in rows)
                ten = sum(r["review10"] >= r["review3"] for r in rows)
                oracle = sum(t[rule]["review3"] >= t["oracle_box"] for t in targets.values())
                harmless = sum(r["review10_worse"] == 0 for r in rows)
                auc = np.mean([r["dsc_auc"] for r in rows])
                lines.append(f"- {volume}, {name}, {rule}: clicks ≥ box {clicks}/{len(rows)}, "
                             f"10 ≥ 3 reviews {ten}/{len(rows)}, 3 reviews ≥ oracle box "
                             f"{oracle}/{len(rows)}, no review lowers the Dice "
                             f"{harmless}/{len(rows)}, mean DSC_AUC {auc:.3f}")
    return "\n".join(lines)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backbones", default="litemedsam,band")
    parser.add_argument("--volumes", default="mni152,phantom")
    parser.add_argument("--targets", default="", help="comma-separated subset of the targets")
    parser.add_argument("--phantom-shape", default="100,512,512")
    parser.add_argument("--rules", default="today,local")
    parser.add_argument("--out", type=Path, default=Path("bench-output/eval-volume-corrections"))
    args = parser.parse_args()
    names = args.backbones.split(",")
    shape = tuple(int(v) for v in args.phantom_shape.split(","))
    if args.quick:
        names, shape = ["band"], (48, 256, 256)
    rules = args.rules.split(",")
    wanted = {t.strip() for t in args.targets.split(",") if t.strip()}
    start = time.perf_counter()
    result: dict = {"rules": rules, "volumes": {}}
    for volume, stack, gts in volumes(args.volumes.split(","), shape):
        result["volumes"][volume] = {}
        for name in names:
            print(f"{volume} / {name}", flush=True)
            seg = backbone(name)
            calls = Calls(seg)
            result["volumes"][volume][name] = {
                target: run_target(seg, calls, stack, gt, target, rules)
                for target, gt in gts.items() if not wanted or target in wanted}
            seg.clear_cache()
    result["total_s"] = time.perf_counter() - start
    text = markdown(result) + f"\n\nTotal {result['total_s']:.0f} s (2 shared CPU cores).\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    (args.out / "results.md").write_text(text)
    return result


if __name__ == "__main__":
    main()
