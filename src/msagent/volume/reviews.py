"""Where a 3-D run's reviews look, from the result alone (never the ground truth), and what a
seeded episode did to the volume (:mod:`msagent.volume.agent`; docs/volumes.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def same_prediction(a: Any, b: Any) -> bool:
    if a is b:
        return True
    return a is not None and b is not None and np.array_equal(a.mask, b.mask)


def results_dice(results: Mapping[int, Any], gt: np.ndarray) -> float:
    """The 3-D Dice of a propagator's ``results`` (slice → prediction) against ``gt``
    (slices × H × W), slice by slice (no volume-sized mask is built)."""
    inter = area = 0
    for index, prediction in results.items():
        mask = np.asarray(prediction.mask, bool)
        inter += int(np.count_nonzero(mask & gt[index]))
        area += int(np.count_nonzero(mask))
    total = area + int(np.count_nonzero(gt))
    return 1.0 if total == 0 else 2.0 * inter / total


def rank_reviews(results: Mapping[int, Any], exclude: set[int], seeds: Mapping[int, Any] | set[int],
                 count: int) -> list[tuple[int, str, float]]:
    """Review candidates, most expected wrong voxels first: (slice, reason, value). From the
    result alone (slice → prediction with ``mask`` and ``score``; ``seeds``, the slices the
    agent fixed), never the ground truth. Per propagated slice ``i``, made by the walk from
    its nearest seed:

    - wrong voxels on the slice: (1 − relative score) × area, plus half the area change from
      the neighbour it was prompted from (an area jump). The relative score is the predicted
      score over the result's median score, at most 1 (backbones' scores are not calibrated:
      a slice is suspect where its score falls below the others'; an unknown score counts as
      the median);
    - what a correction there carries outward: (1 − its relative score) × the sum of that
      over the slices the same walk made beyond it;
    - the slice just beyond each end of the result (no mask: the target may go on): half the
      area of the end slice.

    Seeds and ``exclude`` are left out; ties go to the slice nearer a seed."""
    areas = {int(i): int(np.count_nonzero(p.mask)) for i, p in results.items()}
    raw = {int(i): float(p.score) if p.score is not None else float("nan")
           for i, p in results.items()}
    known = [v for v in raw.values() if np.isfinite(v)]
    median = float(np.median(known)) if known else float("nan")
    scores = {i: min(max(v / median, 0.0), 1.0) if np.isfinite(v) and median > 0 else 1.0
              for i, v in raw.items()}
    filled = sorted(i for i in seeds if areas.get(i, 0) > 0)
    if not filled:
        return []
    ranked: dict[int, tuple[float, str]] = {}
    for seed in filled:
        for direction in (+1, -1):
            walk = []  # the slices this seed's walk made, outward, until a gap or a seed
            index = seed + direction
            while areas.get(index, 0) > 0 and index not in seeds:
                walk.append(index)
                index += direction
            after_walk, local = index, []
            for index in walk:
                jump = 0.5 * abs(areas[index] - areas[index - direction])
                local.append(((1.0 - scores[index]) * areas[index], jump))
            beyond = 0.0
            for position in range(len(walk) - 1, -1, -1):
                index = walk[position]
                wrong, jump = local[position]
                carried = (1.0 - scores[index]) * beyond
                terms = {"low score": wrong, "area jump": jump, "carried": carried}
                reason = max(terms, key=lambda k: terms[k])
                ranked[index] = (wrong + jump + carried, reason)
                beyond += wrong + jump
            end = walk[-1] if walk else seed
            if 0 <= after_walk < count and after_walk not in areas:  # beyond the extent's end
                ranked.setdefault(after_walk, (0.5 * areas[end], "end of extent"))
    nearest = {i: min(abs(i - s) for s in filled) for i in ranked}
    order = sorted((i for i in ranked if i not in exclude and i not in seeds),
                   key=lambda i: (-ranked[i][0], nearest[i], i))
    return [(i, f"{ranked[i][1]}: {ranked[i][0]:.0f} voxels", ranked[i][0]) for i in order]


def pick_suspicious(results: Mapping[int, Any], exclude: set[int]) -> tuple[int, str] | None:
    """The propagated slice most likely wrong without a ground truth (see the module
    docstring): (slice, reason) or None when every slice was reviewed."""
    if not results:
        return None
    areas = {i: int(p.mask.sum()) for i, p in results.items()}
    first, last = min(results), max(results)
    best = None
    for index, prediction in results.items():
        if index in exclude:
            continue
        score = float(prediction.score)
        terms = {"low score": 1.0 - score if np.isfinite(score) else 0.0}
        neighbours = (areas.get(index - 1, 0) + areas.get(index + 1, 0)) / 2
        larger = max(areas[index], neighbours)
        terms["area change"] = abs(areas[index] - neighbours) / larger if larger else 0.0
        terms["end of extent"] = 0.5 if index in (first, last) else 0.0
        reason, value = max(terms.items(), key=lambda kv: kv[1])
        if best is None or value > best[1]:
            best = (index, value, reason)
    return None if best is None else (best[0], f"{best[2]} {best[1]:.2f}")
