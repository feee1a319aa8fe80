"""Mask overlays and per-turn strips.

The overlay is what the released checkpoint saw: mask pixels blended 50/50 with pure green,
nothing else drawn. Annotated views are for people only: :func:`annotate` enlarges a small
image to a readable size, then draws the prediction (green), the ground-truth outline
(yellow), the box (cyan) and the clicks (blue ``+`` positive, red ``−`` negative), the
current prompt thicker; :data:`LEGEND` says so under every strip.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from msagent.types import BBox, Point, Prompts, Trajectory

#: the side of the square image a policy sees (the RL stage's)
POLICY_IMAGE_SIZE = 512

GREEN = np.array([0, 255, 0], dtype=np.float32)
GT_COLOR = (255, 220, 0)      # yellow outline
BOX_COLOR = (0, 220, 255)     # cyan
POSITIVE = (30, 90, 255)      # blue disc with a white +
NEGATIVE = (230, 30, 30)      # red disc with a white −
LEGEND = "green: mask  yellow: ground truth  cyan: box  blue +: positive click  red -: negative"
#: the shortest side an annotated view is enlarged to (masks and prompts stay pixel-exact)
READABLE = 384


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


def draw_prompt(image: np.ndarray, prompt: BBox | Point, scale: float = 1.0,
                current: bool = True) -> np.ndarray:
    """A copy of ``image`` with a box (cyan) or a click (blue disc with +, red disc with −)
    drawn at ``scale`` × the prompt's pixel coordinates; ``current`` draws it bolder."""
    out = image.copy()
    unit = max(1, round(max(image.shape[:2]) / 256))
    thickness = unit * (2 if current else 1)
    if isinstance(prompt, BBox):
        corners = [(round(x * scale), round(y * scale)) for x, y in
                   ((prompt.x1, prompt.y1), (prompt.x2, prompt.y2))]
        cv2.rectangle(out, corners[0], corners[1], BOX_COLOR, thickness, cv2.LINE_AA)
        return out
    centre = (round(prompt.x * scale), round(prompt.y * scale))
    radius = max(5, unit * (6 if current else 5))
    cv2.circle(out, centre, radius, POSITIVE if prompt.positive else NEGATIVE, -1, cv2.LINE_AA)
    cv2.circle(out, centre, radius, (255, 255, 255), max(1, thickness // 2), cv2.LINE_AA)
    arm = max(2, radius // 2)
    x, y = centre
    cv2.line(out, (x - arm, y), (x + arm, y), (255, 255, 255), max(1, unit), cv2.LINE_AA)
    if prompt.positive:
        cv2.line(out, (x, y - arm), (x, y + arm), (255, 255, 255), max(1, unit), cv2.LINE_AA)
    return out


def enlarge(image: np.ndarray, shortest: int = READABLE) -> tuple[np.ndarray, float]:
    """``image`` scaled up (nearest neighbour, so pixels stay visible) until its shortest
    side is at least ``shortest``; never scaled down. Returns it and the factor."""
    scale = max(1, int(np.ceil(shortest / min(image.shape[:2]))))
    if scale == 1:
        return image, 1.0
    return cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale),
                      interpolation=cv2.INTER_NEAREST), float(scale)


def annotate(image: np.ndarray, mask: np.ndarray | None = None,
             ground_truth: np.ndarray | None = None, prompts: Prompts | None = None,
             current: BBox | Point | None = None, shortest: int = READABLE) -> np.ndarray:
    """The view for people: ``image`` enlarged to at least ``shortest`` px, the ``mask``
    blended green, the ``ground_truth`` outlined yellow, ``prompts`` drawn (``current``, the
    turn's own prompt, bolder). Arrays are H×W×3 uint8 and H×W bool of the image's size."""
    out = overlay(image, mask)
    out, scale = enlarge(out, shortest)
    if ground_truth is not None:
        gt: np.ndarray = np.asarray(ground_truth, np.uint8)
        if scale != 1:
            gt = cv2.resize(gt, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(gt, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, GT_COLOR, max(1, round(max(out.shape[:2]) / 300)),
                         cv2.LINE_AA)
    shown: list[BBox | Point] = list(prompts.points) if prompts is not None else []
    if prompts is not None and prompts.box is not None:
        shown.insert(0, prompts.box)
    if current is not None and current not in shown:
        shown.append(current)
    for prompt in shown:
        out = draw_prompt(out, prompt, scale, current=prompt == current)
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
            cv2.rectangle(tile, (0, 0), (tile.shape[1], 22), (0, 0, 0), -1)
            cv2.putText(tile, labels[index], (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
        tiles.append(np.full((height, 4, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def trajectory_strip(image: np.ndarray, trajectory: Trajectory, height: int = READABLE,
                     ground_truth: np.ndarray | None = None) -> np.ndarray:
    """One tile per executed turn (:func:`annotate`): the mask, the prompts in force
    (``step.prompts``; the turn's own prompt bolder) and the ``ground_truth`` outline when
    given, captioned with the action and, when known, IoU/Dice; :data:`LEGEND` underneath."""
    tiles, labels = [annotate(image, ground_truth=ground_truth, shortest=height)], ["input"]
    for step in trajectory.executed_steps:
        tiles.append(annotate(image, step.mask, ground_truth, step.prompts, step.prompt, height))
        assert step.action is not None  # an executed step ran an action
        label = f"{step.index + 1}: {step.action.kind}"
        if step.iou is not None:
            label += f"  IoU {step.iou:.3f}  Dice {step.dice:.3f}"
        labels.append(label)
    return legend(strip(tiles, labels, height))


def legend(sheet: np.ndarray, text: str = LEGEND) -> np.ndarray:
    """``sheet`` with a white band underneath holding ``text``."""
    band = np.full((22, sheet.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (6, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
    return np.concatenate([sheet, band], axis=0)


def policy_image(image: np.ndarray, mask: np.ndarray | None = None,
                 size: int = POLICY_IMAGE_SIZE) -> Image.Image:
    """The image the policy sees, as in the RL stage: the original resized to size×size
    (bilinear, aspect not kept); with ``mask``, the green overlay drawn at that size (the mask
    resized bilinearly as 0/255 and thresholded at 127)."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    if mask is None:
        return Image.fromarray(resized)
    mask_img = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize((size, size),
                                                                              Image.Resampling.BILINEAR)
    return Image.fromarray(overlay(resized, np.asarray(mask_img) > 127))
