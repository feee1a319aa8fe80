"""The simulated clinician (``expert``) and the one-box baseline (``oracle-box``).

Both read ``episode.ground_truth``. The expert's first action is a box around the ground
truth (optionally jittered) or, with ``first="click"``, a positive click at its interior
maximum; then corrective clicks (:mod:`msagent.clicker`). A click is taken only if its
previewed IoU gain is at least ``tau``; otherwise the next candidate is tried, up to
``candidates`` of them. With ``first_tries > 1`` the first action is tested the same way
(IoU of the previewed mask at least ``tau``), drawing a new jittered box (or another interior
click) for each try. The expert stops at ``target_iou``, when no candidate helps, or after
``max_actions`` executed actions.

Each reply's ``usage`` records ``expert_previews`` (candidate decodes spent on the turn) and
``expert_accepted`` (1 when the action passed the ΔIoU test, 0 when the expert gave up), so a
trajectory set can report its acceptance rate.
"""

from __future__ import annotations

import hashlib

import attrs
import numpy as np

from msagent import clicker, metrics, protocol
from msagent.errors import PolicyError, PolicyOutputError
from msagent.options import Option
from msagent.policies import rationale as text
from msagent.policies.base import Episode, Policy, Reply
from msagent.types import Action, BBox, Point


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
    first_tries: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    max_actions: int | None = None
    needs_ground_truth = True
    # every option is safe for an API client; the bounds keep one turn's previews bounded
    client_options = {
        "first": Option(str, choices=("box", "click"), help="the first action"),
        "box_jitter": Option(float, 0.0, 1.0, help="box jitter, as a fraction of its side"),
        "tau": Option(float, 0.0, 1.0, help="ΔIoU a corrective click must gain"),
        "candidates": Option(int, 1, 50, help="clicks previewed per turn"),
        "target_iou": Option(float, 0.0, 1.0, help="stop once IoU reaches this"),
        "seed": Option(int, 0, 2**32 - 1),
        "first_tries": Option(int, 1, 20, help="first actions previewed"),
        "max_actions": Option(int, 1, 100, optional=True),
    }

    def act(self, episode: Episode) -> Reply:
        gt = _need_gt(episode)
        rng = episode_rng(self.seed, episode)
        if episode.prediction is None:
            return self._first_action(episode, gt, rng)
        current = metrics.iou(episode.prediction.mask, gt)
        if current >= self.target_iou:
            return _reply(self._stop(text.STOP_GOOD, episode, rng), 0, None)
        if self.max_actions is not None and episode.executed_turns >= self.max_actions:
            return _reply(self._stop(text.STOP_BUDGET, episode, rng), 0, None)
        return self._corrective_click(episode, gt, current, rng)

    def _first_action(self, episode: Episode, gt: np.ndarray, rng: np.random.Generator) -> Reply:
        size = episode.image_size
        tight = mask_bbox(gt)
        if self.first == "box" and not _degenerate(protocol.bbox_action(tight, size), size):
            proposals = [jitter_bbox(tight, self.box_jitter, size, rng) for _ in range(self.first_tries)]
            actions = [protocol.bbox_action(box, size) for box in proposals]
        else:  # clicks; also for a target too thin to box (a box of zero width or height)
            clicks = clicker.click_candidates(gt, None, (), self.first_tries, rng)
            actions = [protocol.point_action(point, size) for point in clicks]
        previews = 0
        chosen: Action | None
        chosen = actions[0]
        if self.first_tries > 1:
            assert episode.preview is not None, "the expert previews its candidates"
            chosen = None
            for action in actions:
                previews += 1
                if metrics.iou(episode.preview(action).mask, gt) >= self.tau:
                    chosen = action
                    break
            if chosen is None:
                return _reply(self._stop(text.STOP_NO_START, episode, rng), previews, False)
        facts = {"target": episode.target, "where": text.where(*text.mask_center(gt), size[1], size[0]),
                 "size": text.size_word(float(gt.mean()))}
        why = text.pick(text.BOX if chosen.kind == "add_bbox" else text.FIRST_CLICK, rng, **facts)
        return _reply(protocol.format_action(chosen, why), previews, True if previews else None)

    def _corrective_click(self, episode: Episode, gt: np.ndarray, current: float,
                          rng: np.random.Generator) -> Reply:
        size = episode.image_size
        clicked = _clicked_points(episode)
        tried = 0
        if episode.initial_mask is not None and not episode.executed_turns and self.first == "box":
            # refining: redrawing the box (over the initial mask's logits) is the first candidate
            box = jitter_bbox(mask_bbox(gt), self.box_jitter, size, rng)
            action, tried = protocol.bbox_action(box, size), 1
            assert episode.preview is not None, "the expert previews its candidates"
            if not _degenerate(action, size) and \
                    metrics.iou(episode.preview(action).mask, gt) - current >= self.tau:
                facts = {"target": episode.target, "size": text.size_word(float(gt.mean())),
                         "where": text.where(*text.mask_center(gt), size[1], size[0])}
                return _reply(protocol.format_action(action, text.pick(text.BOX, rng, **facts)), 1, True)
        assert episode.preview is not None and episode.prediction is not None, "a corrective click"
        for point in clicker.click_candidates(gt, episode.prediction.mask, clicked,
                                              self.candidates, rng):
            tried += 1
            action = protocol.point_action(point, size)
            gain = metrics.iou(episode.preview(action).mask, gt) - current
            if gain >= self.tau:
                why = _click_rationale(point, gt, episode, rng)
                return _reply(protocol.format_action(action, why), tried, True)
        stuck = text.STOP_STUCK_CLOSE if current >= text.CLOSE_IOU else text.STOP_STUCK
        return _reply(self._stop(stuck, episode, rng), tried, False)

    def _stop(self, templates: tuple[str, ...], episode: Episode, rng: np.random.Generator) -> str:
        return protocol.stop_action(text.pick(templates, rng, target=episode.target)).raw_text


def _degenerate(action, size: tuple[int, int]) -> bool:
    """True for a box that maps to zero pixel width or height (the protocol refuses it)."""
    try:
        protocol.check_prompt(action, size)
    except PolicyOutputError:
        return True
    return False


def _reply(raw_text: str, previews: int, accepted: bool | None) -> Reply:
    """A reply whose usage says how many candidates were decoded and whether one passed."""
    usage = {"expert_previews": previews}
    if accepted is not None:
        usage["expert_accepted"] = int(accepted)
    return Reply(raw_text, usage)


def _click_rationale(point: Point, gt: np.ndarray, episode: Episode,
                     rng: np.random.Generator) -> str:
    """The rationale of a corrective click: where its error region lies and how large it is."""
    height, width = episode.image_size
    assert episode.prediction is not None, "a corrective click"
    pred = episode.prediction.mask
    region = (gt & ~pred) if point.positive else (pred & ~gt)
    fraction = text.region_fraction(region, point.x, point.y, int(gt.sum()))
    return text.pick(text.POSITIVE if point.positive else text.NEGATIVE, rng,
                     target=episode.target, where=text.where(point.x, point.y, width, height),
                     extent=text.extent_word(fraction))


def _clicked_points(episode: Episode) -> list[Point]:
    """Every click made so far (in either prompt mode), in pixel XY."""
    return [step.prompt for step in episode.steps if isinstance(step.prompt, Point)]


@attrs.define
class OracleBoxPolicy(Policy):
    """The baseline: one tight ground-truth box, then stop (also when refining a mask: the box
    is its one action)."""

    needs_ground_truth = True

    def act(self, episode: Episode) -> Reply:
        gt = _need_gt(episode)
        if not episode.executed_turns:
            return Reply(protocol.bbox_action(mask_bbox(gt), episode.image_size).raw_text)
        return Reply(protocol.stop_action().raw_text)
