"""Starting an episode from a proposal: the backbone's best mask for the target's description.

A backbone that declares ``can_propose`` (``sam3``; :meth:`msagent.Segmenter.propose`) turns
the description into candidate masks with no box or click. ``initial_mask="proposal"``
wherever an initial mask can be given starts the episode from the best candidate instead of an
uploaded mask: it is turn 0 of the trajectory (``trajectory.initial``, source
``proposal:<backbone>`` and the candidate's score), and the agent refines it. When no
candidate matches, the episode starts from nothing and ``trajectory.meta["proposal"]`` says
so. The proposal uses the episode's own embedding: no second encode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from msagent.backbones.segmenter import Embedding, Segmenter
from msagent.errors import InvalidInput
from msagent.plugins import factory_class, get_registry
from msagent.types import MaskPrediction

#: the value of ``initial_mask`` (API), ``--initial-mask`` / ``--refine-from`` (CLI) that asks
#: for a proposal
PROPOSAL = "proposal"


def wants_proposal(initial_mask: Any) -> bool:
    """Whether ``initial_mask`` asks for a proposal rather than giving a mask."""
    return isinstance(initial_mask, str) and initial_mask == PROPOSAL


def declares_proposals(cls: Any) -> bool | None:
    """Whether a backbone class declares ``can_propose`` (without loading it): None when the
    class decides per instance (a property, as the ``remote`` backbone asks its server)."""
    value = getattr(cls, "can_propose", False)
    if isinstance(value, property):
        return None
    return value is True


def proposing_backbones() -> list[str]:
    """The installed backbones that can propose a mask from text (without loading them)."""
    registry = get_registry()
    return sorted(name for name, registration in registry.registrations("segmenter").items()
                  if declares_proposals(factory_class(registration)))


def check_can_propose(segmenter: Segmenter | str) -> None:
    """InvalidInput naming the backbones that can, when ``segmenter`` (an instance, or a
    registered name: checked without loading it) cannot propose. An unknown name passes: loading
    it says so, with its hints."""
    if isinstance(segmenter, str):
        registrations = get_registry().registrations("segmenter")
        if segmenter not in registrations:
            return
        able, name = declares_proposals(factory_class(registrations[segmenter])), segmenter
        if able is None:  # decided once loaded (the remote backbone asks its server)
            return
    else:
        able, name = getattr(segmenter, "can_propose", False), segmenter.name or type(segmenter).__name__
    if able:
        return
    others = proposing_backbones()
    choices = f"installed backbones that can: {', '.join(others)}" if others else \
        "none is installed here (pip install msagent-sam3 for the sam3 backbone)"
    raise InvalidInput(f"backbone {name!r} cannot propose a mask from the target's description; "
                       f"{choices}")


@attrs.frozen(eq=False)
class Proposal:
    """The best candidate (``mask`` None when nothing matched), its score, how many candidates
    the backbone returned, and the source recorded on the trajectory."""

    mask: np.ndarray | None
    score: float | None
    candidates: int
    source: str

    def note(self, target: str) -> str:
        """What the trajectory's meta says about the proposal."""
        if self.mask is None:
            return (f"no candidate matched {target!r}: the episode started without an "
                    "initial mask")
        return f"best of {self.candidates} candidate(s), score {self.score:.3f}"

    def to_dict(self, target: str) -> dict[str, Any]:
        """What a server answers about the proposal (the mask travels on its own)."""
        score = None if self.score is None or not math.isfinite(self.score) else self.score
        return {"source": self.source, "matched": self.mask is not None, "score": score,
                "candidates": self.candidates, "note": self.note(target)}


def propose(segmenter: Segmenter, embedding: Embedding, target: str) -> Proposal:
    """The backbone's best non-empty candidate for ``target`` on ``embedding``."""
    check_can_propose(segmenter)
    return best_candidate(segmenter, segmenter.propose(embedding, target))


def best_candidate(segmenter: Segmenter, candidates: Sequence[MaskPrediction]) -> Proposal:
    """The first usable one of ``candidates`` (from ``segmenter.propose``, best first) as a
    :class:`Proposal`: some foreground, not all (an initial mask's rule,
    :mod:`msagent.agent.refine`). For callers that run ``propose`` themselves (the server
    runs it in its decode pool)."""
    source = f"{PROPOSAL}:{segmenter.name or type(segmenter).__name__}"
    best = next((c for c in candidates if np.asarray(c.mask).any() and not np.asarray(c.mask).all()),
                None)
    if best is None:
        return Proposal(None, None, len(candidates), source)
    return Proposal(np.asarray(best.mask, bool), float(best.score), len(candidates), source)


__all__ = ["PROPOSAL", "Proposal", "best_candidate", "check_can_propose", "declares_proposals",
           "propose", "proposing_backbones", "wants_proposal"]
