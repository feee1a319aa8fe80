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

The CVPR 2025 interactive 3-D challenge's rules (``CVPR25_iter_eval.py`` and ``get_boxes.py``
in JunMa11/CVPR-MedSegFMCompetition) are :func:`cvpr_click_3d` and :func:`cvpr_initial_box_3d`.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import numpy as np
from scipy import ndimage

from msagent.types import BBox, Point


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


def _span(any_along: np.ndarray | np.bool_) -> tuple[int, int]:
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


# -- the CVPR 2025 challenge's 3-D rules ----------------------------------------------------

#: The challenge halves the resolution of a padded crop of more voxels than this for its EDT.
CVPR_EDT_ROI_LIMIT = 60_000_000
_TWENTY_SIX = np.ones((3, 3, 3), dtype=bool)


@attrs.frozen
class VoxelClick:
    """A click at voxel (z, y, x) of a Z×Y×X volume, array order; ``positive`` is foreground."""

    z: int
    y: int
    x: int
    positive: bool = True

    @property
    def index(self) -> tuple[int, int, int]:
        return (self.z, self.y, self.x)

    @property
    def point(self) -> Point:
        """The click on its slice ``z`` as a pixel :class:`Point` (x, y)."""
        return Point(self.x, self.y, self.positive)


@attrs.frozen
class VolumeBox:
    """The challenge's box prompt for one target: the ground truth's slice range ``z_min`` ..
    ``z_max`` (closed) and ``box``, a pixel XYXY box (corners inclusive) on slice ``z_mid``."""

    z_min: int
    z_max: int
    z_mid: int
    box: BBox

    def to_challenge(self) -> dict[str, int]:
        """The npz ``boxes`` entry: ``z_min``, ``z_max``, ``z_mid``, ``z_mid_x_min`` … ``z_mid_y_max``."""
        return {"z_min": self.z_min, "z_max": self.z_max, "z_mid": self.z_mid,
                "z_mid_x_min": self.box.x1, "z_mid_y_min": self.box.y1,
                "z_mid_x_max": self.box.x2, "z_mid_y_max": self.box.y2}


def as_volumes(gt, pred=None) -> tuple[np.ndarray, np.ndarray]:
    """``gt`` and ``pred`` (None: empty) as Z×Y×X bool arrays (non-zero is foreground)."""
    gt = np.asarray(gt).astype(bool)
    pred = np.zeros_like(gt) if pred is None else np.asarray(pred).astype(bool)
    if gt.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(f"masks must be two Z×Y×X arrays of one shape, got {gt.shape} and {pred.shape}")
    return gt, pred


def _bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper (exclusive) corner of the tight box of a non-empty mask."""
    spans = [_span(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
             for axis in range(mask.ndim)]
    return np.array([s[0] for s in spans]), np.array([s[1] for s in spans])


def cvpr_click_3d(gt: np.ndarray, pred: np.ndarray | None) -> VoxelClick | None:
    """The CVPR 2025 challenge's corrective click on a Z×Y×X volume, or None when ``pred``
    equals ``gt``.

    As ``CVPR25_iter_eval.py``: the error is ``pred != gt`` as one mask (false negatives and
    false positives together); its 26-connected components are numbered in raster order
    (cc3d, ``connectivity=26``; here ``scipy.ndimage.label``, the same labels) and the largest
    is taken, the lowest-numbered of equal sizes (``np.argmax``). The click goes to a voxel
    of that component farthest from its boundary by the Euclidean distance transform in
    voxel units (no spacing; outside the component counts as boundary, the volume's edge
    too), on a 2×2×2 max-downsampled crop when its padded box exceeds
    :data:`CVPR_EDT_ROI_LIMIT` voxels, as the challenge does. Equal maxima are drawn as
    ``np.random.seed(42)`` then ``np.random.choice`` over them in raster order. Positive if
    the voxel is in ``gt``.
    Earlier clicks are not excluded: the challenge may click one voxel again.
    """
    gt, pred = as_volumes(gt, pred)
    error = gt != pred
    if not error.any():
        return None
    lo, hi = _bounds(error)  # the crop keeps every component and their raster order
    labels, _ = ndimage.label(error[tuple(map(slice, lo, hi))], structure=_TWENTY_SIX)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    candidates = _centre_candidates(labels == int(np.argmax(sizes))) + lo
    z, y, x = (int(v) for v in candidates[np.random.RandomState(42).choice(len(candidates))])
    return VoxelClick(z, y, x, bool(gt[z, y, x]))


def _centre_candidates(component: np.ndarray) -> np.ndarray:
    """The voxels (k × 3, raster order) of ``component`` where the challenge's ``compute_edt``
    is largest. It pads the component's box by a quarter of its size (at least 1) with
    zeros; up to :data:`CVPR_EDT_ROI_LIMIT` padded voxels the exact EDT, which equals
    :func:`inner_distance`'s (computed on a 1-voxel pad); above, the EDT of the padded crop
    downsampled 2×2×2 by ``max`` (skimage ``block_reduce``, zero-padded at the end) and
    repeated back, in coarse voxels, then zeroed outside the component."""
    lo, hi = _bounds(component)
    shape = hi - lo
    crop = component[tuple(map(slice, lo, hi))]
    pad = np.maximum((shape * 0.25).astype(int), 1)
    if np.prod(shape + 2 * pad) <= CVPR_EDT_ROI_LIMIT:
        distance = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1, 1:-1]
    else:
        padded = np.pad(crop, [(p, p + s % 2) for p, s in zip(pad, shape)])  # even sizes
        z, y, x = (s // 2 for s in padded.shape)
        coarse = ndimage.distance_transform_edt(padded.reshape(z, 2, y, 2, x, 2).max(axis=(1, 3, 5)))
        distance = coarse[np.ix_(*[(p + np.arange(s)) // 2 for p, s in zip(pad, shape)])] * crop
    if not distance.any():  # the challenge's fallback; its CPU path never takes it
        distance = crop.astype(np.float64)
    return np.argwhere(distance == distance.max()) + lo


def cvpr_initial_box_3d(gt: np.ndarray, shift: int = 0) -> VolumeBox:
    """The challenge's initial box prompt for a Z×Y×X ground truth (``get_boxes.py``,
    ``mask3D_to_bbox``): the closed slice range of the ground truth, its key slice ``z_mid``
    = the middle of the slices that contain it (``np.unique(z)[len // 2]``, so an empty
    slice inside the range is not counted), and the tight box of that slice, each side moved
    out by ``int(shift * W / 256)`` (x) and ``int(shift * H / 256)`` (y) pixels inside the
    image. The challenge draws ``shift`` from 0–5 (``np.random.randint(0, 6)``, seed 2025 at
    import, shared by all files of a worker process, so its boxes cannot be redrawn exactly);
    0 (default) is the tight box."""
    gt = np.asarray(gt).astype(bool)
    if gt.ndim != 3:
        raise ValueError(f"the ground truth must be a Z×Y×X array, got shape {gt.shape}")
    if shift < 0:
        raise ValueError(f"shift must be >= 0 (the challenge draws 0..5), got {shift}")
    slices = np.flatnonzero(gt.any(axis=(1, 2)))
    if slices.size == 0:
        raise ValueError("the ground truth is empty: there is no box to give")
    z_mid = int(slices[len(slices) // 2])
    ys, xs = np.nonzero(gt[z_mid])
    height, width = gt.shape[1:]
    dx, dy = int(shift * width / 256), int(shift * height / 256)
    box = BBox(max(0, int(xs.min()) - dx), max(0, int(ys.min()) - dy),
               min(width - 1, int(xs.max()) + dx), min(height - 1, int(ys.max()) + dy))
    return VolumeBox(int(slices[0]), int(slices[-1]), z_mid, box)
