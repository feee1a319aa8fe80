"""The conversation protocol of the released MedSAM-Agent checkpoint.

Everything the policy reads or writes is defined here: the three tool schemas, the system
prompt and user texts (the RL-stage format the checkpoint saw last, kept as data), the
``<tool_call>`` parser and formatter, and the 0–999 ↔ pixel coordinate mapping.

Coordinate convention (the RL tools'): a model value ``v`` in 0–999 maps to pixel
``floor(v * size / 1000)`` clamped to ``[0, size - 1]`` — upstream's ``int(v * size / 1000)``
for every value it accepts, floats included (a float is mapped itself, never rounded first),
clamped as upstream's server clamps; a pixel ``p`` maps back to
``ceil(p * 1000 / size)`` clamped to ``[0, 999]``, the smallest ``v`` that lands on ``p``.
The round trip pixel → model → pixel is exact for sides up to 1000 px, and
model → pixel → model is exact for sides of at least 1000 px.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any, cast

from PIL import Image

from msagent._prompts import (  # noqa: F401  (re-exported: the pinned strings)
    FIRST_USER_TEXT,
    FIRST_USER_TEXT_REFINE,
    FOLLOW_UP_TEXT,
    SYSTEM_PROMPT,
    TOOL_SCHEMAS,
)
from msagent.errors import PolicyOutputError

# the image a policy sees, re-exported for policy plugins (the implementation is rendering)
from msagent.render import POLICY_IMAGE_SIZE, policy_image  # noqa: F401
from msagent.types import Action, BBox, Point

if TYPE_CHECKING:
    from msagent.policies.base import Episode

MODEL_MAX = 999


# -- coordinates ---------------------------------------------------------------
def to_pixel(value: float, size: int) -> int:
    """0–999 model value → pixel index: ``floor(v·size/1000)`` clamped to ``[0, size - 1]``.

    ``v`` itself is first clamped to [-1, 1000], which changes no result (every value at or
    beyond either end lands on the first or last pixel) and keeps huge values finite."""
    value = min(max(value, -1), MODEL_MAX + 1)
    return min(max(int(math.floor(value * size / 1000)), 0), size - 1)


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
MAX_REPLY_CHARS = 32_768  # the parser reads no further into a reply (the checkpoint writes ~128 tokens)
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
# A key without quotes (`{x: 1}`) or without its opening quote (`{x": 1}`, upstream's repair).
_BARE_KEY_RE = re.compile(r'([{,]\s*)([A-Za-z_]\w*)"?(\s*:)')
_LEGACY_POINTS = {"add_positive_point": "positive", "add_negative_point": "negative"}
_ARGUMENTS = {"add_bbox": ("bbox_2d",), "add_point": ("point_2d", "point_type"),
              "stop_action": (), "add_positive_point": ("x", "y", "point_2d"),
              "add_negative_point": ("x", "y", "point_2d")}


def parse_action(text: str, image_size: tuple[int, int] | None = None) -> Action:
    """Parse the first tool call in a policy reply.

    Tolerates text around the call, a missing closing tag, keys without quotes or without
    their opening quote, single quotes, a bare JSON object without tags, arguments sent as a
    JSON string, unknown argument keys (ignored, named in :attr:`Action.ignored`), and the
    legacy ``add_positive_point``/``add_negative_point`` tools with ``{x, y}``. Coordinates
    are kept as given (a float is mapped by :func:`to_pixel` itself, not rounded first).
    Only the first :data:`MAX_REPLY_CHARS` characters are read, in linear time.

    With ``image_size`` (height, width), a box whose corners map onto the same pixel column
    or row (zero width or height) is also invalid.

    Raises :class:`PolicyOutputError` — and nothing else — for no call, bad JSON (including
    nesting too deep and numbers too long to read), unknown tools, wrong arity, non-numeric
    or non-finite values.
    """
    if not isinstance(text, str):
        raise PolicyOutputError(f"policy reply must be text, got {type(text).__name__}")
    payload = _call_payload(text[:MAX_REPLY_CHARS])
    call = _load_json(payload)
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise PolicyOutputError(f"tool call must be an object with a 'name': {payload[:200]!r}")
    # arguments as a JSON string are tolerated too (some servers send them so)
    return validate_call(call["name"], call.get("arguments", call.get("parameters", {})),
                         image_size, text)


def validate_call(name: str, arguments: Any, image_size: tuple[int, int] | None = None,
                  raw_text: str = "") -> Action:
    """A structured tool call (a name and its arguments, as verl's tools or an API's native
    ``tool_calls`` deliver them) checked by the same rules as :func:`parse_action`."""
    if not isinstance(name, str):
        raise PolicyOutputError(f"tool name must be text, got {_short(name)}")
    if isinstance(arguments, str):
        arguments = _load_json(arguments[:MAX_REPLY_CHARS]) if arguments.strip() else {}
    if not isinstance(arguments, dict):
        raise PolicyOutputError(f"tool arguments must be an object, got {_short(arguments)}")
    action = _validated(name, arguments, raw_text)
    if image_size is not None:
        check_prompt(action, image_size)
    return action


def split_reply(text: str) -> tuple[str, str]:
    """A reply as (rationale: the text before its ``<tool_call>``, the call from there on;
    "" when there is none)."""
    rationale, tag, rest = text.partition(_OPEN)
    return rationale.strip(), (tag + rest) if tag else ""


def rationale(text: str) -> str:
    """The reply's text before its ``<tool_call>`` (all of it when there is none)."""
    return split_reply(text)[0]


def check_prompt(action: Action, image_size: tuple[int, int]) -> None:
    """Raise :class:`PolicyOutputError` if ``action`` is a box of zero pixel width or height
    on an image of (height, width) — SAM would get a degenerate box; upstream's tool refuses
    ``x1 >= x2`` too."""
    if action.kind != "add_bbox":
        return
    box = cast(BBox, action_to_prompt(action, image_size))  # a box action
    if box.x1 == box.x2 or box.y1 == box.y2:
        raise PolicyOutputError(
            f"add_bbox {list(action.arguments['bbox_2d'])} maps to a box of zero width or height "
            f"on a {image_size[1]}x{image_size[0]} image; give x1 < x2 and y1 < y2 (0-999)")


def _call_payload(text: str) -> str:
    start = text.find(_OPEN)
    if start >= 0:
        start += len(_OPEN)
        end = text.find(_CLOSE, start)
        return text[start:end if end >= 0 else len(text)].strip()
    start = text.find("{")
    if start >= 0 and "name" in text[start:]:  # a bare JSON call without tags
        return text[start:text.rfind("}") + 1]
    raise PolicyOutputError("no <tool_call> found in the reply; expected one of "
                            + ", ".join(s["function"]["name"] for s in TOOL_SCHEMAS))


def _load_json(payload: str) -> Any:
    try:
        return _json(payload)
    except PolicyOutputError:
        pass
    return _json(_BARE_KEY_RE.sub(r'\1"\2"\3', payload.replace("'", '"')), payload)


def _json(payload: str, shown: str | None = None) -> Any:
    """json.loads with every failure (bad syntax, nesting too deep, a number too long) as a
    PolicyOutputError."""
    try:
        return json.loads(payload)
    except json.JSONDecodeError as exc:
        why = exc.msg
    except RecursionError:
        why = "nested too deep"
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        why = str(exc).split(";")[0]
    raise PolicyOutputError(f"tool call is not valid JSON ({why}): {(shown or payload)[:200]!r}")


def _validated(name: str, arguments: dict, text: str) -> Action:
    if name not in _ARGUMENTS:
        raise PolicyOutputError(
            f"unknown tool {_short(name)}; the tools are add_bbox, add_point, stop_action")
    ignored = tuple(sorted(str(k) for k in arguments if k not in _ARGUMENTS[name]))
    if name in _LEGACY_POINTS:
        point = _numbers(_legacy_xy(arguments), 2, "point_2d")
        args = {"point_2d": point, "point_type": _LEGACY_POINTS[name]}
        return Action("add_point", args, text, ignored)
    if name == "add_bbox":
        return Action(name, {"bbox_2d": _numbers(arguments.get("bbox_2d"), 4, "bbox_2d")},
                      text, ignored)
    if name == "add_point":
        point_type = arguments.get("point_type")
        if point_type not in ("positive", "negative"):
            raise PolicyOutputError(
                f"add_point needs point_type 'positive' or 'negative', got {_short(point_type)}")
        point = _numbers(arguments.get("point_2d"), 2, "point_2d")
        return Action(name, {"point_2d": point, "point_type": point_type}, text, ignored)
    return Action(name, {}, text, ignored)


def _legacy_xy(arguments: dict) -> Any:
    if "x" in arguments and "y" in arguments:
        return [arguments["x"], arguments["y"]]
    return arguments.get("point_2d")


def _numbers(value: Any, arity: int, field: str) -> list[int | float]:
    """The coordinates as given: ints stay ints, integral floats become ints, other floats
    stay floats. Bools, strings, and values beyond the float range or non-finite are refused."""
    if not isinstance(value, (list, tuple)) or len(value) != arity:
        raise PolicyOutputError(f"{field} must be a list of {arity} numbers, got {_short(value)}")
    out: list[int | float] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not _finite(item):
            raise PolicyOutputError(f"{field} must hold finite numbers, got {_short(value)}")
        out.append(int(item) if isinstance(item, float) and item.is_integer() else item)
    return out


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deep, an int too long to print
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= 200 else text[:200] + "..."


# -- the conversation ------------------------------------------------------------
def build_messages(episode: "Episode", size: int = POLICY_IMAGE_SIZE) -> list[dict]:
    """The checkpoint's chat for an episode so far: system prompt, first user message with the
    image, then per valid reply the assistant text and (after executed actions) a user message
    with the overlay. Images are PIL images at ``size``×``size`` (``episode.policy_images``,
    rendered once per episode); all are kept (RL rule)."""
    images = iter(episode.policy_images(size))
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        user_message(next(images), first_user_text(episode.target,
                                                    refine=episode.initial_mask is not None)),
    ]
    for step, mask in episode.history():
        messages.append({"role": "assistant", "content": step.raw_text})
        if mask is not None:
            messages.append(user_message(next(images), FOLLOW_UP_TEXT))
    return messages


def first_user_text(target: str, refine: bool = False) -> str:
    """The first user message's text; ``refine``: the variant for an episode that starts from
    an existing mask (its overlay is the first image)."""
    template = FIRST_USER_TEXT_REFINE if refine else FIRST_USER_TEXT
    return template.format(target=target or "the object in the image")


def user_message(image: Image.Image, text: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "image": image},
                                        {"type": "text", "text": text}]}
