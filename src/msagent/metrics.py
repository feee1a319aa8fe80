"""Segmentation metrics: Dice, IoU, NSD, NoC, and per-group aggregation.

Masks are H×W arrays interpreted as bool. Conventions for empty masks (as in the CVPR 2025
interactive challenge): both empty → 1.0; exactly one empty → 0.0.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import cv2
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


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask that touch the background (4-connectivity)."""
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0)
    return mask & ~eroded.astype(bool)


def _distance_to(border: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Euclidean distance (in spacing units) of every pixel to the nearest border pixel."""
    if spacing[0] != spacing[1]:
        from scipy import ndimage  # anisotropic spacing needs sampling-aware EDT

        return ndimage.distance_transform_edt(~border, sampling=spacing)
    dist = cv2.distanceTransform((~border).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist * spacing[0]


def nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float = 2.0,
        spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Normalized surface distance: the fraction of both borders lying within ``tolerance``
    (in spacing units, pixels by default) of the other border."""
    pred, gt = _pair(pred, gt)
    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    pred_border, gt_border = _border(pred), _border(gt)
    gt_dist = _distance_to(gt_border, spacing)
    pred_dist = _distance_to(pred_border, spacing)
    close = int((gt_dist[pred_border] <= tolerance).sum()) + int((pred_dist[gt_border] <= tolerance).sum())
    return close / (int(pred_border.sum()) + int(gt_border.sum()))


def noc(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach ``threshold`` IoU (RITM): the 1-based index of the first
    value at or above it; ``max_clicks`` if never reached within ``max_clicks`` clicks."""
    for index, value in enumerate(ious[:max_clicks], start=1):
        if value >= threshold:
            return index
    return max_clicks


def curve_auc(values: Sequence[float]) -> float:
    """Area under a per-step curve by the trapezoid rule with unit steps, normalised by the
    number of intervals (a constant curve at v has AUC v); one value gives that value."""
    values = list(values)
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return float(np.trapezoid(values)) / (len(values) - 1)


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
