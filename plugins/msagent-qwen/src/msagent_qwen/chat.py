"""The checkpoint's conversation as text and model inputs, whole or as the part after a reply.

Messages come from :func:`msagent.protocol.build_messages` (system prompt with the tool
schemas as text, first user message [image, text], one [overlay, text] user message per
executed action, every image 512×512). They are rendered with the checkpoint's own chat
template (``processor.apply_chat_template``), so the prompt is exactly what the checkpoint
was trained on, and tokenized by its processor (which expands each image placeholder into
the image's tokens).
"""

from __future__ import annotations

from typing import Any

from msagent.errors import PolicyError


def render(processor: Any, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
    """The chat template's text for ``messages``."""
    return processor.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def images_of(messages: list[dict]) -> list[Any]:
    """The images of ``messages`` in order (the template's placeholder order)."""
    return [part["image"] for message in messages if isinstance(message["content"], list)
            for part in message["content"] if part.get("type") == "image"]


def suffix_after_reply(previous_prompt: str, reply: str, text: str) -> str | None:
    """The part of ``text`` after ``previous_prompt + reply`` — what a new turn adds after the
    reply (end of the assistant turn, the new user message, the generation prompt) — or None
    when the template does not render the conversation as a prefix extension."""
    head = previous_prompt + reply
    return text[len(head):] if text.startswith(head) else None


def encode(processor: Any, text: str, images: list[Any]) -> dict[str, Any]:
    """Token ids (list) plus ``pixel_values``/``image_grid_thw`` for ``images`` (or None)."""
    try:
        inputs = processor(text=[text], images=images or None, return_tensors="pt")
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"the processor could not encode the conversation: {exc}") from exc
    return {"input_ids": inputs["input_ids"][0].tolist(),
            "pixel_values": inputs.get("pixel_values"),
            "image_grid_thw": inputs.get("image_grid_thw")}
