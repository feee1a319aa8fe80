"""What an evaluation runs and with which settings: the methods (an agent with a policy, or a
click protocol) and :class:`EvalConfig`, the settings that change results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from msagent.agent.proposal import PROPOSAL, wants_proposal
from msagent.errors import InvalidInput
from msagent.evaluation import protocols
from msagent.types import Case
from msagent.volume.propagation import METHODS as PROPAGATION_METHODS

PROTOCOLS = ("agent", "noc", "cvpr")


@attrs.frozen
class Method:
    """What drives the backbone: ``protocol`` "agent" with a ``policy`` (name or instance),
    or the click protocols "noc" / "cvpr" (no policy)."""

    protocol: str = attrs.field(validator=attrs.validators.in_(PROTOCOLS))
    policy: Any = None
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict, hash=False)

    @property
    def name(self) -> str:
        if self.protocol != "agent":
            return self.protocol
        return self.policy if isinstance(self.policy, str) else (self.policy.name or "policy")


def methods_from(policies: Sequence[Any] = (), protocols_: Sequence[str] = (),
                 policy_options: Mapping[str, Any] | None = None) -> list[Method]:
    """Agent methods for ``policies`` plus the click ``protocols_`` ("noc", "cvpr")."""
    out = [Method("agent", p, policy_options or {}) for p in policies]
    for name in protocols_:
        if name not in ("noc", "cvpr"):
            raise InvalidInput(f"unknown protocol {name!r}; use noc (RITM NoC@85/90) or cvpr "
                               "(CVPR 2025: box + 5 clicks)")
        out.append(Method(name))
    return out


@attrs.frozen
class EvalConfig:
    """Settings that change results (stored in ``run.json``; a resume must match them)."""

    max_turns: int = 5
    prompt_mode: str = "accumulate"
    multimask: bool | None = None
    max_clicks: int = 20
    noc_thresholds: tuple[float, ...] = attrs.field(default=protocols.NOC_THRESHOLDS, converter=tuple)
    noc_stop_iou: float | None = None
    cvpr_clicks: int = protocols.CVPR_CLICKS
    nsd_tolerance: float = 2.0
    # the refine protocol: agent episodes start from an initial mask (msagent.agent.refine):
    # "degrade:erode,dilate,...", a folder of predictions, or "proposal" (the backbone's own
    # proposal for the case's target, msagent.agent.proposal)
    refine_from: str | None = None
    refine_strength: float = 0.15
    refine_seed: int = 0
    # whole-volume cases (msagent.VolumeAgent, run_cvpr_3d)
    review_slices: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    propagation: str = attrs.field(default="auto", validator=attrs.validators.in_(PROPAGATION_METHODS))

    @property
    def refines_proposals(self) -> bool:
        """Whether agent episodes start from the backbone's proposal (``refine_from``
        "proposal")."""
        return wants_proposal(self.refine_from)

    def initial(self, case: Case) -> tuple[np.ndarray, str] | str | None:
        """The initial mask of ``case`` under the refine protocol (None without it): (mask,
        source), or :data:`~msagent.agent.proposal.PROPOSAL` when the episode asks the backbone
        for it (on the episode's own embedding)."""
        if self.refine_from is None:
            return None
        if self.refines_proposals:
            return PROPOSAL
        from msagent.agent.refine import initial_for_case

        return initial_for_case(case, self.refine_from, self.refine_strength, self.refine_seed)
