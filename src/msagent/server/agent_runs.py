"""Agent runs for the web page: stream an episode's turns, keep finished runs, and rebuild a
trajectory from an edited session. No FastAPI here (see :mod:`.agent_routes`).

A run is one :class:`msagent.Agent` episode on a stored image with the server's shared
segmenter (so its embedding cache). It runs in a worker thread; each step is handed to an
``emit`` callback as soon as the policy is asked for the next one (and the last after the
episode ends), so a page can draw turns while the policy thinks. Turns are JSON-ready dicts:
the action (tool arguments in the 0–999 frame), the pixel prompt
(:func:`msagent.protocol.action_to_prompt`), the rationale (the text before ``<tool_call>``),
the mask (:func:`msagent.types.encode_mask`), score and IoU/Dice when a ground truth was given.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np

from .. import metrics, protocol
from ..errors import PolicyError
from ..options import Option, client_options, split_pairs
from ..plugins import factory_class, get_registry
from ..policy import Episode, Policy, Reply
from ..types import BBox, Point, Prompts, Step, Trajectory, encode_mask
from .errors import ServerError

MAX_RUNS = 64
MAX_POLICIES = 4


class RunNotFound(ServerError):
    status, code = 404, "run_not_found"


class MissingWeights(ServerError):
    """A policy (or backbone) whose weights are not on this machine."""

    status, code = 503, "weights_not_found"


@attrs.frozen(eq=False)
class RunRecord:
    """A finished run: the trajectory and what it ran on."""

    id: str
    image_id: str
    trajectory: Trajectory
    ground_truth: np.ndarray | None = None
    created: float = attrs.field(factory=time.time)

    def prompts_after(self, steps: int) -> list[BBox | Point]:
        """The pixel prompts of the executed actions among the first ``steps`` steps."""
        return [s.prompt for s in self.trajectory.steps[:steps] if s.executed]

    def mask_after(self, steps: int) -> np.ndarray | None:
        executed = [s for s in self.trajectory.steps[:steps] if s.executed]
        return executed[-1].mask if executed else None


class RunStore:
    """Finished runs by id, the most recent ``max_items``."""

    def __init__(self, max_items: int = MAX_RUNS) -> None:
        self.max_items = max_items
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, record: RunRecord) -> None:
        with self._lock:
            self._runs[record.id] = record
            while len(self._runs) > self.max_items:
                self._runs.popitem(last=False)

    def get(self, run_id: str) -> RunRecord:
        with self._lock:
            record = self._runs.get(run_id)
        if record is None:
            raise RunNotFound(f"no agent run {run_id!r} on this server (the server keeps the last "
                              f"{self.max_items} runs); run the agent again")
        return record


@attrs.define(eq=False)
class PooledPolicy:
    policy: Policy
    lock: threading.Lock = attrs.field(factory=threading.Lock)  # one episode at a time


class PolicyPool:
    """Loaded policies by (name, options), the most recent ``max_items`` (an LLM policy loads
    once, not per run). Episodes of one policy instance run one at a time."""

    def __init__(self, max_items: int = MAX_POLICIES) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, PooledPolicy] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, options: dict[str, Any]) -> PooledPolicy:
        """Load (or reuse) policy ``name``; blocking, so call it from a worker thread."""
        key = json.dumps([name, options], sort_keys=True, default=str)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:
            pooled = PooledPolicy(get_registry().load("policy", name, **options))
        except FileNotFoundError as exc:  # WeightsNotFound and friends
            raise MissingWeights(f"policy {name!r} cannot load its weights: {exc}") from None
        except TypeError as exc:
            raise PolicyError(f"policy {name!r} rejected its options {options}: {exc}") from None
        with self._lock:
            self._items[key] = pooled
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return pooled


def policy_listing() -> list[dict[str, Any]]:
    """Registered policies with their description, whether they need a ground truth and the
    options an API client may set (null where the plugin's class cannot be imported)."""
    out = []
    for name, reg in sorted(get_registry().registrations("policy").items()):
        cls = factory_class(reg)
        out.append({"name": name, "package": reg.package, "version": reg.version,
                    "description": reg.description,
                    "needs_ground_truth": None if cls is None else bool(cls.needs_ground_truth),
                    "client_options": None if cls is None else
                    {k: o.to_dict() for k, o in sorted(_declared(cls).items())}})
    return out


def run_options(name: str, text: str, operator: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The options policy ``name`` is built with for an API client: the operator's options for
    it, plus the client's ``KEY=VALUE`` text checked against the policy's ``client_options``
    (:class:`msagent.options.InvalidOption` for anything else). Blocking (may import the
    plugin's module), so call it from a worker thread."""
    cls = factory_class(get_registry().get("policy", name))
    given = split_pairs(text)
    checked = client_options(name, {} if cls is None else _declared(cls), given)
    return {**operator.get(name, {}), **checked}


def _declared(cls: type) -> Mapping[str, Option]:
    declared = getattr(cls, "client_options", {})
    return declared if isinstance(declared, Mapping) else {}


def segmenter_listing(served: str) -> list[dict[str, Any]]:
    return [{"name": name, "package": reg.package, "version": reg.version,
             "description": reg.description, "served": name == served}
            for name, reg in sorted(get_registry().registrations("segmenter").items())]


# -- streaming ---------------------------------------------------------------------------
class StreamingPolicy(Policy):
    """Wraps a policy: hands each new step to ``emit`` when the next action is asked for, and
    stops the episode (a policy error) once ``cancel`` is set."""

    def __init__(self, inner: Policy, emit: Callable[[Step], None], cancel: threading.Event) -> None:
        self.inner, self.emit, self.cancel = inner, emit, cancel
        self.name = inner.name
        self.needs_ground_truth = inner.needs_ground_truth
        self.sent = 0

    def flush(self, steps: list[Step]) -> None:
        for step in steps[self.sent:]:
            self.emit(step)
        self.sent = len(steps)

    def act(self, episode: Episode) -> Reply:
        self.flush(episode.steps)
        if self.cancel.is_set():
            raise PolicyError("the run was cancelled (the page closed or stopped it)")
        return self.inner.act(episode)

    def end_episode(self, episode: Episode) -> None:
        self.inner.end_episode(episode)


def rationale(text: str) -> str:
    """The reply's text before its ``<tool_call>`` (all of it when there is none)."""
    return text.split("<tool_call>", 1)[0].strip()


def prompt_json(prompt: BBox | Point | None) -> dict[str, Any] | None:
    if isinstance(prompt, BBox):
        return {"box": {"x1": prompt.x1, "y1": prompt.y1, "x2": prompt.x2, "y2": prompt.y2}}
    if isinstance(prompt, Point):
        return {"point": {"x": prompt.x, "y": prompt.y, "label": prompt.label}}
    return None


def prompts_json(prompts: Prompts) -> dict[str, Any]:
    return {"box": None if prompts.box is None else prompt_json(prompts.box)["box"],
            "points": [prompt_json(p)["point"] for p in prompts.points]}


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


class TurnEncoder:
    """Step → JSON turn: the action, the pixel prompt it added and the prompts in force (as the
    episode core recorded them on the step), the mask, score and IoU/Dice."""

    def encode(self, step: Step) -> dict[str, Any]:
        action = step.action
        return {
            "type": "turn", "index": step.index, "raw_text": step.raw_text,
            "rationale": rationale(step.raw_text),
            "action": None if action is None else {"kind": action.kind,
                                                   "arguments": dict(action.arguments)},
            "error": step.error, "executed": step.executed,
            "prompt": prompt_json(step.prompt) if step.executed else None,
            "prompts": prompts_json(step.prompts) if step.executed and step.prompts else None,
            "mask": None if step.mask is None else encode_mask(step.mask),
            "area": None if step.mask is None else int(np.count_nonzero(step.mask)),
            "score": _finite(step.score), "iou": _finite(step.iou), "dice": _finite(step.dice),
            "usage": {k: v for k, v in step.usage.items() if isinstance(v, (int, float, str))},
        }


# -- sessions → trajectories ---------------------------------------------------------------
@attrs.frozen
class SessionOrigin:
    """Where a session started: the run and how many of its steps were replayed."""

    run_id: str
    steps: int
    prompts: tuple[Prompts, ...]  # the prompts in force after each replayed action


class OriginStore:
    """Session id → :class:`SessionOrigin` for sessions seeded from a run (bounded)."""

    def __init__(self, max_items: int = 1024) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, SessionOrigin] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, session_id: str, origin: SessionOrigin) -> None:
        with self._lock:
            self._items[session_id] = origin
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def get(self, session_id: str) -> SessionOrigin | None:
        with self._lock:
            return self._items.get(session_id)


def session_trajectory(states: list, image_size: tuple[int, int], target: str, *,
                       run: RunRecord | None = None, origin: SessionOrigin | None = None,
                       image_id: str = "", ground_truth: np.ndarray | None = None) -> Trajectory:
    """A Trajectory of a session's undo stack (``states``: its EpisodeStates, oldest first).

    Each state is one step: the action is the prompt it added (for a state pushed by a whole
    prompt set, upstream's ``/session/segment``, its box or else its newest click). States that
    a run replayed keep the agent's reply text; the others are marked
    ``usage["source"] = "human"``. IoU/Dice come from ``ground_truth`` when given.
    """
    replayed = _replayed_texts(run, origin)
    steps = []
    for index, state in enumerate(states):
        prompt = state.added or state.prompts.box or state.prompts.points[-1]
        action = (protocol.bbox_action(prompt, image_size) if isinstance(prompt, BBox)
                  else protocol.point_action(prompt, image_size))
        pixel_prompts = attrs.evolve(state.prompts, text=None)
        agent_text = replayed.get(index) if origin is not None and index < len(origin.prompts) \
            and origin.prompts[index] == pixel_prompts else None
        mask = state.prediction.mask
        steps.append(Step(
            index, agent_text or action.raw_text, action, mask=mask,
            score=_finite(state.prediction.score),
            iou=None if ground_truth is None else metrics.iou(mask, ground_truth),
            dice=None if ground_truth is None else metrics.dice(mask, ground_truth),
            usage={"source": "agent" if agent_text else "human"}, prompt=prompt,
            prompts=pixel_prompts))
    meta = {"source": "session"}
    if run is not None and origin is not None:
        meta.update(run.trajectory.meta, source="agent+human", run_id=run.id,
                    takeover_after_steps=origin.steps)
    return Trajectory(target=target, image_size=tuple(image_size), steps=tuple(steps),
                      stop_reason="human", image_sha256=image_id, meta=meta)


def _replayed_texts(run: RunRecord | None, origin: SessionOrigin | None) -> dict[int, str]:
    if run is None or origin is None:
        return {}
    executed = [s for s in run.trajectory.steps[:origin.steps] if s.executed]
    return {i: s.raw_text for i, s in enumerate(executed)}
