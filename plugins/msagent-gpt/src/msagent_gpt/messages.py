"""The episode as OpenAI chat-completions messages, and replies back as ``<tool_call>`` text.

Two tool modes:

- ``"prompt"`` — the released checkpoint's own conversation, for the checkpoint served by
  sglang or vLLM: :func:`msagent.protocol.build_messages` with each image as a PNG data URL;
  the tool schemas live in the system prompt text and no ``tools=`` is sent. Earlier
  assistant turns are their raw text.
- ``"native"`` — for API models: the task part of the system prompt, the tool schemas through
  ``tools=``, and a conversation that the chat-completions API accepts: each earlier reply is
  an assistant message with its rationale as ``content`` and its call as ``tool_calls``
  (ids ``call_<step index>``); the call gets a ``tool`` message (text only, as tool results
  are text in that API), and the overlay follows as a user message [image, follow-up text]
  — the same user message as in the checkpoint's format. A stop call ends the episode, so it
  never needs a result.

Either way a reply becomes text for :func:`msagent.protocol.parse_action`: its content, then
its first native tool call (if any) written as ``<tool_call>{"name": ..., "arguments": ...}
</tool_call>``.
"""

from __future__ import annotations

import base64
import io
import json
from typing import TYPE_CHECKING, Any

from msagent import protocol

if TYPE_CHECKING:
    from msagent import Episode

TOOL_MODES = ("native", "prompt")

#: Native mode: the checkpoint's task description, with the tool section replaced by a rule.
NATIVE_SYSTEM_PROMPT = (
    protocol.SYSTEM_PROMPT.split("\n\n# Tools")[0]
    + "\n\nCall exactly one of the provided functions in each reply, after at most a short "
    "rationale. All coordinates are integers in a 0-999 frame normalized to the image width "
    "and height. Carefully consider the current mask state before each action."
)


def data_url(image) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def tools() -> list[dict]:
    """The three tool schemas in the chat-completions ``tools=`` format."""
    return [json.loads(json.dumps(tool)) for tool in protocol.TOOL_SCHEMAS]


def build(episode: "Episode", mode: str, urls: list[str]) -> list[dict]:
    """The chat-completions messages for ``episode``; ``urls`` are the data URLs of the
    original image and of every overlay so far, in order (see :func:`image_urls`)."""
    if mode == "prompt":
        return _prompt_messages(episode, urls)
    images = iter(urls)
    messages: list[dict] = [
        {"role": "system", "content": NATIVE_SYSTEM_PROMPT},
        _user(next(images), _first_text(episode)),
    ]
    for step, overlay in episode.history():
        call_id = f"call_{step.index}"
        action = step.action
        messages.append({
            "role": "assistant", "content": protocol.rationale(step.raw_text) or None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {
                "name": action.kind, "arguments": json.dumps(dict(action.arguments))}}]})
        if overlay is not None:
            messages.append({"role": "tool", "tool_call_id": call_id,
                             "content": f"{action.kind} done; the updated mask is shown next."})
            messages.append(_user(next(images), protocol.FOLLOW_UP_TEXT))
    return messages


def _prompt_messages(episode: "Episode", urls: list[str]) -> list[dict]:
    """:func:`msagent.protocol.build_messages`' conversation with data-URL images."""
    images = iter(urls)
    messages = [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                _user(next(images), _first_text(episode))]
    for step, overlay in episode.history():
        messages.append({"role": "assistant", "content": step.raw_text})
        if overlay is not None:
            messages.append(_user(next(images), protocol.FOLLOW_UP_TEXT))
    return messages


def image_urls(episode: "Episode", cache: list[str], size: int) -> list[str]:
    """Data URLs of the policy images (original, then one overlay per executed action), at
    ``size``×``size``; ``cache`` holds those already encoded for this episode and is extended.
    The images come from ``episode.policy_images``, rendered once per episode."""
    images = episode.policy_images(size)
    for image in images[len(cache):]:
        cache.append(data_url(image))
    return cache[:len(images)]


def _first_text(episode: "Episode") -> str:
    return protocol.first_user_text(episode.target, refine=episode.initial_mask is not None)


def _user(url: str, text: str) -> dict:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": text}]}


def reply_text(message: Any) -> str:
    """A chat-completions message as text for the protocol parser: content, then the first
    native tool call as a ``<tool_call>`` block (arguments kept verbatim when not JSON)."""
    content = (getattr(message, "content", None) or "").strip()
    calls = getattr(message, "tool_calls", None) or []
    if not calls:
        return content
    function = calls[0].function
    raw = function.arguments or "{}"
    try:
        arguments = json.dumps(json.loads(raw))
    except (TypeError, ValueError):
        arguments = json.dumps(raw)  # a string: the parser reports the bad JSON
    call = f'<tool_call>\n{{"name": {json.dumps(function.name)}, "arguments": {arguments}}}\n</tool_call>'
    return f"{content}\n{call}" if content else call
