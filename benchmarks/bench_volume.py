"""3-D runs (msagent.segment_volume, generic propagation) on litemedsam (CPU), counted and
timed against baselines of the same run. The loaded segmenter's ``encode_image`` and
``decode_prompts`` are wrapped to count calls (``decode_prompts`` counts prompt sets); its
content-hash cache is off (``cache_size=0``), so every encode the run asks for is counted.

1. **Encodes per run** (goal: encodes = slices visited): ``segment_volume`` with the expert and
   ``review_slices=3`` on the top of the MNI152 T1 brain (axial, 2 mm; the brain ends inside
   the stack), counting the encoder's calls against the slices whose embedding the run used.
2. **Propagation cost** (goal ≤ 1.15×): generic propagation from a seed (the true mask of the
   middle slice) over N = 16 slices against the baseline N × (one encode + one decode, a
   tight ground-truth box) on the same slices, each timed directly; wall clock and process
   CPU time, the two alternated ABBA… ``--repeats`` (4) times, best of each. On a shared
   machine the ratio swings with the load (printed), so the time each spends outside the
   backbone's ``encode_image``/``decode_prompts`` (in the same call) is reported too: the
   propagation's own overhead, which contention does not hide.
3. **Re-propagation decodes** (goal: decodes = slices whose inputs changed): three review
   corrections, each an expert episode on the worst-Dice slice starting from its propagated
   mask, then re-propagation. A slice's inputs are what its decoder call gets (box, mask
   input); which changed is found from two propagations from scratch, with the seeds before
   and after the correction; the re-propagated masks must equal the second.
4. **Memory**: ``segment_volume`` (expert, generic, review_slices=3) on a synthetic int16 CT
   (an ellipsoid "liver" in a noisy body, 512×512 per slice), each embedding budget in its
   own subprocess for a clean peak RSS (``ru_maxrss``; after one warm-up inference, so the
   encoder's first buffers are not the run's), before and with segment_volume's 3-D scoring;
   and the embeddings held at most (the store's resident ones and the backbone's own cache,
   counted: RSS hides them at this scale, as freed encoder buffers are reused). ``--full``:
   300 slices, max_in_memory 64 vs 10000 (5–15 min per case on 2 CPU cores); by default
   (quick) 60 slices and the budget scaled (13 = 64 × 60 / 300) vs 10000.

    python benchmarks/bench_volume.py [--full] [--only encodes,propagation,repropagation,memory]

Results: printed, and as JSON and markdown in ``--out`` (bench-output/bench_volume.*).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

import msagent
from msagent import metrics
from msagent.agent.refine import mask_box
from msagent.backbones.propagation import Seed, SliceStack
from msagent.backbones.segmenter import image_key
from msagent.types import Prompts
from msagent.volume.agent import VolumeAgent
from msagent.volume.embeddings import EmbeddingStore
from msagent.volume.propagation import GenericPropagator

CASES = ("encodes", "propagation", "repropagation", "memory")
PROPAGATION_GOAL = 1.15
EMBEDDING_MIB = 256 * 64 * 64 * 4 / 2**20  # litemedsam: 1×256×64×64 float32 per slice


class Counting:
    """Counts (and optionally records) a segmenter's encoder and decoder calls."""

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter
        self.encoded: list[str] = []  # image key per encode_image call
        self.decoded: list[tuple[str, object, np.ndarray | None]] = []  # (key, box, mask input)
        self.record = False
        encode, decode = segmenter.encode_image, segmenter.decode_prompts

        def encode_image(image):
            self.encoded.append(image_key(image))
            start = time.perf_counter()
            try:
                return encode(image)
            finally:
                self.backbone_s += time.perf_counter() - start

        def decode_prompts(embedding, prompt_sets, prev_logits, *, multimask):
            if self.record:
                self.decoded.extend((embedding.key, p.box, None if q is None else q.copy())
                                    for p, q in zip(prompt_sets, prev_logits))
            self.decodes += len(prompt_sets)
            start = time.perf_counter()
            try:
                return decode(embedding, prompt_sets, prev_logits, multimask=multimask)
            finally:
                self.backbone_s += time.perf_counter() - start

        self.decodes, self.backbone_s = 0, 0.0
        segmenter.encode_image, segmenter.decode_prompts = encode_image, decode_prompts

    @property
    def encodes(self) -> int:
        return len(self.encoded)

    def reset(self) -> None:
        self.encoded.clear()
        self.decoded.clear()
        self.decodes, self.backbone_s = 0, 0.0


def litemedsam(cache_size: int = 0) -> msagent.Segmenter:
    return msagent.load_backbone("litemedsam", device="cpu", cache_size=cache_size)


def mni152(target: str = "brain"):
    """The MNI152 T1 template (nilearn, 2 mm) as an axial SliceStack and ``target``'s mask
    (slices × H × W, display order)."""
    from nilearn import datasets as nl

    from msagent import io
    from msagent.datasets.folder import _mni152_labels
    from msagent.volume.stack import build_stack, label_stack

    template = nl.load_mni152_template(resolution=2)
    volume = io.Volume(data=np.asarray(template.get_fdata()), affine=np.asarray(template.affine))
    stack = build_stack(volume, plane="axial")
    mask = _mni152_labels(2)[target].astype(np.uint8)
    return stack.slices, label_stack(io.Volume(data=mask, affine=volume.affine), stack, target)


def sub_stack(stack: SliceStack, gt: np.ndarray, low: int, high: int) -> tuple[SliceStack, np.ndarray]:
    return SliceStack(np.ascontiguousarray(stack.gray[low:high]), stack.spacing), gt[low:high].copy()


# -- 1. encodes per run ---------------------------------------------------------------
def bench_encodes(seg, counting: Counting) -> dict:
    full, gt_full = mni152("brain")
    low, high = 56, 86  # the brain ends at display slice 77: the run finds its end
    gray, gt = full.gray[low:high], gt_full[low:high]
    visited: Counter = Counter()  # embedding uses per slice
    encoded: Counter = Counter()  # encoder calls per slice
    real_getitem = EmbeddingStore.__getitem__

    def getitem(store, index):
        visited[index] += 1
        calls = counting.encodes
        try:
            return real_getitem(store, index)
        finally:
            encoded[index] += counting.encodes - calls

    counting.reset()
    EmbeddingStore.__getitem__ = getitem
    try:
        start = time.perf_counter()
        result = msagent.segment_volume(gray, "brain", backbone=seg, policy="expert",
                                        ground_truth=gt, spacing=full.spacing, window=(255, 127.5),
                                        review_slices=3, propagation="generic")
        seconds = time.perf_counter() - start
    finally:
        EmbeddingStore.__getitem__ = real_getitem
    reviews = [e for e in result.episodes if e.role == "review"]
    return {
        "stack": f"MNI152 T1 2 mm axial display slices {low}..{high - 1} (brain ends at 77)",
        "slices": high - low, "slices_with_target": int(gt.reshape(len(gt), -1).any(1).sum()),
        "encodes": counting.encodes, "slices_visited": len(visited),
        "embedding_uses": sum(visited.values()), "max_encodes_per_slice": max(encoded.values()),
        "run_counted_encodes": result.counts["encodes"], "decodes": counting.decodes,
        "key_slice": result.key_slice, "propagated": sorted(result.trajectory.masks),
        "reviews": [(e.slice, e.reason, e.decision or ("seeded" if e.seeded else "kept"))
                    for e in reviews],
        "dice": result.dice, "nsd": result.nsd, "seconds": seconds,
        "ok": counting.encodes == len(visited) == sum(encoded.values())
        and max(encoded.values()) == 1,
    }


# -- 2. propagation cost ----------------------------------------------------------------
def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_propagation(seg, counting: Counting, repeats: int) -> tuple[dict, dict]:
    full, gt_full = mni152("brain")
    areas = gt_full.reshape(len(gt_full), -1).sum(1)
    seed = int(np.argmax(areas))
    stack, gt = sub_stack(full, gt_full, seed - 8, seed + 9)  # 17 slices, the seed in the middle
    seed = 8
    others = [i for i in range(stack.count) if i != seed]
    images = {i: stack.image(i) for i in others}

    def baseline():
        for i in others:
            embedding = seg.encode(images[i])
            seg.decode(embedding, Prompts(box=mask_box(gt[i])))

    holder = {}

    def propagation():
        if "propagator" in holder:
            holder["propagator"].close()
        store = EmbeddingStore(seg, stack, max_in_memory=10_000)
        propagator = holder["propagator"] = GenericPropagator(seg, stack, store=store)
        propagator.add_seed(seed, Seed(gt[seed]))
        propagator.propagate()

    seg.decode(seg.encode(stack.image(seed)), Prompts(box=mask_box(gt[seed])))  # warm-up
    load_before = os.getloadavg()[0]
    runs = {"baseline": [], "propagation": []}
    order = [("baseline", baseline), ("propagation", propagation)]
    for repeat in range(repeats):  # ABBA...: drift on a shared machine hits both alike
        for name, fn in order if repeat % 2 == 0 else order[::-1]:
            counting.reset()
            wall, cpu = timed(fn)
            runs[name].append({"wall": wall, "cpu": cpu, "encodes": counting.encodes,
                               "decodes": counting.decodes, "backbone": counting.backbone_s,
                               "outside_backbone": wall - counting.backbone_s})
    best = {name: {key: min(r[key] for r in rs) for key in ("wall", "cpu", "outside_backbone")}
            for name, rs in runs.items()}
    propagator = holder["propagator"]
    out = {
        "stack": "MNI152 T1 2 mm axial, 17 slices around the largest brain slice, seeded there "
                 "with the true mask", "n": len(others), "repeats": repeats, "runs": runs,
        "baseline_encodes": runs["baseline"][-1]["encodes"],
        "baseline_decodes": runs["baseline"][-1]["decodes"],
        "propagation_encodes": runs["propagation"][-1]["encodes"],
        "propagation_decodes": runs["propagation"][-1]["decodes"],
        "ratio_wall": best["propagation"]["wall"] / best["baseline"]["wall"],
        "ratio_cpu": best["propagation"]["cpu"] / best["baseline"]["cpu"],
        "per_slice_baseline_s": best["baseline"]["wall"] / len(others),
        # load-robust: the propagation's own time (outside encode_image/decode_prompts, same
        # call) against the baseline's; contention slows the backbone calls of both alike
        "outside_backbone_s": {k: v["outside_backbone"] for k, v in best.items()},
        "own_overhead": (best["propagation"]["outside_backbone"]
                         - best["baseline"]["outside_backbone"]) / best["baseline"]["wall"],
        "load_average": [load_before, os.getloadavg()[0]],
        "goal": PROPAGATION_GOAL,
        "propagation_dice": metrics.dice(propagator.masks(), gt),
    }
    out["ok"] = out["ratio_wall"] <= PROPAGATION_GOAL
    return out, {"stack": stack, "gt": gt, "propagator": propagator, "seed": seed}


# -- 3. re-propagation decodes -----------------------------------------------------------
def from_scratch(seg, counting: Counting, stack, store, seeds: dict[int, Seed]):
    """A propagation from scratch with ``seeds`` (sharing ``store``): its masks and each
    decoded slice's decoder inputs (box, mask input)."""
    propagator = GenericPropagator(seg, stack, store=store)
    for index, seed in seeds.items():
        propagator.add_seed(index, seed)
    counting.decoded.clear()
    counting.record = True
    try:
        propagator.propagate()
    finally:
        counting.record = False
    inputs = {key: (box, logits) for key, box, logits in counting.decoded}
    return propagator.masks(), inputs, len(counting.decoded)


def same_input(a, b) -> bool:
    if a is None or b is None or a[0] != b[0]:
        return False
    if a[1] is None or b[1] is None:
        return a[1] is None and b[1] is None
    return bool(np.array_equal(a[1], b[1]))


def bench_repropagation(seg, counting: Counting, state: dict, corrections: int = 3) -> dict:
    stack, gt, propagator = state["stack"], state["gt"], state["propagator"]
    store = propagator.store
    expert = msagent.load_policy("expert")
    seeds = dict(propagator.seeds)
    _, before, _ = from_scratch(seg, counting, stack, store, seeds)
    reviewed, rows = set(seeds), []
    for _ in range(corrections):
        candidates = [i for i in range(stack.count) if i not in reviewed
                      and (gt[i].any() or i in propagator.results)]
        if not candidates:
            break
        current = propagator.masks()
        index = min(candidates, key=lambda i: metrics.dice(current[i], gt[i]))
        reviewed.add(index)
        dice_before = metrics.dice(current[index], gt[index])
        if gt[index].any():
            initial = current[index] if current[index].any() else None
            trajectory = msagent.Agent(expert, seg).run(
                stack.image(index), "brain", gt[index], initial_mask=initial,
                initial_source="propagated" if initial is not None else "", embedding=store[index])
            seed = Seed(trajectory.final_mask)
        else:
            seed = Seed(np.zeros(stack.image_size, bool))
        counting.reset()
        propagator.add_seed(index, seed)
        propagator.propagate()
        decodes, encodes = counting.decodes, counting.encodes
        seeds[index] = seed
        masks, after, scratch_decodes = from_scratch(seg, counting, stack, store, seeds)
        changed = sorted(k for k in after if not same_input(before.get(k), after[k]))
        rows.append({"slice": index, "dice_before": dice_before,
                     "dice_after": metrics.dice(seed.mask, gt[index]),
                     "decodes": decodes, "encodes": encodes, "inputs_changed": len(changed),
                     "from_scratch_decodes": scratch_decodes,
                     "same_masks_as_from_scratch": bool(np.array_equal(masks, propagator.masks()))})
        before = after
    propagator.close()
    return {"stack": "the propagation case's 17 slices and seed", "corrections": rows,
            "ok": all(r["decodes"] == r["inputs_changed"] and r["same_masks_as_from_scratch"]
                      and r["encodes"] == 0 for r in rows)}


# -- 4. memory ------------------------------------------------------------------------------
def synthetic_ct(slices: int, size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(D, H, W) int16 HU: air, an elliptic body of soft tissue (0 HU), an ellipsoid "liver"
    (150 HU) over the middle 80 % of the slices; Gaussian noise (25 HU). Built slice by slice."""
    rng = np.random.default_rng(seed)
    volume = np.empty((slices, size, size), np.int16)
    liver = np.zeros((slices, size, size), bool)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    body = ((yy - size / 2) / (0.38 * size)) ** 2 + ((xx - size / 2) / (0.46 * size)) ** 2 <= 1
    cy, cx, ry, rx, rz = 0.45 * size, 0.38 * size, 0.2 * size, 0.25 * size, 0.4 * slices
    for z in range(slices):
        radial = 1 - ((z - (slices - 1) / 2) / rz) ** 2
        if radial > 0:
            liver[z] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= radial
        hu = np.where(body, 0.0, -1000.0) + np.where(liver[z], 150.0, 0.0)
        volume[z] = np.clip(hu + rng.normal(0, 25, (size, size)), -1024, 3071).astype(np.int16)
    return volume, liver


def rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB here


def memory_child(slices: int, budget: int) -> None:
    """One memory case, in its own process; prints one JSON line."""
    seg = litemedsam(cache_size=16)  # the backbone's default cache, as segment_volume loads it
    counting = Counting(seg)
    volume, liver = synthetic_ct(slices)
    size = volume.shape[1]  # one inference first: its buffers are not the run's
    seg.decode(seg.encode(np.zeros((size, size, 3), np.uint8)), Prompts(box=mask_box(liver[slices // 2])))
    seg.clear_cache()
    counting.reset()
    before = rss_mib()
    marks = {}
    run = VolumeAgent.run

    def marked(self, *args, **kwargs):  # the peak before segment_volume scores the result
        try:
            return run(self, *args, **kwargs)
        finally:
            marks["peak_before_scoring_mib"] = peak_rss_mib()

    VolumeAgent.run = marked
    held = {"store": 0, "all": 0}
    getitem = EmbeddingStore.__getitem__

    def counted(store, index):  # embeddings held: the store's resident ones and the backbone's cache
        try:
            return getitem(store, index)
        finally:
            cached = {id(e) for e in seg._cache._items.values()}
            held["store"] = max(held["store"], store.in_memory)
            held["all"] = max(held["all"], len(cached | {id(e) for e in store._resident.values()}))

    EmbeddingStore.__getitem__ = counted
    start = time.perf_counter()
    result = msagent.segment_volume(volume, "liver", backbone=seg, policy="expert",
                                    ground_truth=liver, spacing=(1.0, 0.8, 0.8), window="abdomen",
                                    review_slices=3, propagation="generic", max_in_memory=budget)
    print(json.dumps({"slices": slices, "max_in_memory": budget, "rss_before_mib": before,
                      "peak_rss_mib": peak_rss_mib(), **marks, "held_store": held["store"],
                      "held_embeddings": held["all"], "held_mib": held["all"] * EMBEDDING_MIB,
                      "seconds": time.perf_counter() - start,
                      "encodes": counting.encodes, "decodes": counting.decodes,
                      "slices_with_target": int(liver.reshape(slices, -1).any(1).sum()),
                      "propagated": len(result.trajectory.masks), "dice": result.dice}))


def bench_memory(full: bool) -> dict:
    slices = 300 if full else 60
    budgets = (64 if full else round(64 * slices / 300), 10_000)
    cases = []
    for budget in budgets:
        command = [sys.executable, __file__, "--memory-child", str(slices), str(budget)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"memory case {slices} slices, budget {budget} failed (exit status "
                               f"{done.returncode}):\n{done.stderr[-3000:]}")
        cases.append(json.loads(done.stdout.strip().splitlines()[-1]))
    small, large = cases
    for case in cases:
        case["run_mib"] = case["peak_before_scoring_mib"] - (case["rss_before_mib"] or 0.0)
    return {"mode": "full" if full else "quick", "shape": [slices, 512, 512],
            "embedding_mib": EMBEDDING_MIB, "cases": cases,
            "saved_mib": large["peak_before_scoring_mib"] - small["peak_before_scoring_mib"],
            "run_ratio": small["run_mib"] / large["run_mib"],
            "peak_ratio": small["peak_rss_mib"] / large["peak_rss_mib"]}


# -- report -------------------------------------------------------------------------------------
def markdown(results: dict) -> str:
    lines = ["# bench_volume (litemedsam, CPU)", ""]
    if "encodes" in results:
        r = results["encodes"]
        lines += ["## Encodes per run (segment_volume, expert, review_slices=3)", "",
                  f"{r['stack']}: {r['encodes']} encodes for {r['slices_visited']} slices "
                  f"visited ({r['embedding_uses']} embedding uses, at most "
                  f"{r['max_encodes_per_slice']} encode per slice; goal: encodes = slices "
                  f"visited) -> {'OK' if r['ok'] else 'FAIL'}. Key slice {r['key_slice']}, "
                  f"propagated to {len(r['propagated'])} slices "
                  f"({min(r['propagated'])}..{max(r['propagated'])}), reviews {r['reviews']}, "
                  f"3-D Dice {r['dice']:.3f}, NSD {r['nsd']:.3f}, {r['seconds']:.0f} s.", ""]
    if "propagation" in results:
        r = results["propagation"]
        lines += ["## Generic propagation vs N x (encode + decode)", "",
                  f"{r['stack']}; N = {r['n']} slices, best of {r['repeats']}.", "",
                  "| | encodes | decodes | best wall s | best CPU s |", "|---|---|---|---|---|"]
        for name in ("baseline", "propagation"):
            runs = r["runs"][name]
            lines.append(f"| {name} | {runs[-1]['encodes']} | {runs[-1]['decodes']} | "
                         f"{min(x['wall'] for x in runs):.2f} | {min(x['cpu'] for x in runs):.2f} |")
        out = r["outside_backbone_s"]
        lines += ["", f"ratio {r['ratio_wall']:.3f}x wall, {r['ratio_cpu']:.3f}x CPU (goal <= "
                  f"{r['goal']}x) -> {'OK' if r['ok'] else 'FAIL'}; propagation Dice "
                  f"{r['propagation_dice']:.3f}. Time outside the backbone's encode_image/"
                  f"decode_prompts: propagation {out['propagation']:.2f} s, baseline "
                  f"{out['baseline']:.2f} s: the propagation's own overhead is "
                  f"{100 * r['own_overhead']:+.1f} % of the baseline (load-robust). Load average "
                  f"{r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f} on "
                  f"{os.cpu_count()} CPUs.", ""]
    if "repropagation" in results:
        r = results["repropagation"]
        lines += ["## Re-propagation after a review correction", "",
                  "| slice | Dice before | after | decodes | inputs changed | from scratch | "
                  "same masks | encodes |", "|---|---|---|---|---|---|---|---|"]
        for c in r["corrections"]:
            lines.append(f"| {c['slice']} | {c['dice_before']:.3f} | {c['dice_after']:.3f} | "
                         f"{c['decodes']} | {c['inputs_changed']} | {c['from_scratch_decodes']} | "
                         f"{c['same_masks_as_from_scratch']} | {c['encodes']} |")
        lines += ["", f"goal: decodes = slices whose inputs changed, no encodes -> "
                  f"{'OK' if r['ok'] else 'FAIL'}", ""]
    if "memory" in results:
        r = results["memory"]
        lines += [f"## Memory ({r['mode']}: {'x'.join(map(str, r['shape']))} int16 CT, "
                  f"{r['embedding_mib']:.0f} MiB per embedding)", "",
                  "| max_in_memory | slices with target | encodes | embeddings held at most | "
                  "RSS before run | peak, 3-D run | its increase | peak with 3-D scoring | seconds "
                  "| Dice |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in r["cases"]:
            lines.append(f"| {c['max_in_memory']} | {c['slices_with_target']} | {c['encodes']} | "
                         f"{c['held_embeddings']} ({c['held_store']} in the store), "
                         f"{c['held_mib']:.0f} MiB | {c['rss_before_mib']:.0f} | "
                         f"{c['peak_before_scoring_mib']:.0f} | "
                         f"{c['run_mib']:.0f} | {c['peak_rss_mib']:.0f} | {c['seconds']:.0f} | "
                         f"{c['dice']:.3f} |")
        lines += ["", "RSS in MiB; embeddings held: the store's resident ones and the backbone's "
                  "own cache (16), counted. The 3-D run's increase of RSS with the small budget: "
                  f"{r['run_ratio']:.2f}x "
                  f"the large budget's ({r['saved_mib']:.0f} MiB less); peak with the scoring "
                  f"(segment_volume's 3-D Dice/NSD against the ground truth) {r['peak_ratio']:.2f}x.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="the memory case at 512x512x300 (default: quick, 512x512x60)")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument("--memory-child", nargs=2, type=int, metavar=("SLICES", "BUDGET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(wanted) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")
    results: dict = {"machine": f"{sys.platform}, torch threads {_threads()}"}
    if {"encodes", "propagation", "repropagation"} & set(wanted):
        seg = litemedsam()
        counting = Counting(seg)
    if "encodes" in wanted:
        results["encodes"] = bench_encodes(seg, counting)
    if "propagation" in wanted or "repropagation" in wanted:
        results["propagation"], state = bench_propagation(seg, counting, args.repeats)
        if "repropagation" in wanted:
            results["repropagation"] = bench_repropagation(seg, counting, state)
        if "propagation" not in wanted:
            del results["propagation"]
    if "memory" in wanted:
        results["memory"] = bench_memory(args.full)
    text = markdown(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_volume.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "bench_volume.md").write_text(text + "\n")
    print(f"written: {args.out / 'bench_volume.json'}, {args.out / 'bench_volume.md'}")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
