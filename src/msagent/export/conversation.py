"""A trajectory as the released checkpoint's conversation, and back.

The conversation is exactly what :func:`msagent.protocol.build_messages` shows a policy (the
RL-stage format): the system prompt with the tool schemas; a user turn with the image and
:func:`~msagent.protocol.first_user_text`; then per valid reply the assistant text (rationale
plus ``<tool_call>``, coordinates in the 0–999 frame of :mod:`msagent.protocol`) and, after
each executed action, a user turn with the overlay and
:data:`~msagent.protocol.FOLLOW_UP_TEXT`. Images are
:func:`~msagent.render.policy_image` renders (``size``×``size``, a multiple of 32).
In the text, each image is the placeholder ``<image>`` at the start of its user turn; the
images are listed in placeholder order. A trajectory that ends without ``stop_action`` ends
with its last assistant turn (the overlay nobody answers is left out).
"""

from __future__ import annotations

import re

import attrs
import numpy as np
from PIL import Image

from msagent import protocol, render
from msagent.errors import InvalidInput
from msagent.types import Action, Trajectory

IMAGE_TOKEN = "<image>"
_FIRST_RE = re.compile(
    "^" + re.escape(IMAGE_TOKEN) + "(?:" + "|".join(
        re.escape(text).replace(re.escape("{target}"), f"(?P<target{i}>.*)")
        for i, text in enumerate((protocol.FIRST_USER_TEXT, protocol.FIRST_USER_TEXT_REFINE)))
    + ")$", re.DOTALL)


@attrs.frozen(eq=False)
class Conversation:
    """``messages``: dicts with ``role`` ("system", "user", "assistant") and ``content``
    (text with ``<image>`` placeholders); ``images``: PIL images in placeholder order."""

    messages: list[dict]
    images: list[Image.Image]


@attrs.frozen(eq=False)
class ParsedConversation:
    """What a conversation says: the target and the assistant actions (raw text kept)."""

    target: str
    actions: list[Action]
    images: int


def check_size(size: int) -> int:
    if size < 32 or size % 32:
        raise InvalidInput(f"observation images must be a multiple of 32 pixels (e.g. 512), got {size}")
    return size


def shown_steps(trajectory: Trajectory) -> list:
    """The replies a conversation shows: valid actions in order (rejected replies are not)."""
    return [s for s in trajectory.steps if s.action is not None and s.error is None]


def conversation(trajectory: Trajectory, image: np.ndarray,
                 size: int = render.POLICY_IMAGE_SIZE) -> Conversation:
    """The checkpoint's conversation of ``trajectory`` on its original H×W×3 ``image``."""
    check_size(size)
    if tuple(image.shape[:2]) != tuple(trajectory.image_size):
        raise InvalidInput(f"image is {image.shape[:2]} but the trajectory was run on "
                           f"{tuple(trajectory.image_size)}")
    steps = shown_steps(trajectory)
    if not steps:
        raise InvalidInput(f"trajectory {trajectory.case_id!r} has no valid action to export")
    initial = None if trajectory.initial is None else trajectory.initial.mask
    first = protocol.first_user_text(trajectory.target, refine=initial is not None)
    messages = [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                {"role": "user", "content": IMAGE_TOKEN + first}]
    images = [render.policy_image(image, initial, size)]  # the initial overlay when refining
    for index, step in enumerate(steps):
        messages.append({"role": "assistant", "content": step.raw_text})
        if step.executed and index < len(steps) - 1:
            messages.append({"role": "user", "content": IMAGE_TOKEN + protocol.FOLLOW_UP_TEXT})
            images.append(render.policy_image(image, step.mask, size))
    return Conversation(messages, images)


def parse_conversation(messages: list[dict]) -> ParsedConversation:
    """Read a conversation back (system prompt and user texts must be the checkpoint's);
    raises :class:`~msagent.errors.InvalidInput` on anything else."""
    if len(messages) < 3 or messages[0].get("role") != "system" \
            or messages[0].get("content") != protocol.SYSTEM_PROMPT:
        raise InvalidInput("a conversation starts with the checkpoint's system prompt")
    match = _FIRST_RE.match(messages[1].get("content") or "")
    if messages[1].get("role") != "user" or not match:
        raise InvalidInput("the first user turn must be <image> + the first user text")
    actions, images = [], 1
    for message in messages[2:]:
        if message.get("role") == "assistant":
            actions.append(protocol.parse_action(message["content"]))
        elif message.get("content") == IMAGE_TOKEN + protocol.FOLLOW_UP_TEXT:
            images += 1
        else:
            raise InvalidInput(f"unexpected {message.get('role')} turn: {message.get('content')!r:.80}")
    target = match.group("target0") if match.group("target0") is not None else match.group("target1")
    return ParsedConversation(target, actions, images)
