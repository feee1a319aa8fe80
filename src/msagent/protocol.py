"""The conversation protocol of the released MedSAM-Agent checkpoint.

Everything the policy reads or writes is defined here: the three tool schemas, the system
prompt and user texts (the RL-stage format the checkpoint saw last, kept as data), the
``<tool_call>`` parser and formatter, and the 0–999 ↔ pixel coordinate mapping.

Coordinate convention (the RL tools'): a model value ``v`` in 0–999 maps to pixel
``floor(v * size / 1000)`` clamped to ``[0, size - 1]``; a pixel ``p`` maps back to
``ceil(p * 1000 / size)`` clamped to ``[0, 999]``, the smallest ``v`` that lands on ``p``.
The round trip pixel → model → pixel is exact for sides up to 1000 px, and
model → pixel → model is exact for sides of at least 1000 px.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ._prompts import (  # noqa: F401  (re-exported: the pinned strings)
    FIRST_USER_TEXT,
    FOLLOW_UP_TEXT,
    SYSTEM_PROMPT,
    TOOL_SCHEMAS,
)
from .errors import PolicyOutputError
from .render import overlay
from .types import Action, BBox, Point

if TYPE_CHECKING:
    from .policy import Episode

MODEL_MAX = 999
POLICY_IMAGE_SIZE = 512

_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_UNQUOTED_KEY_RE = re.compile(r'([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*:)')
_LEGACY_POINTS = {"add_positive_point": "positive", "add_negative_point": "negative"}


# -- coordinates ---------------------------------------------------------------
def to_pixel(value: float, size: int) -> int:
    """0–999 model value → pixel index in ``[0, size - 1]`` (floor(v·size/1000), clamped)."""
    value = min(max(value, 0), MODEL_MAX)
    return min(int(math.floor(value * size / 1000)), size - 1)


def to_model(pixel: float, size: int) -> int:
    """Pixel index → 0–999 model value; the exact inverse of :func:`to_pixel` for size ≤ 1000."""
    pixel = min(max(pixel, 0), size - 1)
    return min(int(math.ceil(pixel * 1000 / size)), MODEL_MAX)


def action_to_prompt(action: Action, image_size: tuple[int, int]) -> BBox | Point:
    """The pixel-frame prompt of an add_* action for an image of (height, width)."""
    height, width = image_size
    if action.kind == "add_bbox":
        x1, y1, x2, y2 = action.arguments["bbox_2d"]
        return BBox.ordered(to_pixel(x1, width), to_pixel(y1, height),
                            to_pixel(x2, width), to_pixel(y2, height))
    if action.kind == "add_point":
        x, y = action.arguments["point_2d"]
        return Point(to_pixel(x, width), to_pixel(y, height),
                     positive=action.arguments["point_type"] == "positive")
    raise ValueError(f"{action.kind} has no prompt")


def bbox_action(box: BBox, image_size: tuple[int, int], rationale: str = "") -> Action:
    """An add_bbox action whose arguments map back exactly onto ``box`` (pixel frame)."""
    height, width = image_size
    args = {"bbox_2d": [to_model(box.x1, width), to_model(box.y1, height),
                        to_model(box.x2, width), to_model(box.y2, height)]}
    return _with_text(Action("add_bbox", args), rationale)


def point_action(point: Point, image_size: tuple[int, int], rationale: str = "") -> Action:
    """An add_point action whose arguments map back exactly onto ``point`` (pixel frame)."""
    height, width = image_size
    args = {"point_2d": [to_model(point.x, width), to_model(point.y, height)],
            "point_type": "positive" if point.positive else "negative"}
    return _with_text(Action("add_point", args), rationale)


def stop_action(rationale: str = "") -> Action:
    return _with_text(Action("stop_action", {}), rationale)


def _with_text(action: Action, rationale: str) -> Action:
    return Action(action.kind, action.arguments, raw_text=format_action(action, rationale))


# -- formatting ----------------------------------------------------------------
def format_action(action: Action, rationale: str = "") -> str:
    """The assistant text for an action: optional rationale, then one ``<tool_call>``."""
    call = json.dumps({"name": action.kind, "arguments": dict(action.arguments)})
    call_text = f"<tool_call>\n{call}\n</tool_call>"
    return f"{rationale.strip()}\n{call_text}" if rationale.strip() else call_text


# -- parsing -------------------------------------------------------------------
def parse_action(text: str) -> Action:
    """Parse the first tool call in a policy reply.

    Tolerates text around the call, a missing closing tag, unquoted JSON keys, a bare JSON
    object without tags, and the legacy ``add_positive_point``/``add_negative_point`` tools
    with ``{x, y}``. Raises :class:`PolicyOutputError` for no call, bad JSON, unknown tools,
    wrong arity, non-numeric or non-finite values.
    """
    if not isinstance(text, str):
        raise PolicyOutputError(f"policy reply must be text, got {type(text).__name__}")
    payload = _call_payload(text)
    call = _load_json(payload)
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise PolicyOutputError(f"tool call must be an object with a 'name': {payload[:200]!r}")
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):  # some servers send arguments as a JSON string
        arguments = _load_json(arguments) if arguments.strip() else {}
    if not isinstance(arguments, dict):
        raise PolicyOutputError(f"tool arguments must be an object, got {arguments!r}")
    return _validated(call["name"], arguments, text)


def _call_payload(text: str) -> str:
    match = _CALL_RE.search(text)
    if match:
        return match.group(1)
    start = text.find("{")
    if start >= 0 and "name" in text[start:]:  # a bare JSON call without tags
        return text[start:text.rfind("}") + 1]
    raise PolicyOutputError("no <tool_call> found in the reply; expected one of "
                            + ", ".join(s["function"]["name"] for s in TOOL_SCHEMAS))


def _load_json(payload: str) -> Any:
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        pass
    repaired = _UNQUOTED_KEY_RE.sub(r'\1"\2"\3', payload.replace("'", '"'))
    try:
        return json.loads(repaired)
    except json.JSONDecodeError as exc:
        raise PolicyOutputError(f"tool call is not valid JSON ({exc.msg}): {payload[:200]!r}") \
            from None


def _validated(name: str, arguments: dict, text: str) -> Action:
    if name in _LEGACY_POINTS:
        point = _numbers(_legacy_xy(arguments), 2, "point_2d")
        return Action("add_point", {"point_2d": point, "point_type": _LEGACY_POINTS[name]}, text)
    if name == "add_bbox":
        _no_extra(name, arguments, {"bbox_2d"})
        return Action(name, {"bbox_2d": _numbers(arguments.get("bbox_2d"), 4, "bbox_2d")}, text)
    if name == "add_point":
        _no_extra(name, arguments, {"point_2d", "point_type"})
        point_type = arguments.get("point_type")
        if point_type not in ("positive", "negative"):
            raise PolicyOutputError(
                f"add_point needs point_type 'positive' or 'negative', got {point_type!r}")
        point = _numbers(arguments.get("point_2d"), 2, "point_2d")
        return Action(name, {"point_2d": point, "point_type": point_type}, text)
    if name == "stop_action":
        return Action(name, {}, text)
    raise PolicyOutputError(
        f"unknown tool {name!r}; the tools are add_bbox, add_point, stop_action")


def _legacy_xy(arguments: dict) -> Any:
    if "x" in arguments and "y" in arguments:
        return [arguments["x"], arguments["y"]]
    return arguments.get("point_2d")


def _no_extra(name: str, arguments: dict, allowed: set[str]) -> None:
    extra = set(arguments) - allowed
    if extra:
        raise PolicyOutputError(f"{name} got unexpected arguments {sorted(extra)}")


def _numbers(value: Any, arity: int, field: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) != arity:
        raise PolicyOutputError(f"{field} must be a list of {arity} numbers, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise PolicyOutputError(f"{field} must hold finite numbers, got {value!r}")
        out.append(int(round(item)))
    return out


# -- the conversation ------------------------------------------------------------
def policy_image(image: np.ndarray, mask: np.ndarray | None = None,
                 size: int = POLICY_IMAGE_SIZE) -> Image.Image:
    """The image the policy sees, as in the RL stage: the original resized to size×size
    (bilinear, aspect not kept); with ``mask``, the green overlay drawn at that size (the mask
    resized bilinearly as 0/255 and thresholded at 127)."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    if mask is None:
        return Image.fromarray(resized)
    mask_img = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize((size, size),
                                                                              Image.BILINEAR)
    return Image.fromarray(overlay(resized, np.asarray(mask_img) > 127))


def build_messages(episode: "Episode", size: int = POLICY_IMAGE_SIZE) -> list[dict]:
    """The checkpoint's chat for an episode so far: system prompt, first user message with the
    image, then per valid reply the assistant text and (after executed actions) a user message
    with the overlay. Images are PIL images at ``size``×``size``; all are kept (RL rule)."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        user_message(policy_image(episode.image, size=size), first_user_text(episode.target)),
    ]
    for step, mask in _history_masks(episode):
        messages.append({"role": "assistant", "content": step.raw_text})
        if mask is not None:
            messages.append(user_message(policy_image(episode.image, mask, size), FOLLOW_UP_TEXT))
    return messages


def _history_masks(episode: "Episode"):
    for step in episode.steps:
        if step.action is not None and step.error is None:  # rejected replies are not shown
            yield step, step.mask if step.executed else None


def first_user_text(target: str) -> str:
    return FIRST_USER_TEXT.format(target=target or "the object in the image")


def user_message(image: Image.Image, text: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "image": image},
                                        {"type": "text", "text": text}]}
