"""Corrective-click simulation (the RITM / SegAgent rule), one function for every caller.

False negatives FN = GT∖pred and false positives FP = pred∖GT are padded by one pixel (so the
image border counts as boundary) and Euclidean distance-transformed. The click goes to the
pixel farthest from the boundary of whichever region has the larger maximum distance:
positive in FN if its maximum is strictly larger, else negative in FP — RITM's
``is_positive = fn_max > fp_max``, so a tie goes to the false-positive region. Among equal
maxima the first pixel in raster order (row by row) wins, as RITM's ``np.where(...)[0]``.
Pixels clicked before are never clicked again (their distance is zeroed, RITM's
``not_clicked_map``). Unlike RITM, a prediction with no error left gets no click (None).

The distance transform is scipy's exact one (``distance_transform_edt``), computed on the
region's bounding box plus one pixel, which gives the same values as on the whole image:
the same inputs give the same clicks on every machine and thread count. (OpenCV's
``DIST_MASK_PRECISE``, which RITM calls, runs in parallel, and its maps were seen to differ
between calls and thread counts.)
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import numpy as np
from scipy import ndimage

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


def inner_distance(region: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each pixel of ``region`` (H×W bool) to the nearest pixel
    outside it, the image border counting as outside; 0 outside the region (float64).

    Computed on the region's bounding box grown by one pixel: the nearest outside pixel of
    any region pixel always lies in that box, so the values equal the whole-image ones."""
    region = np.asarray(region, dtype=bool)
    out = np.zeros(region.shape, dtype=np.float64)
    rows, cols = np.any(region, axis=1), np.any(region, axis=0)
    if not rows.any():
        return out
    (y0, y1), (x0, x1) = _span(rows), _span(cols)
    crop = np.pad(region[y0:y1, x0:x1], 1)
    out[y0:y1, x0:x1] = ndimage.distance_transform_edt(crop)[1:-1, 1:-1]
    return out


def _span(any_along: np.ndarray) -> tuple[int, int]:
    index = np.flatnonzero(any_along)
    return int(index[0]), int(index[-1]) + 1


def as_masks(gt, pred=None) -> tuple[np.ndarray, np.ndarray]:
    """``gt`` and ``pred`` (None: empty) as H×W bool arrays; lists and 0/1 or 0/255 arrays
    are converted (non-zero is foreground)."""
    gt = np.asarray(gt).astype(bool)
    pred = np.zeros_like(gt) if pred is None else np.asarray(pred).astype(bool)
    if gt.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"masks must be two H×W arrays of one shape, got {gt.shape} and {pred.shape}")
    return gt, pred


def error_regions(gt: np.ndarray, pred: np.ndarray | None,
                  exclude: Iterable[Point] = ()) -> ErrorRegions:
    """Distance maps of FN and FP, with already-clicked pixels zeroed."""
    gt, pred = as_masks(gt, pred)
    fn = inner_distance(gt & ~pred)
    fp = inner_distance(pred & ~gt)
    for point in exclude:
        fn[point.y, point.x] = 0.0
        fp[point.y, point.x] = 0.0
    return ErrorRegions(fn, fp)


def _argmax_point(distance: np.ndarray, positive: bool) -> Point:
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return Point(int(x), int(y), positive)


def next_click(gt: np.ndarray, pred: np.ndarray | None,
               exclude: Iterable[Point] = ()) -> Point | None:
    """The standard corrective click (RITM's ``Clicker``; see the module docstring), or None
    when no unclicked error pixel is left. Also :func:`msagent.evaluation.ritm_click`."""
    return _best_click(error_regions(gt, pred, exclude))


def _best_click(regions: ErrorRegions) -> Point | None:
    if regions.fn_max == 0 and regions.fp_max == 0:
        return None
    if regions.fn_max > regions.fp_max:
        return _argmax_point(regions.fn_distance, True)
    return _argmax_point(regions.fp_distance, False)


def click_candidates(gt: np.ndarray, pred: np.ndarray | None, exclude: Iterable[Point] = (),
                     count: int = 5, rng: np.random.Generator | None = None) -> list[Point]:
    """Up to ``count`` distinct clicks, best first: the standard click, the best click of the
    other error region, then clicks drawn from both regions with probability proportional to
    their distance from the region boundary (interior points are likelier to help)."""
    gt, pred = as_masks(gt, pred)
    regions = error_regions(gt, pred, exclude)
    first = _best_click(regions)
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
