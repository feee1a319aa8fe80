"""Segmentation metrics: Dice, IoU, NSD, NoC, and per-group aggregation.

Masks are H×W images or Z×Y×X volumes (any array order; ``spacing`` gives one pixel or voxel
size per array axis, in array order), interpreted as bool. Which convention each metric follows:

- Dice and IoU: the usual formulas, in any dimension. Both masks empty → 1.0, MONAI's
  ``ignore_empty=False`` convention (``DiceMetric``/``MeanIoU``); exactly one empty → 0.0
  (every definition agrees). The CVPR 2025 challenge never scores an empty class (its
  DeepMind-derived Dice gives NaN there), so on its cases the two agree.
- NSD (:func:`nsd`, 2-D and 3-D): equals DeepMind's surface-distance
  ``compute_surface_dice_at_tolerance`` and MONAI's ``compute_surface_dice(use_subvoxels=True)``
  (measured: tests/core/test_metrics_3d.py). The surface lives on pixel (voxel) corners, each
  2×2 (2×2×2) neighbourhood code is one element, weighted by its contour length (2-D) or by
  its surface area (3-D: the marching-cubes triangles of DeepMind's normals table, scaled by
  the spacing); distances are scipy's exact EDT with ``sampling=spacing``. MONAI's default
  (``use_subvoxels=False``) counts boundary pixels instead and differs by up to 0.32 on small
  masks. Both empty → 1.0 (as Dice; DeepMind's gives 0/0), exactly one empty → 0.0.
- NoC: RITM's ``compute_noc_metric``. AUC: the challenge's ``cumulative_trapezoid`` sum.

The CVPR 2025 interactive 3-D challenge (``CVPR25_iter_eval.py`` and ``SurfaceDice.py`` in
JunMa11/CVPR-MedSegFMCompetition) scores each class of the ground truth (``np.unique`` of the
labels, background 0 skipped) as a binary mask and averages over the classes: DSC is
DeepMind's ``compute_dice_coefficient``; NSD is DeepMind's 3-D surface Dice at tolerance
2.0 with ``spacing_mm`` the case's npz ``spacing``, passed unchanged (so in the array's axis
order), and it is computed only when that step's mean DSC is above 0.2, else counted 0.
:func:`volume_metrics` gives the same for one class (``nsd_min_dice=0.2``).
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    return pred, gt


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient 2|A∩B| / (|A|+|B|)."""
    pred, gt = _pair(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union |A∩B| / |A∪B|."""
    pred, gt = _pair(pred, gt)
    union = int(np.logical_or(pred, gt).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, gt).sum()) / union


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if ndim not in (2, 3):
        raise ValueError(f"surface metrics need 2-D or 3-D masks, got {ndim}-D")
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(v) for v in np.ravel(spacing))
    if len(values) != ndim or not all(v > 0 for v in values):
        raise ValueError(f"spacing {values} does not fit a {ndim}-D mask: give {ndim} positive sizes, "
                         "one per array axis in array order (e.g. (z, y, x) for a Z×Y×X volume)")
    return values


# Contour length of each 2×2 neighbourhood code (top-left 8, top-right 4, bottom-left 2,
# bottom-right 1), as in DeepMind's surface-distance package that the CVPR challenges use.
def _contour_lengths(spacing: tuple[float, float]) -> np.ndarray:
    vertical, horizontal = float(spacing[0]), float(spacing[1])
    diag = 0.5 * float(np.hypot(vertical, horizontal))
    table = np.zeros(16)
    table[[0b0001, 0b0010, 0b0100, 0b1000, 0b0111, 0b1011, 0b1101, 0b1110]] = diag
    table[[0b0110, 0b1001]] = 2 * diag
    table[[0b0011, 0b1100]] = horizontal
    table[[0b0101, 0b1010]] = vertical
    return table


# The surface of a 2×2×2 neighbourhood code (bit 7 - (4a + 2b + c) set when the voxel at
# corner offset (a, b, c) is inside; DeepMind's ENCODE_NEIGHBOURHOOD_3D_KERNEL) is a set of
# marching-cubes triangles, each given by its area vector (normal × area; per unit spacing,
# in eighths, sign dropped: only the lengths count). DeepMind's 256-entry table
# (lookup_tables._NEIGHBOUR_CODE_TO_NORMALS) is symmetric under the cube's 48 rotations and
# reflections and under complement (inside ↔ outside), so these 14 classes give all of it.
_TRIANGLES_OF_CLASS = {
    1: "111", 3: "220 220", 6: "111 111", 7: "400 222 111", 15: "400 400",
    22: "111 111 111", 23: "111 222 222 111", 24: "111 111", 25: "022 022 111",
    27: "111 333 022 202", 30: "400 111 222 111", 60: "220 220 220 220", 105: "111 111 111 111",
}
_CORNERS = tuple(itertools.product((0, 1), repeat=3))  # offset (a, b, c) has index 4a + 2b + c


def _map_code(code: int, axes: tuple[int, ...], flips: tuple[int, ...]) -> int:
    """The code after moving corner c to (c[axes[0]] ^ flips[0], c[axes[1]] ^ flips[1], ...)."""
    out = 0
    for index, corner in enumerate(_CORNERS):
        if code >> (7 - index) & 1:
            a, b, c = (corner[axes[i]] ^ flips[i] for i in range(3))
            out |= 1 << (7 - (4 * a + 2 * b + c))
    return out


@functools.cache
def _area_vectors() -> np.ndarray:
    """256 × 4 × 3 absolute triangle area vectors at unit spacing (rows of zeros pad)."""
    table = np.zeros((256, 4, 3))
    for code, text in _TRIANGLES_OF_CLASS.items():
        triangles = np.array([[int(d) for d in t] for t in text.split()]) / 8.0
        for axes in itertools.permutations(range(3)):
            for flips in itertools.product((0, 1), repeat=3):
                image = _map_code(code, axes, flips)
                # the image's axis i is the class's axis axes[i]: so are the vector components
                table[image, :len(triangles)] = table[255 - image, :len(triangles)] = triangles[:, axes]
    return table


def _surface_areas(spacing: tuple[float, ...]) -> np.ndarray:
    """Surface area of each 2×2×2 neighbourhood code at ``spacing``: an area vector (n0, n1,
    n2) scales to (n0·s1·s2, n1·s0·s2, n2·s0·s1), as DeepMind's
    ``create_table_neighbour_code_to_surface_area``."""
    s0, s1, s2 = spacing
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.linalg.norm(_area_vectors() * scale, axis=-1).sum(axis=-1)


def _corner_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every pixel (voxel) corner: one more per axis than ``mask``; 0..15
    in 2-D (top-left 8 … bottom-right 1), 0..255 in 3-D (offset (a, b, c) is bit
    7 - (4a + 2b + c))."""
    padded = np.pad(mask.astype(np.uint8), 1)
    bits = 2 ** mask.ndim
    codes = np.zeros(tuple(s + 1 for s in mask.shape), np.uint8)
    for index, offset in enumerate(itertools.product((0, 1), repeat=mask.ndim)):
        view = padded[tuple(slice(o, o + s + 1) for o, s in zip(offset, mask.shape))]
        codes |= view << (bits - 1 - index)
    return codes


def _box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper (exclusive) corner of the tight box of a non-empty mask."""
    spans = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
             for axis in range(mask.ndim)]
    return np.array([s[0] for s in spans]), np.array([s[-1] + 1 for s in spans])


def _distances(features: np.ndarray, points: np.ndarray, spacing: tuple[float, ...],
               reach: float | None) -> np.ndarray:
    """Distance from each ``points`` element (raster order) to the nearest ``features``
    element, inf when there is none: scipy's exact EDT. With ``reach``, the transform runs
    only on the box where a feature within ``reach`` of a point can lie: distances up to
    ``reach`` are exact, larger ones are only known to exceed it."""
    from scipy import ndimage

    out = np.full(np.count_nonzero(points), np.inf)
    if not features.any():
        return out
    if reach is None:
        return ndimage.distance_transform_edt(~features, sampling=spacing)[points]
    margin = np.ceil(reach / np.asarray(spacing)).astype(int)
    (f_lo, f_hi), (p_lo, p_hi) = _box(features), _box(points)
    lo, hi = np.maximum(p_lo, f_lo - margin), np.minimum(p_hi, f_hi + margin)  # points that may be near
    lo, hi = np.maximum(lo - margin, 0), np.minimum(hi + margin, points.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    if np.any(lo >= hi) or not features[box].any():
        return out
    inside = np.logical_and.reduce([(c >= a) & (c < b) for c, a, b in zip(np.nonzero(points), lo, hi)])
    out[inside] = ndimage.distance_transform_edt(~features[box], sampling=spacing)[points[box]]
    return out


def _surfaces(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], reach: float | None = None):
    """(distances gt→pred, distances pred→gt, element sizes of gt, of pred) on the bounding
    box of ``pred | gt``, which holds every surface element; ``reach`` as :func:`_distances`."""
    if not (pred | gt).any():
        empty = np.zeros(0)
        return empty, empty, empty, empty
    lo, hi = _box(pred | gt)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    table = _contour_lengths(spacing) if len(spacing) == 2 else _surface_areas(spacing)
    codes = {"gt": _corner_codes(gt[crop]), "pred": _corner_codes(pred[crop])}
    borders = {k: (c != 0) & (c != table.size - 1) for k, c in codes.items()}
    return (_distances(borders["pred"], borders["gt"], spacing, reach),
            _distances(borders["gt"], borders["pred"], spacing, reach),
            table[codes["gt"][borders["gt"]]], table[codes["pred"][borders["pred"]]])


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Surface elements of both masks with their sizes and distances to the other surface:
    DeepMind's ``compute_surface_distances`` (unsorted), for H×W or Z×Y×X masks.

    Elements live on pixel (voxel) corners; ``spacing`` is one size per array axis (None:
    1 each). Keys: ``distances_gt_to_pred``, ``distances_pred_to_gt`` and, in 2-D,
    ``lengths_gt``/``lengths_pred`` (contour length), in 3-D ``areas_gt``/``areas_pred``
    (surface area), all 1-D arrays. Distances to an empty mask's surface are inf.
    """
    pred, gt = _pair(pred, gt)
    spacing = _spacing(spacing, gt.ndim)
    gt_to_pred, pred_to_gt, size_gt, size_pred = _surfaces(pred, gt, spacing)
    size = "lengths" if gt.ndim == 2 else "areas"
    return {"distances_gt_to_pred": gt_to_pred, "distances_pred_to_gt": pred_to_gt,
            f"{size}_gt": size_gt, f"{size}_pred": size_pred}


def nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float = 2.0,
        spacing: Sequence[float] | None = None) -> float:
    """Normalized surface Dice (surface Dice at ``tolerance``) of H×W or Z×Y×X masks: the
    length (area) of both surfaces lying within ``tolerance`` (spacing units; pixels or
    voxels by default) of the other surface, over the total. Same definition as DeepMind's
    ``compute_surface_dice_at_tolerance``, used by the CVPR 2024/2025 challenges."""
    pred, gt = _pair(pred, gt)
    spacing = _spacing(spacing, gt.ndim)
    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    gt_to_pred, pred_to_gt, size_gt, size_pred = _surfaces(pred, gt, spacing, reach=tolerance)
    close = size_gt[gt_to_pred <= tolerance].sum() + size_pred[pred_to_gt <= tolerance].sum()
    return float(close / (size_gt.sum() + size_pred.sum()))


def volume_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
                   tolerance: float = 2.0, nsd_min_dice: float | None = None) -> dict[str, float]:
    """``{"dice", "iou", "nsd"}`` of a Z×Y×X prediction against its ground truth.

    ``spacing``: voxel size per array axis (mm; None: voxels); ``tolerance`` in the same
    unit. ``nsd_min_dice=0.2`` is the CVPR 2025 challenge's rule: NSD counts 0 (and is not
    computed) unless Dice is above it. See the module docstring for the challenge's
    conventions."""
    pred, gt = _pair(pred, gt)
    out = {"dice": dice(pred, gt), "iou": iou(pred, gt)}
    skip = nsd_min_dice is not None and out["dice"] <= nsd_min_dice
    out["nsd"] = 0.0 if skip else nsd(pred, gt, tolerance, spacing)
    return out


def noc(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach ``threshold`` IoU (RITM): the 1-based index of the first
    value at or above it; ``max_clicks`` if never reached within ``max_clicks`` clicks."""
    for index, value in enumerate(ious[:max_clicks], start=1):
        if value >= threshold:
            return index
    return max_clicks


def curve_auc(values: Sequence[float], normalize: bool = True) -> float:
    """Area under a per-step curve by the trapezoid rule with unit steps.

    ``normalize`` (default) divides by the number of intervals, so a constant curve at v has
    AUC v and one value gives that value. ``normalize=False`` is the CVPR 2025 challenge's
    ``DSC_AUC``/``NSD_AUC``: the raw trapezoid area (5 click steps: at most 4.0).
    """
    values = [float(v) for v in values]
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0] if normalize else 0.0
    y = np.asarray(values, dtype=np.float64)
    # scipy's cumulative_trapezoid with unit steps, summed in order: bit-equal to the challenge
    # (np.trapezoid is NumPy >= 2 only; its pairwise sum can differ in the last bit).
    area = float(np.cumsum((y[1:] + y[:-1]) / 2.0)[-1])
    return area / (len(values) - 1) if normalize else area


def aggregate(rows: Iterable[Mapping], metrics: Sequence[str], by: str | None = None) -> dict:
    """Mean of each metric over all rows, or per value of the ``by`` key."""
    groups: dict[str, list[Mapping]] = defaultdict(list)
    for row in rows:
        groups[str(row.get(by)) if by else "all"].append(row)
    out: dict[str, dict[str, float | None]] = {}
    for group, members in sorted(groups.items()):
        out[group] = {"n": len(members)}
        for metric in metrics:
            values = [float(r[metric]) for r in members if r.get(metric) is not None]
            out[group][metric] = float(np.mean(values)) if values else None
    return out
