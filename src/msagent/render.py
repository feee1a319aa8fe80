"""Mask overlays and per-turn strips.

The overlay is what the released checkpoint saw: mask pixels blended 50/50 with pure green,
nothing else drawn. Annotated views (prompts drawn) are for people only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .types import BBox, Point, Trajectory

GREEN = np.array([0, 255, 0], dtype=np.float32)


def overlay(image: np.ndarray, mask: np.ndarray | None, alpha: float = 0.5) -> np.ndarray:
    """H×W×3 uint8 image with ``mask`` pixels blended ``alpha`` toward green."""
    out = image.copy()
    if mask is None:
        return out
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    blended = image[mask].astype(np.float32) * (1 - alpha) + GREEN * alpha
    out[mask] = blended.astype(np.uint8)  # truncation, as in the checkpoint's training overlays
    return out


def draw_prompt(image: np.ndarray, prompt: BBox | Point) -> np.ndarray:
    """A copy of ``image`` with a box (yellow) or a click (green +, red −) drawn on it."""
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 256))
    if isinstance(prompt, BBox):
        cv2.rectangle(out, (prompt.x1, prompt.y1), (prompt.x2, prompt.y2), (255, 220, 0), thickness)
    else:
        color = (0, 200, 0) if prompt.positive else (230, 30, 30)
        radius = max(3, thickness * 3)
        cv2.circle(out, (prompt.x, prompt.y), radius, color, -1)
        cv2.circle(out, (prompt.x, prompt.y), radius, (255, 255, 255), max(1, thickness // 2))
    return out


def strip(images: Sequence[np.ndarray], labels: Sequence[str] = (), height: int = 256) -> np.ndarray:
    """Images side by side, each resized to ``height`` and captioned."""
    if not images:
        raise ValueError("strip needs at least one image")
    tiles = []
    for index, image in enumerate(images):
        scale = height / image.shape[0]
        tile = cv2.resize(image, (max(1, round(image.shape[1] * scale)), height),
                          interpolation=cv2.INTER_AREA)
        if index < len(labels):
            cv2.rectangle(tile, (0, 0), (tile.shape[1], 18), (0, 0, 0), -1)
            cv2.putText(tile, labels[index], (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
        tiles.append(np.full((height, 4, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def trajectory_strip(image: np.ndarray, trajectory: Trajectory, height: int = 256) -> np.ndarray:
    """One tile per executed turn: the overlay with that turn's prompt drawn (``step.prompt``;
    trajectories saved before steps kept it show none), captioned with the action and, when
    known, IoU/Dice."""
    tiles, labels = [image], ["input"]
    for step in trajectory.executed_steps:
        tile = overlay(image, step.mask)
        if step.prompt is not None:
            tile = draw_prompt(tile, step.prompt)
        label = f"{step.index + 1}: {step.action.kind}"
        if step.iou is not None:
            label += f" IoU {step.iou:.3f}"
        tiles.append(tile)
        labels.append(label)
    return strip(tiles, labels, height)
