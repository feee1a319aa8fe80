"""The Policy contract: read the episode so far, answer with one tool call.

A policy returns a :class:`Reply` (its raw text, plus usage such as token counts and cost).
The agent parses the text with :func:`msagent.protocol.parse_action`, so every policy —
an LLM or the simulated expert — goes through the same protocol. I/O-bound policies
override :meth:`Policy.aact`; the default runs :meth:`Policy.act` in a worker thread.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
import numpy as np

from msagent.options import Option
from msagent.render import POLICY_IMAGE_SIZE
from msagent.types import Action, MaskPrediction, Step, _dict


@attrs.frozen
class Reply:
    """A policy's answer for one turn."""

    text: str
    usage: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict)


@attrs.define(eq=False)
class Episode:
    """What a policy sees of an episode: the agent loop updates it after each reply (``steps``,
    ``prediction``, ``feedback``); a policy reads it and must not change it.

    ``image`` is the original H×W×3 uint8 image; ``steps`` every reply so far. ``ground_truth``
    is set only when the caller gave one (the expert needs it). ``preview(action)`` decodes an
    action against the current state without committing it (the expert's ΔIoU test).
    ``feedback`` explains why the previous reply was rejected when the agent asks again.
    ``initial_mask`` is the mask the episode refines (then ``prediction`` starts as it).
    :meth:`policy_images` gives the images an LLM policy sees, each rendered once per episode.
    """

    id: str
    image: np.ndarray
    target: str
    max_turns: int
    steps: list[Step] = attrs.field(factory=list)
    ground_truth: np.ndarray | None = None
    prediction: MaskPrediction | None = None
    preview: Callable[[Action], MaskPrediction] | None = None
    feedback: str | None = None
    initial_mask: np.ndarray | None = None  # the prediction being refined (turn 0), if any
    _policy_images: dict[int, list] = attrs.field(factory=dict, init=False, repr=False)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.image.shape[:2]

    @property
    def executed_turns(self) -> int:
        return sum(1 for s in self.steps if s.executed)

    def history(self) -> list[tuple[Step, np.ndarray | None]]:
        """The valid replies in order, each with the mask it produced (None for a stop)."""
        return [(step, step.mask if step.executed else None) for step in self.steps
                if step.action is not None and step.error is None]

    def policy_images(self, size: int = POLICY_IMAGE_SIZE) -> list:
        """The policy's images at ``size``×``size`` (PIL): the original (with the initial mask's
        overlay when the episode refines one), then the overlay after each executed action
        (:func:`msagent.render.policy_image`). Each is rendered once per episode and reused on
        every later turn."""
        from msagent.render import policy_image

        images = self._policy_images.setdefault(size, [])
        masks = [step.mask for step in self.steps if step.executed]
        if not images:
            images.append(policy_image(self.image, self.initial_mask, size))
        for mask in masks[len(images) - 1:]:
            images.append(policy_image(self.image, mask, size))
        return images[:len(masks) + 1]


class Policy(ABC):
    """Decides the next tool call. Stateless policies need only :meth:`act`."""

    #: registered name, set by the plugin
    name: str = ""
    #: True if :meth:`act` needs ``episode.ground_truth`` (simulated experts)
    needs_ground_truth: bool = False
    #: the constructor options an API client of ``msagent serve`` may set, with their types
    #: and bounds (:class:`msagent.options.Option`); every other option is the operator's
    client_options: ClassVar[Mapping[str, Option]] = {}

    @abstractmethod
    def act(self, episode: Episode) -> Reply:
        """Return the reply (rationale + one ``<tool_call>``) for the next turn."""

    async def aact(self, episode: Episode) -> Reply:
        """Async variant; the default runs :meth:`act` in a thread."""
        return await asyncio.to_thread(self.act, episode)

    def end_episode(self, episode: Episode) -> None:
        """Release any per-episode state (KV caches, sessions). Called once per episode."""
