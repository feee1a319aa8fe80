"""One 3-D run as a value: its episodes, how the key slice was chosen, what propagation gave.

A :class:`VolumeTrajectory` serializes to JSON losslessly (masks as run-length codes, every
episode a full :class:`~msagent.types.Trajectory`), so a run can be replayed, inspected, scored
again or turned into training data (:mod:`msagent.generation.volumes` writes its episodes as
a trajectory set, which ``msagent export`` turns into training rows).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from msagent.errors import InvalidImage, InvalidInput
from msagent.io.limits import check_voxels
from msagent.types import Trajectory, decode_mask, encode_mask

ROLES = ("survey", "key", "review")


@attrs.frozen(eq=False)
class VolumeEpisode:
    """One episode of a 3-D run on slice ``slice``.

    ``role``: "survey" (a first action on a candidate key slice), "key" (the full episode on
    the key slice) or "review" (a correction of a propagated slice). ``trajectory`` is the
    episode (None for a review the expert settled without one: ``decision`` "no_target", the
    slice has no target). ``seeded``: its result became a seed and was propagated. ``reason``
    says why a review slice was chosen. What a seeded episode did to the volume:
    ``slices_changed``, the slices whose mask its propagation changed (its own included), and
    ``dice_after``, the 3-D Dice after it when the run had a ground truth (measured only:
    nothing in the run reads it)."""

    slice: int
    role: str = attrs.field(validator=attrs.validators.in_(ROLES))
    trajectory: Trajectory | None = None
    seeded: bool = False
    reason: str = ""
    decision: str = ""
    slices_changed: int = 0
    dice_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"slice": self.slice, "role": self.role, "seeded": self.seeded,
                "reason": self.reason, "decision": self.decision,
                "slices_changed": self.slices_changed, "dice_after": self.dice_after,
                "trajectory": None if self.trajectory is None else self.trajectory.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VolumeEpisode":
        trajectory = data.get("trajectory")
        index, seeded = data["slice"], data.get("seeded", False)
        if not _is_int(index) or index < 0 or not isinstance(seeded, bool):
            raise InvalidVolumeTrajectory(f"an episode's slice must be a whole number ≥ 0 and "
                                          f"seeded true or false, got {index!r:.40}, {seeded!r:.40}")
        changed, dice = data.get("slices_changed", 0), data.get("dice_after")
        if not _is_int(changed) or changed < 0:
            raise InvalidVolumeTrajectory(f"an episode's slices_changed must be a whole number "
                                          f"≥ 0, got {changed!r:.40}")
        if dice is not None and not (_is_number(dice) and 0 <= dice <= 1):
            raise InvalidVolumeTrajectory(f"an episode's dice_after must be a number in [0, 1] "
                                          f"or null, got {dice!r:.40}")
        return cls(index, data["role"],
                   None if trajectory is None else Trajectory.from_dict(trajectory),
                   seeded, _text(data.get("reason", "")), _text(data.get("decision", "")),
                   changed, None if dice is None else float(dice))


@attrs.frozen(eq=False)
class VolumeTrajectory:
    """A finished 3-D run.

    ``shape`` is (slices, height, width) in display order and ``where`` how the slices were
    taken ("axial", "axis 0"); ``spacing`` (slice, row, column) in mm. ``key_slice`` and
    ``key_rule`` ("given", "largest_gt_area", "survey", "proposal") say where the agent started
    (the proposal rule's search: ``meta["key_proposals"]``, slice → its best proposal's score,
    None where nothing matched; ``counts["proposals"]``);
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
    def from_dict(cls, data: Mapping[str, Any], *, max_voxels: int | None = None) -> "VolumeTrajectory":
        """The run :meth:`to_dict` wrote. Anything else is :class:`InvalidVolumeTrajectory`:
        the shape is checked against the voxel limit (``max_voxels``, see
        :mod:`msagent.io.limits`) and every mask's run-length code against the slice size
        before it is decoded; every mask it decodes (the result's and the episodes') counts
        against that one limit together, so a small file cannot claim more than the limit.
        Slice numbers (the key slice, episodes', masks', scores') are whole numbers in
        0..slices-1; spacing is three finite positive numbers; scores are finite numbers or
        null; counts whole numbers ≥ 0; timings finite numbers."""
        try:
            shape = _shape(data["shape"], max_voxels)
            size = shape[1:]
            episodes = _list(data.get("episodes", []), "episodes")
            rles = _mapping(data.get("masks", {}), "masks")
            pixels = len(rles) * size[0] * size[1]  # every mask, decoded, before any is
            for episode in episodes:
                _slice_number(_mapping(episode, "an episode").get("slice"), shape[0], "an episode")
                pixels += _check_episode_masks(episode, size)
            check_voxels((max(pixels, 1),), 1, "the run's masks (result and episodes)", max_voxels)
            masks = {}
            for key, rle in rles.items():
                masks[_slice_key(key, shape[0])] = _checked_mask(rle, size)
            return cls(
                target=_text(data["target"]), shape=shape, where=_text(data["where"]),
                spacing=_spacing(data["spacing"]),
                key_slice=_slice_number(data["key_slice"], shape[0], "key_slice"),
                key_rule=_text(data["key_rule"]), propagation=_text(data["propagation"]),
                episodes=tuple(VolumeEpisode.from_dict(e) for e in episodes),
                masks=masks,
                scores={_slice_key(i, shape[0]): _score(s)
                        for i, s in _mapping(data.get("scores", {}), "scores").items()},
                counts=_numbers(data.get("counts", {}), "counts", whole=True),
                timings=_numbers(data.get("timings", {}), "timings", whole=False),
                case_id=_text(data.get("case_id", "")),
                meta=_mapping(data.get("meta", {}), "meta"),
            )
        except InvalidVolumeTrajectory:
            raise
        except InvalidImage as exc:  # the voxel limit
            raise InvalidVolumeTrajectory(f"not a 3-D run: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
            what = str(exc.args[0] if exc.args else type(exc).__name__)[:200]
            what = f"no {what!r}" if isinstance(exc, KeyError) else what
            raise InvalidVolumeTrajectory(f"not a 3-D run as VolumeTrajectory.to_json writes "
                                          f"it: {what}") from None

    @classmethod
    def from_json(cls, text: str | bytes, *, max_voxels: int | None = None) -> "VolumeTrajectory":
        try:
            data = json.loads(text)
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidVolumeTrajectory(f"not JSON: {str(exc)[:200]}") from None
        if not isinstance(data, Mapping):
            raise InvalidVolumeTrajectory(f"a 3-D run is a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, max_voxels=max_voxels)


class InvalidVolumeTrajectory(InvalidInput):
    """A serialized 3-D run that :meth:`VolumeTrajectory.from_json` cannot read."""


def _shape(value: Any, max_voxels: int | None) -> tuple[int, int, int]:
    if not isinstance(value, list) or len(value) != 3 or not all(_is_int(n) and n >= 1 for n in value):
        raise InvalidVolumeTrajectory(f"shape must be three positive whole numbers, got {value!r:.100}")
    check_voxels(value, 1, "the run's shape", max_voxels)
    return tuple(value)


def _spacing(value: Any) -> tuple[float, float, float]:
    values = _list(value, "spacing")
    if len(values) != 3 or not all(_is_number(v) and math.isfinite(v) and v > 0 for v in values):
        raise InvalidVolumeTrajectory(f"spacing must be three finite positive numbers (mm), "
                                      f"got {value!r:.100}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]  # three, checked


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _slice_number(value: Any, count: int, what: str) -> int:
    if not _is_int(value) or not 0 <= value < count:
        raise InvalidVolumeTrajectory(f"{what}: slice {value!r:.40} is not a whole number in the "
                                      f"run's slices 0..{count - 1}")
    return int(value)


def _score(value: Any) -> float:
    if value is None:
        return float("nan")  # to_dict writes a seed's NaN score as null
    if not _is_number(value) or not math.isfinite(value):
        raise InvalidVolumeTrajectory(f"a score must be a finite number or null, got {value!r:.40}")
    return float(value)


def _numbers(value: Any, what: str, *, whole: bool) -> dict[str, Any]:
    out = dict(_mapping(value, what))
    for key, number in out.items():
        good = (_is_int(number) and number >= 0) if whole else \
            (_is_number(number) and math.isfinite(number))
        if not isinstance(key, str) or not good:
            kind = "whole numbers ≥ 0" if whole else "finite numbers"
            raise InvalidVolumeTrajectory(f"{what} must map names to {kind}, got {key!r:.40}: "
                                          f"{number!r:.40}")
    return out


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise InvalidVolumeTrajectory(f"{what} must be a list, got {type(value).__name__}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidVolumeTrajectory(f"expected a string, got {type(value).__name__}")
    return value


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidVolumeTrajectory(f"{what} must be an object, got {type(value).__name__}")
    return value


def _slice_key(key: Any, count: int) -> int:
    if not isinstance(key, str) or not key.isdigit() or not 0 <= int(key) < count:
        raise InvalidVolumeTrajectory(f"slice {key!r:.40} is outside the run's slices 0..{count - 1}")
    return int(key)


def _check_rle(rle: Any, size: tuple[int, int]) -> None:
    """A run-length code of an H×W mask: ``size`` as given, counts non-negative and covering it."""
    if not isinstance(rle, Mapping) or rle.get("size") != list(size):
        got = rle.get("size") if isinstance(rle, Mapping) else rle
        raise InvalidVolumeTrajectory(f"a mask must be {list(size)} (H, W) like the run's slices, "
                                      f"got {got!r:.60}")
    counts = rle.get("counts")
    if not isinstance(counts, list) or not all(_is_int(c) and c >= 0 for c in counts) \
            or sum(counts) != size[0] * size[1]:
        raise InvalidVolumeTrajectory("a mask's counts must be non-negative whole numbers "
                                      "summing to H × W")


def _checked_mask(rle: Any, size: tuple[int, int]) -> np.ndarray:
    _check_rle(rle, size)
    return decode_mask(rle)


def _check_episode_masks(episode: Any, size: tuple[int, int]) -> int:
    """Check the masks an episode's trajectory holds; the pixels they decode to."""
    trajectory = _mapping(episode, "an episode").get("trajectory")
    if trajectory is None:
        return 0
    trajectory = _mapping(trajectory, "an episode's trajectory")
    if trajectory.get("image_size") != list(size):
        raise InvalidVolumeTrajectory(f"an episode's image_size must be {list(size)}, got "
                                      f"{trajectory.get('image_size')!r:.60}")
    steps = _list(trajectory.get("steps"), "an episode's steps")
    rles = [_mapping(step, "a step").get("mask") for step in steps]
    initial = trajectory.get("initial")
    if initial is not None:
        rles.append(_mapping(initial, "an initial mask").get("mask"))
    rles = [rle for rle in rles if rle is not None]
    for rle in rles:
        _check_rle(rle, size)
    return len(rles) * size[0] * size[1]


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
