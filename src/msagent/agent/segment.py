"""Segmenting one image in one call: resolve the backbone and policy, check the inputs before
anything heavy loads, run one episode (with status lines on a terminal), and return the
:class:`Result`. The public :func:`msagent.segment` is this function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from msagent import _console, io
from msagent.agent import Agent
from msagent.agent.proposal import PROPOSAL, check_can_propose, wants_proposal
from msagent.agent.refine import check_initial_mask
from msagent.backbones.segmenter import Segmenter
from msagent.errors import InvalidTarget, SegmentationFailed
from msagent.plugins.loading import (
    PAPER_BACKBONE,
    check_ground_truth,
    load_backbone_for,
    load_policy_for,
    name_of,
)
from msagent.policies.base import Policy
from msagent.types import FINISHED, Trajectory, failure_message


@attrs.frozen(eq=False)
class Result:
    """What :func:`segment` returns: the final H×W bool ``mask`` and the full ``trajectory``.

    ``ok`` is True when the episode ended as designed (the policy stopped, or the turn limit
    was reached); False when it ended early (the policy failed or kept replying invalidly)
    after at least one mask, ``stop_reason`` and ``error`` saying why. An episode that ends
    with no mask at all raises :class:`~msagent.errors.SegmentationFailed` instead."""

    mask: np.ndarray
    trajectory: Trajectory

    @property
    def ok(self) -> bool:
        has_mask = self.trajectory.turns > 0 or getattr(self.trajectory, "initial", None) is not None
        return has_mask and self.stop_reason in FINISHED

    @property
    def stop_reason(self) -> str:
        """``stop``, ``max_turns``, ``policy_error``, ``invalid_output`` or ``stopped_without_mask``."""
        return self.trajectory.stop_reason

    @property
    def error(self) -> str | None:
        """The last reply's error when the episode did not end as designed, else None."""
        if self.ok:
            return None
        return next((s.error for s in reversed(self.trajectory.steps) if s.error), None)

    @property
    def turns(self) -> int:
        return self.trajectory.turns

    @property
    def iou(self) -> float | None:
        steps = self.trajectory.executed_steps
        return steps[-1].iou if steps else None

    @property
    def dice(self) -> float | None:
        steps = self.trajectory.executed_steps
        return steps[-1].dice if steps else None


def segment(image: Any, target: str, *, backbone: str | Segmenter | None = None,
            policy: str | Policy | None = None, ground_truth: Any = None, max_turns: int = 5,
            backbone_options: Mapping[str, Any] | None = None,
            policy_options: Mapping[str, Any] | None = None, max_pixels: int | None = None,
            initial_mask: Any = None, **agent_options: Any) -> Result:
    """Segment ``target`` in ``image`` with an agent.

    ``image``: a path (PNG/JPEG/TIFF/.npy), a PIL image or an array (gray, RGB, 16-bit or
    float: windowed, see :mod:`msagent.io`). ``backbone``/``policy``: a registered name or an
    instance; defaults from ``$MSAGENT_BACKBONE``/``$MSAGENT_POLICY``, then the paper's
    (medsam2 + qwen). ``ground_truth`` (same size) adds per-turn IoU/Dice and drives the
    ``expert``/``oracle-box`` policies. ``initial_mask`` (same size, binary; a path or an
    array) is a prediction to refine instead of starting from nothing (see
    :mod:`msagent.agent.refine`); ``result.trajectory.initial`` keeps it with its IoU/Dice.
    ``initial_mask="proposal"`` starts from the backbone's own mask for ``target`` (a backbone
    that can propose, e.g. ``sam3``; :mod:`msagent.agent.proposal`). Extra keyword options go to
    :class:`msagent.Agent`.
    """
    if not isinstance(target, str) or not target.strip():
        raise InvalidTarget("target must be a non-empty description, e.g. 'liver in abdomen CT'")
    rgb = io.to_rgb_uint8(image, max_pixels=max_pixels)
    gt = None if ground_truth is None else io.to_mask(ground_truth, rgb.shape[:2])
    if wants_proposal(initial_mask):  # the backbone proposes turn 0 from the target
        initial: Any = PROPOSAL
        check_can_propose(name_of(backbone, "MSAGENT_BACKBONE", PAPER_BACKBONE)
                          if backbone is None or isinstance(backbone, str) else backbone)
    else:
        initial = check_initial_mask(initial_mask, rgb.shape[:2])  # InvalidMask before loading
    check_ground_truth(policy, gt)  # before anything heavy loads
    agent_policy = load_policy_for(policy, policy_options or {})  # policies fail fast; first
    segmenter = load_backbone_for(backbone, backbone_options or {})
    agent = Agent(agent_policy, segmenter, max_turns=max_turns, **agent_options)
    trajectory = run_watched(agent, rgb, target.strip(), gt, initial_mask=initial)
    refined_nothing = trajectory.initial is not None and trajectory.stop_reason == "stop"
    if not trajectory.turns and not refined_nothing:  # a policy that judged the mask fine is ok
        raise SegmentationFailed(failure_message(trajectory), trajectory)
    return Result(mask=trajectory.final_mask, trajectory=trajectory)


def run_watched(agent: Agent, image: np.ndarray, *args: Any, **kwargs: Any) -> Trajectory:
    """``agent.run``; on a terminal (:mod:`msagent._console`) with a status line while the image
    encodes and one line per turn."""
    status = _console.Status()
    if not status.enabled:
        return agent.run(image, *args, **kwargs)
    if agent.segmenter.cache_info().maxsize > 0:  # the run's own encode is then a cache hit
        with status.step(f"encoding the image ({image.shape[1]}×{image.shape[0]})"):
            agent.segmenter.encode(image)
    return agent.run(image, *args, on_step=lambda step: status.line(_console.turn_text(step)),
                     **kwargs)


__all__ = ["Result", "run_watched", "segment"]
