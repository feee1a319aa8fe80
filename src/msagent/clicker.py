"""Corrective-click simulation (the RITM / SegAgent rule).

False negatives FN = GT∖pred and false positives FP = pred∖GT are padded by one pixel (so the
image border counts as boundary) and L2 distance-transformed. The click goes to the pixel
farthest from the boundary of whichever region has the larger maximum distance: positive in
FN, negative in FP. Pixels clicked before are never clicked again.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import cv2
import numpy as np

from .types import Point


@attrs.frozen
class ErrorRegions:
    """Distance maps of the two error regions (0 outside them)."""

    fn_distance: np.ndarray
    fp_distance: np.ndarray

    @property
    def fn_max(self) -> float:
        return float(self.fn_distance.max(initial=0.0))

    @property
    def fp_max(self) -> float:
        return float(self.fp_distance.max(initial=0.0))


def _inner_distance(region: np.ndarray) -> np.ndarray:
    padded = np.pad(region.astype(np.uint8), 1, constant_values=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def error_regions(gt: np.ndarray, pred: np.ndarray | None,
                  exclude: Iterable[Point] = ()) -> ErrorRegions:
    """Distance maps of FN and FP, with already-clicked pixels zeroed."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.zeros_like(gt) if pred is None else np.asarray(pred, dtype=bool)
    fn = _inner_distance(gt & ~pred)
    fp = _inner_distance(pred & ~gt)
    for point in exclude:
        fn[point.y, point.x] = 0.0
        fp[point.y, point.x] = 0.0
    return ErrorRegions(fn, fp)


def _argmax_point(distance: np.ndarray, positive: bool) -> Point:
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return Point(int(x), int(y), positive)


def next_click(gt: np.ndarray, pred: np.ndarray | None,
               exclude: Iterable[Point] = ()) -> Point | None:
    """The standard corrective click, or None when the prediction has no error left."""
    regions = error_regions(gt, pred, exclude)
    if regions.fn_max == 0 and regions.fp_max == 0:
        return None
    if regions.fn_max >= regions.fp_max:
        return _argmax_point(regions.fn_distance, True)
    return _argmax_point(regions.fp_distance, False)


def click_candidates(gt: np.ndarray, pred: np.ndarray | None, exclude: Iterable[Point] = (),
                     count: int = 5, rng: np.random.Generator | None = None) -> list[Point]:
    """Up to ``count`` distinct clicks, best first: the standard click, the best click of the
    other error region, then clicks drawn from both regions with probability proportional to
    their distance from the region boundary (interior points are likelier to help)."""
    exclude = list(exclude)
    regions = error_regions(gt, pred, exclude)
    first = next_click(gt, pred, exclude)
    if first is None:
        return []
    out = [first]
    other = regions.fp_distance if first.positive else regions.fn_distance
    if other.max(initial=0.0) > 0 and len(out) < count:
        out.append(_argmax_point(other, not first.positive))
    rng = rng or np.random.default_rng(0)
    weights = np.concatenate([regions.fn_distance.ravel(), regions.fp_distance.ravel()])
    for point in out:
        offset = 0 if point.positive else regions.fn_distance.size
        weights[offset + point.y * gt.shape[1] + point.x] = 0.0
    available = int(np.count_nonzero(weights))
    extra = min(count - len(out), available)
    if extra > 0:
        picks = rng.choice(weights.size, size=extra, replace=False, p=weights / weights.sum())
        for index in picks:
            positive = index < regions.fn_distance.size
            y, x = np.unravel_index(int(index % regions.fn_distance.size), gt.shape)
            out.append(Point(int(x), int(y), bool(positive)))
    return out
