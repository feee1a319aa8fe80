"""One 3-D run as a value: its episodes, how the key slice was chosen, what propagation gave.

A :class:`VolumeTrajectory` serializes to JSON losslessly (masks as run-length codes, every
episode a full :class:`~msagent.types.Trajectory`), so a run can be replayed, inspected, scored
again or exported as training data (:func:`msagent.export.volume_conversations`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from .types import Trajectory, decode_mask, encode_mask

ROLES = ("survey", "key", "review")


@attrs.frozen(eq=False)
class VolumeEpisode:
    """One episode of a 3-D run on slice ``slice``.

    ``role``: "survey" (a first action on a candidate key slice), "key" (the full episode on
    the key slice) or "review" (a correction of a propagated slice). ``trajectory`` is the
    episode (None for a review the expert settled without one: ``decision`` "no_target", the
    slice has no target). ``seeded``: its result became a seed and was propagated. ``reason``
    says why a review slice was chosen."""

    slice: int
    role: str = attrs.field(validator=attrs.validators.in_(ROLES))
    trajectory: Trajectory | None = None
    seeded: bool = False
    reason: str = ""
    decision: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"slice": self.slice, "role": self.role, "seeded": self.seeded,
                "reason": self.reason, "decision": self.decision,
                "trajectory": None if self.trajectory is None else self.trajectory.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VolumeEpisode":
        trajectory = data.get("trajectory")
        return cls(int(data["slice"]), data["role"],
                   None if trajectory is None else Trajectory.from_dict(trajectory),
                   bool(data.get("seeded", False)), data.get("reason", ""), data.get("decision", ""))


@attrs.frozen(eq=False)
class VolumeTrajectory:
    """A finished 3-D run.

    ``shape`` is (slices, height, width) in display order and ``where`` how the slices were
    taken ("axial", "axis 0"); ``spacing`` (slice, row, column) in mm. ``key_slice`` and
    ``key_rule`` ("given", "largest_gt_area", "survey") say where the agent started;
    ``episodes`` are in the order they ran; ``masks`` the final result per slice (slices
    without target absent); ``scores`` the backbone's predicted score per slice (NaN for
    seeds made by an episode). ``counts``: encodes, decodes, episodes; ``timings``: seconds.
    """

    target: str
    shape: tuple[int, int, int]
    where: str
    spacing: tuple[float, float, float]
    key_slice: int
    key_rule: str
    propagation: str
    episodes: tuple[VolumeEpisode, ...] = ()
    masks: Mapping[int, np.ndarray] = attrs.field(factory=dict)
    scores: Mapping[int, float] = attrs.field(factory=dict)
    counts: Mapping[str, int] = attrs.field(factory=dict)
    timings: Mapping[str, float] = attrs.field(factory=dict)
    case_id: str = ""
    meta: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    @property
    def seeds(self) -> list[int]:
        """The slices whose result an episode fixed, in the order they were seeded."""
        return [e.slice for e in self.episodes if e.seeded]

    def final_masks(self) -> np.ndarray:
        """The result as a slices × H × W bool array (display order)."""
        out = np.zeros(self.shape, dtype=bool)
        for index, mask in self.masks.items():
            out[index] = mask
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "shape": list(self.shape), "where": self.where,
            "spacing": list(self.spacing), "key_slice": self.key_slice, "key_rule": self.key_rule,
            "propagation": self.propagation,
            "episodes": [e.to_dict() for e in self.episodes],
            "masks": {str(i): encode_mask(m) for i, m in sorted(self.masks.items())},
            "scores": {str(i): _finite_or_none(s) for i, s in sorted(self.scores.items())},
            "counts": dict(self.counts), "timings": dict(self.timings),
            "case_id": self.case_id, "meta": dict(self.meta),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VolumeTrajectory":
        return cls(
            target=data["target"], shape=tuple(data["shape"]), where=data["where"],
            spacing=tuple(float(v) for v in data["spacing"]), key_slice=int(data["key_slice"]),
            key_rule=data["key_rule"], propagation=data["propagation"],
            episodes=tuple(VolumeEpisode.from_dict(e) for e in data.get("episodes", ())),
            masks={int(i): decode_mask(m) for i, m in data.get("masks", {}).items()},
            scores={int(i): float("nan") if s is None else float(s)
                    for i, s in data.get("scores", {}).items()},
            counts=dict(data.get("counts", {})), timings=dict(data.get("timings", {})),
            case_id=data.get("case_id", ""), meta=data.get("meta", {}),
        )

    @classmethod
    def from_json(cls, text: str) -> "VolumeTrajectory":
        return cls.from_dict(json.loads(text))


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
