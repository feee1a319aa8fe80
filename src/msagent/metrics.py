"""Segmentation metrics: Dice, IoU, NSD, NoC, and per-group aggregation.

Masks are H×W arrays interpreted as bool. Which convention each metric follows:

- Dice and IoU: the usual formulas. Both masks empty → 1.0, MONAI's ``ignore_empty=False``
  convention (``DiceMetric``/``MeanIoU``); exactly one empty → 0.0 (every definition agrees).
  The CVPR 2025 challenge never scores an empty class (its DeepMind-derived Dice gives NaN
  there), so on its cases the two agree.
- NSD (:func:`nsd`): equals DeepMind's surface-distance ``compute_surface_dice_at_tolerance``
  and MONAI's ``compute_surface_dice(use_subvoxels=True)``, both of which weigh contour
  elements by their length. MONAI's default (``use_subvoxels=False``) counts boundary pixels
  instead and differs by up to 0.32 on small masks. Both empty → 1.0 (as Dice; DeepMind's
  gives 0/0), exactly one empty → 0.0.
- NoC: RITM's ``compute_noc_metric``. AUC: the challenge's ``cumulative_trapezoid`` sum.
"""

from __future__ import annotations

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


def _corner_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every pixel corner: an (H+1)×(W+1) array of 0..15."""
    padded = np.pad(mask.astype(np.uint8), 1)
    return (8 * padded[:-1, :-1] + 4 * padded[:-1, 1:] + 2 * padded[1:, :-1] + padded[1:, 1:])


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: tuple[float, float] = (1.0, 1.0)) -> dict[str, np.ndarray]:
    """Contour elements of both masks with their lengths and distances to the other contour.

    The contour lives on pixel corners (2×2 neighbourhood codes), each element weighted by
    its length in spacing units: DeepMind's ``compute_surface_distances`` for 2-D masks.
    ``spacing`` is (row, column) pixel size. Keys: ``distances_gt_to_pred``,
    ``distances_pred_to_gt``, ``lengths_gt``, ``lengths_pred`` (1-D arrays).
    """
    from scipy import ndimage

    pred, gt = _pair(pred, gt)
    ys, xs = np.nonzero(pred | gt)
    if ys.size == 0:
        empty = np.zeros(0)
        return {"distances_gt_to_pred": empty, "distances_pred_to_gt": empty,
                "lengths_gt": empty, "lengths_pred": empty}
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    table = _contour_lengths(spacing)
    codes = {"gt": _corner_codes(gt[crop]), "pred": _corner_codes(pred[crop])}
    borders = {k: (c != 0) & (c != 15) for k, c in codes.items()}
    dist = {k: ndimage.distance_transform_edt(~b, sampling=spacing) if b.any()
            else np.full(b.shape, np.inf) for k, b in borders.items()}
    return {"distances_gt_to_pred": dist["pred"][borders["gt"]],
            "distances_pred_to_gt": dist["gt"][borders["pred"]],
            "lengths_gt": table[codes["gt"][borders["gt"]]],
            "lengths_pred": table[codes["pred"][borders["pred"]]]}


def nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float = 2.0,
        spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Normalized surface Dice (surface Dice at ``tolerance``): the length of both contours
    lying within ``tolerance`` (spacing units; pixels by default) of the other contour, over
    the total contour length. Same definition as DeepMind's
    ``compute_surface_dice_at_tolerance``, used by the CVPR 2024/2025 challenges."""
    pred, gt = _pair(pred, gt)
    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    d = surface_distances(pred, gt, spacing)
    close = d["lengths_gt"][d["distances_gt_to_pred"] <= tolerance].sum() \
        + d["lengths_pred"][d["distances_pred_to_gt"] <= tolerance].sum()
    return float(close / (d["lengths_gt"].sum() + d["lengths_pred"].sum()))


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
    out = {}
    for group, members in sorted(groups.items()):
        out[group] = {"n": len(members)}
        for metric in metrics:
            values = [float(r[metric]) for r in members if r.get(metric) is not None]
            out[group][metric] = float(np.mean(values)) if values else None
    return out
