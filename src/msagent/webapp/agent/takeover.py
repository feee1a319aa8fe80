"""Taking over a run by hand: the session seeded from a run's first steps remembers where it came
from, and a session's undo stack becomes a trajectory (agent steps and human ones)."""

from __future__ import annotations

from typing import Any, cast

import attrs
import numpy as np

from msagent import metrics, protocol
from msagent._lru import BoundedLRU
from msagent.types import BBox, InitialMask, Prompts, Step, Trajectory
from msagent.webapp.agent.runs import RunRecord
from msagent.webapp.agent.streaming import _finite


@attrs.frozen
class SessionOrigin:
    """Where a session started: the run and how many of its steps were replayed."""

    run_id: str
    steps: int
    prompts: tuple[Prompts, ...]  # the prompts in force after each replayed action


class OriginStore:
    """Session id → :class:`SessionOrigin` for sessions seeded from a run (the newest
    ``max_items``)."""

    def __init__(self, max_items: int = 1024) -> None:
        self.max_items = max_items
        self._items: BoundedLRU[str, SessionOrigin] = BoundedLRU(max_items)

    def put(self, session_id: str, origin: SessionOrigin) -> None:
        self._items.put(session_id, origin)

    def get(self, session_id: str) -> SessionOrigin | None:
        return self._items.peek(session_id)


def session_trajectory(states: list, image_size: tuple[int, int], target: str, *,
                       run: RunRecord | None = None, origin: SessionOrigin | None = None,
                       image_id: str = "", ground_truth: np.ndarray | None = None,
                       initial: np.ndarray | None = None, initial_source: str = "session",
                       initial_score: float | None = None) -> Trajectory:
    """A Trajectory of a session's undo stack (``states``: its EpisodeStates, oldest first).

    Each state is one step: the action is the prompt it added (for a state pushed by a whole
    prompt set, upstream's ``/session/segment``, its box or else its newest click). States that
    a run replayed keep the agent's reply text; the others are marked
    ``usage["source"] = "human"``. IoU/Dice come from ``ground_truth`` when given. ``initial``
    (the session's starting mask) is turn 0, with ``initial_source`` and ``initial_score``
    (a proposal's).
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
    meta: dict[str, Any] = {"source": "session"}
    if run is not None and origin is not None:
        meta.update(run.trajectory.meta, source="agent+human", run_id=run.id,
                    takeover_after_steps=origin.steps)
    start = None if initial is None else InitialMask(
        initial, None if ground_truth is None else metrics.iou(initial, ground_truth),
        None if ground_truth is None else metrics.dice(initial, ground_truth), initial_source,
        initial_score)
    return Trajectory(target=target, image_size=cast(tuple[int, int], tuple(image_size)), steps=tuple(steps),
                      stop_reason="human", image_sha256=image_id, meta=meta, initial=start)


def _replayed_texts(run: RunRecord | None, origin: SessionOrigin | None) -> dict[int, str]:
    if run is None or origin is None:
        return {}
    executed = [s for s in run.trajectory.steps[:origin.steps] if s.executed]
    return {i: s.raw_text for i, s in enumerate(executed)}
