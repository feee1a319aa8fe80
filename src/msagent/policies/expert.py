"""The simulated clinician (``expert``) and the one-box baseline (``oracle-box``).

Both read ``episode.ground_truth``. The expert's first action is a box around the ground
truth (optionally jittered) or, with ``first="click"``, a positive click at its interior
maximum; then corrective clicks (:mod:`msagent.clicker`). A click is taken only if its
previewed IoU gain is at least ``tau``; otherwise the next candidate is tried, up to
``candidates`` of them. The expert stops at ``target_iou`` or when no candidate helps.
"""

from __future__ import annotations

import hashlib

import attrs
import numpy as np

from .. import clicker, metrics, protocol
from ..errors import PolicyError
from ..policy import Episode, Policy, Reply
from ..types import BBox, Point
from . import rationale as text


def mask_bbox(mask: np.ndarray) -> BBox:
    """The tight pixel box (corners inclusive) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise PolicyError("the ground truth is empty; an expert cannot box it")
    return BBox(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def jitter_bbox(box: BBox, fraction: float, image_size: tuple[int, int],
                rng: np.random.Generator) -> BBox:
    """Move each side by up to ``fraction`` of the box's side length, inside the image."""
    if fraction <= 0:
        return box
    height, width = image_size
    dx = (box.x2 - box.x1 + 1) * fraction
    dy = (box.y2 - box.y1 + 1) * fraction
    x1, x2 = (np.array([box.x1, box.x2]) + rng.uniform(-dx, dx, 2)).round().astype(int)
    y1, y2 = (np.array([box.y1, box.y2]) + rng.uniform(-dy, dy, 2)).round().astype(int)
    clip = lambda v, n: int(min(max(v, 0), n - 1))  # noqa: E731
    return BBox.ordered(clip(x1, width), clip(y1, height), clip(x2, width), clip(y2, height))


def episode_rng(seed: int, episode: Episode) -> np.random.Generator:
    """Deterministic per (seed, image, target, turn): reruns give the same trajectory."""
    digest = hashlib.sha256(np.ascontiguousarray(episode.image).data)
    digest.update(episode.target.encode())
    return np.random.default_rng([seed, int(digest.hexdigest()[:12], 16), len(episode.steps)])


def _need_gt(episode: Episode) -> np.ndarray:
    if episode.ground_truth is None:
        raise PolicyError("the expert policy needs the ground truth: pass ground_truth=")
    return episode.ground_truth


@attrs.define
class ExpertPolicy(Policy):
    """Simulated clinician: box (or first click), then ΔIoU-accepted corrective clicks."""

    first: str = attrs.field(default="box", validator=attrs.validators.in_(("box", "click")))
    box_jitter: float = 0.0
    tau: float = 0.01
    candidates: int = 5
    target_iou: float = 0.9
    seed: int = 0
    needs_ground_truth = True

    def act(self, episode: Episode) -> Reply:
        gt = _need_gt(episode)
        rng = episode_rng(self.seed, episode)
        if episode.prediction is None:
            return Reply(self._first_action(episode, gt, rng))
        current = metrics.iou(episode.prediction.mask, gt)
        if current >= self.target_iou:
            return Reply(self._stop(text.STOP_GOOD, episode, rng))
        return Reply(self._corrective_click(episode, gt, current, rng))

    def _first_action(self, episode: Episode, gt: np.ndarray, rng: np.random.Generator) -> str:
        size = episode.image_size
        where = text.where(*text.mask_center(gt), size[1], size[0])
        if self.first == "box":
            box = jitter_bbox(mask_bbox(gt), self.box_jitter, size, rng)
            why = text.pick(text.BOX, rng, target=episode.target, where=where)
            return protocol.bbox_action(box, size, why).raw_text
        point = clicker.next_click(gt, None)
        why = text.pick(text.FIRST_CLICK, rng, target=episode.target, where=where)
        return protocol.point_action(point, size, why).raw_text

    def _corrective_click(self, episode: Episode, gt: np.ndarray, current: float,
                          rng: np.random.Generator) -> str:
        size = episode.image_size
        clicked = _clicked_points(episode)
        for point in clicker.click_candidates(gt, episode.prediction.mask, clicked,
                                              self.candidates, rng):
            templates = text.POSITIVE if point.positive else text.NEGATIVE
            why = text.pick(templates, rng, target=episode.target,
                            where=text.where(point.x, point.y, size[1], size[0]))
            action = protocol.point_action(point, size, why)
            gain = metrics.iou(episode.preview(action).mask, gt) - current
            if gain >= self.tau:
                return action.raw_text
        return self._stop(text.STOP_STUCK, episode, rng)

    def _stop(self, templates: tuple[str, ...], episode: Episode, rng: np.random.Generator) -> str:
        return protocol.stop_action(text.pick(templates, rng, target=episode.target)).raw_text


def _clicked_points(episode: Episode) -> list[Point]:
    points = []
    for step in episode.steps:
        if step.action is not None and step.action.kind == "add_point":
            points.append(protocol.action_to_prompt(step.action, episode.image_size))
    return points


@attrs.define
class OracleBoxPolicy(Policy):
    """The baseline: one tight ground-truth box, then stop."""

    needs_ground_truth = True

    def act(self, episode: Episode) -> Reply:
        gt = _need_gt(episode)
        if episode.prediction is None:
            return Reply(protocol.bbox_action(mask_bbox(gt), episode.image_size).raw_text)
        return Reply(protocol.stop_action().raw_text)
