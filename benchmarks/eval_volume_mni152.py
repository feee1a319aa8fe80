"""3-D runs on the MNI152 T1 template (nilearn, 2 mm, axial; 95 slices of 117×99) with
litemedsam and the expert, for brain, white matter and grey matter (the masks of
:func:`msagent.datasets.make_mni152_dataset`), scored in 3-D (Dice; NSD at ``--tolerance``
mm with the 2 mm spacing):

- ``oracle-box``: every slice with target decoded from its tight ground-truth box (one
  encode and one decode per slice; no propagation);
- ``propagation``: the expert's key-slice episode (largest target area) and generic
  propagation (``review_slices=0``);
- ``review-3``, ``review-10``: the same and 3 or 10 review corrections (worst Dice first);
- ``cvpr-3d``: the CVPR 2025 protocol on the volume (:func:`run_cvpr_3d`, generic
  propagation): DSC/NSD AUC over the 5 clicks and the final DSC/NSD.

Counted per run (the segmenter's ``encode``, ``encode_image`` and ``decode_prompts`` wrapped):
encodes (embeddings the run asked for), decodes (every decoder call: propagation, the expert's
turns and previewed candidates), wall time. The slices are the same image for every target,
so by default the encoder runs once per slice (timed, ``t_enc``) and runs take embeddings from
the cache: ``wall s`` is then the measured run time plus ``encodes × t_enc``, the time a run
on its own takes (each slice once per run: bench_volume.py checks it). ``--fresh`` runs each
method with a cold cache instead (several times slower on 2 CPU cores).

    python benchmarks/eval_volume_mni152.py [--targets brain] [--fresh] [--out DIR]

Writes ``results.json`` and ``results.md`` to ``--out`` (bench-output/eval-volume-mni152).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import msagent
from msagent import metrics
from msagent.agent.refine import mask_box
from msagent.evaluation.volume_protocols import run_cvpr_3d, run_volume_agent
from msagent.types import Prompts
from msagent.volume.agent import VolumeAgent

sys.path.insert(0, str(Path(__file__).parent))
from bench_volume import Counting, mni152  # noqa: E402

TARGETS = ("brain", "white matter", "gray matter")
METHODS = ("oracle-box", "propagation", "review-3", "review-10", "cvpr-3d")


class CountingFrontDoor(Counting):
    """Also counts ``encode`` (the cached front door): the embeddings a run asked for."""

    def __init__(self, segmenter) -> None:
        super().__init__(segmenter)
        self.asked = 0
        encode = segmenter.encode

        def front(image):
            self.asked += 1
            return encode(image)

        segmenter.encode = front

    def reset(self) -> None:
        super().reset()
        self.asked = 0


def oracle_boxes(seg, stack, gt) -> np.ndarray:
    mask = np.zeros(gt.shape, bool)
    for index in np.flatnonzero(gt.reshape(len(gt), -1).any(1)):
        embedding = seg.encode(stack.image(index))
        mask[index] = seg.decode(embedding, Prompts(box=mask_box(gt[index]))).mask
    return mask


def extent(mask: np.ndarray) -> tuple[int, int] | None:
    slices = np.flatnonzero(mask.reshape(len(mask), -1).any(1))
    return None if not len(slices) else (int(slices[0]), int(slices[-1]))


def run_method(method: str, seg, stack, gt, target: str, tolerance: float) -> dict:
    expert = msagent.load_policy("expert")
    extra: dict = {}
    if method == "oracle-box":
        mask = oracle_boxes(seg, stack, gt)
        values = metrics.volume_metrics(mask, gt, stack.spacing, tolerance)
    elif method == "cvpr-3d":
        outcome = run_cvpr_3d(seg, stack, gt, propagation="generic", tolerance=tolerance)
        mask, values = outcome.mask, dict(outcome.values)
        extra = {"dsc_by_step": outcome.curves["dice"], "nsd_by_step": outcome.curves["nsd"]}
    else:
        reviews = 0 if method == "propagation" else int(method.split("-")[1])
        agent = VolumeAgent(expert, seg, review_slices=reviews, propagation="generic")
        outcome = run_volume_agent(agent, stack, target, gt, tolerance=tolerance)
        mask, values = outcome.mask, dict(outcome.values)
        trajectory = outcome.trajectory
        extra = {"key_slice": trajectory.key_slice,
                 "reviews": [(e.slice, e.reason, e.decision or ("seeded" if e.seeded else "kept"))
                             for e in trajectory.episodes if e.role == "review"],
                 "propagation_decodes": trajectory.counts["propagation_decodes"]}
    values = {k: float(v) if isinstance(v, (int, float, np.floating)) else v
              for k, v in values.items()}
    gt_extent, pred_extent = extent(gt), extent(mask)
    pred_slices = set(np.flatnonzero(mask.reshape(len(mask), -1).any(1)).tolist())
    gt_slices = set(np.flatnonzero(gt.reshape(len(gt), -1).any(1)).tolist())
    return {**values, **extra, "extent": pred_extent, "gt_extent": gt_extent,
            "slices_without_target_predicted": len(pred_slices - gt_slices),
            "slices_with_target_missed": len(gt_slices - pred_slices)}


def evaluate(targets, fresh: bool, tolerance: float) -> dict:
    seg = msagent.load_backbone("litemedsam", device="cpu", cache_size=0 if fresh else 256)
    counting = CountingFrontDoor(seg)
    stack, _ = mni152("brain")
    t_enc = None
    if not fresh:  # each slice encoded once, timed; the runs then hit the cache
        times = []
        for index in range(stack.count):
            image = stack.image(index)
            start = time.perf_counter()
            seg.encode(image)
            times.append(time.perf_counter() - start)
        t_enc = statistics.median(times)
    out = {"stack": {"slices": stack.count, "size": list(stack.image_size),
                     "spacing": list(stack.spacing)},
           "fresh": fresh, "t_encode_s": t_enc, "tolerance_mm": tolerance, "targets": {}}
    for target in targets:
        _, gt = mni152(target)
        rows = {}
        for method in METHODS:
            if fresh:
                seg.clear_cache()
            counting.reset()
            start = time.perf_counter()
            row = run_method(method, seg, stack, gt, target, tolerance)
            measured = time.perf_counter() - start
            row.update(encodes=counting.asked, encoder_calls=counting.encodes,
                       decodes=counting.decodes, measured_s=measured,
                       wall_s=measured if fresh else measured + counting.asked * t_enc)
            rows[method] = row
            print(f"{target:12s} {method:11s} Dice {row['dice']:.3f} NSD {row['nsd']:.3f} "
                  f"encodes {row['encodes']} decodes {row['decodes']} {row['wall_s']:.0f} s",
                  flush=True)
        out["targets"][target] = {"gt_slices": int(gt.reshape(len(gt), -1).any(1).sum()),
                                  "gt_extent": extent(gt), "methods": rows}
    return out


def markdown(result: dict) -> str:
    s = result["stack"]
    timing = ("each run with a cold cache" if result["fresh"] else
              f"encoder once per slice ({result['t_encode_s']:.2f} s median), wall s = the run's "
              "measured time (embeddings from the cache: 'of which not encoding') + encodes × that")
    lines = ["# 3-D runs on MNI152 T1 (litemedsam + expert, CPU)", "",
             f"{s['slices']} axial slices of {s['size'][0]}×{s['size'][1]}, spacing "
             f"{'×'.join(f'{v:g}' for v in s['spacing'])} mm; NSD at {result['tolerance_mm']:g} mm; "
             f"{timing}.", "",
             "| target | method | Dice | NSD | DSC AUC | NSD AUC | encodes | decodes | wall s | "
             "of which not encoding | predicted extent (target) | empty slices predicted | "
             "target slices missed |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for target, t in result["targets"].items():
        for method, r in t["methods"].items():
            auc = (f"{r['dsc_auc']:.3f} | {r['nsd_auc']:.3f}" if "dsc_auc" in r else "– | –")
            ext = "–" if r["extent"] is None else f"{r['extent'][0]}..{r['extent'][1]}"
            gte = f"{t['gt_extent'][0]}..{t['gt_extent'][1]}"
            rest = "–" if result["fresh"] else f"{r['measured_s']:.0f}"
            lines.append(f"| {target} | {method} | {r['dice']:.3f} | {r['nsd']:.3f} | {auc} | "
                         f"{r['encodes']} | {r['decodes']} | {r['wall_s']:.0f} | "
                         f"{rest} | {ext} ({gte}) | "
                         f"{r['slices_without_target_predicted']} | "
                         f"{r['slices_with_target_missed']} |")
    lines += ["", "Reviews (slice, reason, decision), in order:", ""]
    for target, t in result["targets"].items():
        for method in ("review-3", "review-10"):
            reviews = t["methods"].get(method, {}).get("reviews")
            if reviews is not None:
                text = ", ".join(f"{i} ({why}, {what})" for i, why, what in reviews)
                lines.append(f"- {target}, {method} (key slice {t['methods'][method]['key_slice']}): "
                             f"{text}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated: " + ", ".join(TARGETS))
    parser.add_argument("--fresh", action="store_true", help="a cold embedding cache per run")
    parser.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm")
    parser.add_argument("--out", type=Path, default=Path("bench-output/eval-volume-mni152"))
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    start = time.perf_counter()
    result = evaluate(targets, args.fresh, args.tolerance)
    result["total_s"] = time.perf_counter() - start
    text = markdown(result) + f"\n\nTotal {result['total_s']:.0f} s.\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "results.md").write_text(text)


if __name__ == "__main__":
    main()
