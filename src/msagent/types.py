"""Value types that cross module boundaries.

Conventions: images are H×W×3 ``uint8`` RGB arrays; masks are H×W ``bool`` arrays; pixel
coordinates are XY in the original image frame (x to the right, y down, integer pixel
indices). Tool-call coordinates in the 0–999 frame live only in :mod:`msagent.protocol`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

import attrs
import numpy as np


def _tuple(values: Iterable[Any]) -> tuple[Any, ...]:
    """attrs converter: ``tuple``, typed (mypy's attrs plugin cannot bind ``converter=tuple``)."""
    return tuple(values)


def _dict(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """attrs converter: ``dict``, typed (mypy's attrs plugin cannot bind ``converter=dict``)."""
    return dict(mapping)


ActionKind = Literal["add_bbox", "add_point", "stop_action"]
ACTION_KINDS: tuple[str, ...] = ("add_bbox", "add_point", "stop_action")


@attrs.frozen
class BBox:
    """An axis-aligned box in pixel XYXY, corners inclusive, ``x1 <= x2`` and ``y1 <= y2``."""

    x1: int
    y1: int
    x2: int
    y2: int

    def __attrs_post_init__(self) -> None:
        if self.x1 > self.x2 or self.y1 > self.y2:
            raise ValueError(f"BBox corners out of order: {self}; use BBox.ordered(...)")

    @classmethod
    def ordered(cls, x1: int, y1: int, x2: int, y2: int) -> "BBox":
        return cls(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)


@attrs.frozen
class Point:
    """A click in pixel XY; ``positive`` is True for foreground, False for background."""

    x: int
    y: int
    positive: bool = True

    @property
    def label(self) -> int:
        """SAM's point label: 1 foreground, 0 background."""
        return 1 if self.positive else 0


@attrs.frozen
class Action:
    """One tool call of the policy.

    ``arguments`` are exactly as in the tool schema (0–999 frame), e.g.
    ``{"bbox_2d": [x1, y1, x2, y2]}`` or ``{"point_2d": [x, y], "point_type": "positive"}``.
    ``raw_text`` is the policy's whole reply (rationale plus call). ``ignored`` names the
    argument keys the reply had beyond the schema (tolerated, as upstream does, and dropped).
    """

    kind: str = attrs.field(validator=attrs.validators.in_(ACTION_KINDS))
    arguments: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, eq=True, hash=False)
    raw_text: str = ""
    ignored: tuple[str, ...] = attrs.field(default=(), converter=_tuple)  # unknown argument keys

    @property
    def is_stop(self) -> bool:
        return self.kind == "stop_action"


@attrs.frozen
class Prompts:
    """Prompts accumulated within one episode: at most one box (the latest) and all clicks,
    plus the target ``text`` for backbones that take a text prompt (``accepts_text``; others
    ignore it)."""

    box: BBox | None = None
    points: tuple[Point, ...] = attrs.field(default=(), converter=_tuple)
    text: str | None = None

    def add(self, prompt: BBox | Point) -> "Prompts":
        if isinstance(prompt, BBox):
            return attrs.evolve(self, box=prompt)
        return attrs.evolve(self, points=self.points + (prompt,))

    def latest_only(self, prompt: BBox | Point) -> "Prompts":
        """Upstream's semantics: only the newest prompt (the mask input carries the rest)."""
        if isinstance(prompt, BBox):
            return Prompts(box=prompt, text=self.text)
        return Prompts(points=(prompt,), text=self.text)

    @property
    def empty(self) -> bool:
        """No box and no click (a text alone is not a spatial prompt)."""
        return self.box is None and not self.points

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"box": [x1, y1, x2, y2] | null, "points": [[x, y, label], ...]}``."""
        out: dict[str, Any] = {"box": None if self.box is None else list(self.box.as_tuple()),
                               "points": [[p.x, p.y, p.label] for p in self.points]}
        if self.text is not None:
            out["text"] = self.text
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Prompts":
        box = data.get("box")
        return cls(box=None if box is None else BBox(*box),
                   points=tuple(Point(x, y, bool(label)) for x, y, label in data.get("points", ())),
                   text=data.get("text"))


def prompt_to_dict(prompt: BBox | Point | None) -> dict[str, Any] | None:
    """JSON form of one pixel prompt: ``{"box": [...]}`` or ``{"point": [x, y, label]}``."""
    if isinstance(prompt, BBox):
        return {"box": list(prompt.as_tuple())}
    if isinstance(prompt, Point):
        return {"point": [prompt.x, prompt.y, prompt.label]}
    return None


def prompt_from_dict(data: Mapping[str, Any] | None) -> BBox | Point | None:
    if not data:
        return None
    if "box" in data:
        return BBox(*data["box"])
    x, y, label = data["point"]
    return Point(x, y, bool(label))


@attrs.frozen(eq=False)
class MaskPrediction:
    """A decoder output: ``mask`` H×W bool (original size), ``low_res_logits`` 256×256 float32
    (the mask input for the next turn), ``score`` the predicted IoU of the kept mask."""

    mask: np.ndarray
    low_res_logits: np.ndarray
    score: float


@attrs.frozen(eq=False)
class Step:
    """One policy reply and what came of it.

    ``action`` is None when the reply was invalid (then ``error`` says why). Executed actions
    carry the mask and score after the call, and ``iou``/``dice`` when a ground truth was given;
    ``prompt`` is the pixel prompt the action added and ``prompts`` the pixel prompts in force
    after it (what the backbone decoded; by the episode's prompt mode).
    """

    index: int
    raw_text: str
    action: Action | None = None
    error: str | None = None
    mask: np.ndarray | None = None
    score: float | None = None
    iou: float | None = None
    dice: float | None = None
    usage: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict)
    prompt: BBox | Point | None = None
    prompts: Prompts | None = None

    @property
    def executed(self) -> bool:
        return self.action is not None and not self.action.is_stop and self.mask is not None


@attrs.frozen(eq=False)
class InitialMask:
    """The mask an episode refined (turn 0): H×W bool, its IoU/Dice when a ground truth was
    given, where it came from (``source``, e.g. "nnunet", "degraded:erode" or
    "proposal:sam3") and, for a backbone's proposal, its predicted ``score``."""

    mask: np.ndarray
    iou: float | None = None
    dice: float | None = None
    source: str = ""
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"mask": encode_mask(self.mask), "iou": self.iou, "dice": self.dice,
                "source": self.source}
        if self.score is not None:  # only proposals have one
            data["score"] = self.score
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InitialMask":
        return cls(decode_mask(data["mask"]), data.get("iou"), data.get("dice"),
                   data.get("source", ""), data.get("score"))


@attrs.frozen(eq=False)
class Trajectory:
    """A finished episode. Serializes to JSON losslessly (masks as run-length codes).

    ``initial`` is the mask the episode started from (None when it started from nothing);
    without any executed step the final mask is that mask.
    """

    target: str
    image_size: tuple[int, int]  # (height, width)
    steps: tuple[Step, ...] = ()
    stop_reason: str = ""
    case_id: str = ""
    image_sha256: str = ""
    meta: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict)
    initial: InitialMask | None = None

    @property
    def executed_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.executed)

    @property
    def turns(self) -> int:
        """Number of mask-producing tool calls."""
        return len(self.executed_steps)

    @property
    def final_mask(self) -> np.ndarray:
        executed = self.executed_steps
        if executed:
            return cast(np.ndarray, executed[-1].mask)  # an executed step has its mask
        if self.initial is not None:
            return self.initial.mask
        return np.zeros(self.image_size, dtype=bool)

    @property
    def usage(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for step in self.steps:
            for key, value in step.usage.items():
                if isinstance(value, (int, float)):
                    total[key] = total.get(key, 0) + value
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "image_size": list(self.image_size),
            "steps": [_step_to_dict(s) for s in self.steps],
            "stop_reason": self.stop_reason,
            "case_id": self.case_id,
            "image_sha256": self.image_sha256,
            "meta": dict(self.meta),
            **({} if self.initial is None else {"initial": self.initial.to_dict()}),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Trajectory":
        return cls(
            target=data["target"],
            image_size=tuple(data["image_size"]),
            steps=tuple(_step_from_dict(s) for s in data["steps"]),
            stop_reason=data.get("stop_reason", ""),
            case_id=data.get("case_id", ""),
            image_sha256=data.get("image_sha256", ""),
            meta=data.get("meta", {}),
            initial=None if data.get("initial") is None else InitialMask.from_dict(data["initial"]),
        )

    @classmethod
    def from_json(cls, text: str) -> "Trajectory":
        return cls.from_dict(json.loads(text))


@attrs.frozen(eq=False)
class Case:
    """One segmentation task: an image, a target text, optionally the ground truth."""

    id: str
    image: np.ndarray
    target: str
    ground_truth: np.ndarray | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Lossless run-length code of a bool mask (row-major, runs start with False)."""
    flat = np.asarray(mask, dtype=bool).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def decode_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_mask`."""
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, rle["counts"])
    return flat.reshape(rle["size"])


def _step_to_dict(step: Step) -> dict[str, Any]:
    action = step.action
    return {
        "index": step.index,
        "raw_text": step.raw_text,
        "action": None if action is None else
        {"kind": action.kind, "arguments": dict(action.arguments), "raw_text": action.raw_text,
         **({"ignored": list(action.ignored)} if action.ignored else {})},
        "error": step.error,
        "mask": None if step.mask is None else encode_mask(step.mask),
        "score": step.score,
        "iou": step.iou,
        "dice": step.dice,
        "usage": dict(step.usage),
        **({} if step.prompt is None else {"prompt": prompt_to_dict(step.prompt)}),
        **({} if step.prompts is None else {"prompts": step.prompts.to_dict()}),
    }


def _step_from_dict(data: Mapping[str, Any]) -> Step:
    action = data.get("action")
    return Step(
        index=data["index"],
        raw_text=data["raw_text"],
        action=None if action is None else Action(**action),
        error=data.get("error"),
        mask=None if data.get("mask") is None else decode_mask(data["mask"]),
        score=data.get("score"),
        iou=data.get("iou"),
        dice=data.get("dice"),
        usage=data.get("usage", {}),
        prompt=prompt_from_dict(data.get("prompt")),
        prompts=None if data.get("prompts") is None else Prompts.from_dict(data["prompts"]),
    )


#: stop reasons of an episode that ended as designed
FINISHED = ("stop", "max_turns")
STOP_REASONS = {"stop": "the policy stopped", "max_turns": "the turn limit was reached",
                "policy_error": "the policy failed to answer",
                "invalid_output": "the policy's replies had no valid tool call",
                "stopped_without_mask": "the policy stopped before any mask",
                "cancelled": "the run was cancelled"}


def failure_message(trajectory: Trajectory) -> str:
    """One line for an episode that produced no mask: why, the last error, what to try."""
    reason = trajectory.stop_reason or "no reply"
    why = STOP_REASONS.get(reason, reason)
    last = next((s.error for s in reversed(trajectory.steps) if s.error), None)
    message = f"no mask: {why} ({reason})"
    if last:
        message += f"; last error: {last}"
    return message
