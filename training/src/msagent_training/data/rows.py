"""Dataset rows for verl: RL prompts (RLHFDataset) and multi-turn SFT chats (MultiTurnSFTDataset).

Both are rendered from :mod:`msagent.protocol`, so training sees exactly the conversation
msagent's inference builds (:func:`msagent.protocol.build_messages`): the system prompt with
the tool schemas inside, the first user message [image, ``first_user_text(target)``], and
after each executed action a user message [overlay, ``FOLLOW_UP_TEXT``]. Images are the
policy images (``policy_image_size``×``policy_image_size``, 512 by default — a multiple of
32, so SFT and RL expand every image to the same number of vision tokens). In the rows, each
image is a ``<image>`` placeholder in the text plus an entry ``{"bytes": PNG}`` in ``images``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from msagent import protocol
from msagent.errors import InvalidInput
from msagent.policy import Episode
from msagent.types import Case, Trajectory

from ..episode import png_bytes

IMAGE_PLACEHOLDER = "<image>"
AGENT_NAME = "msagent"
TOOL_NAMES = tuple(schema["function"]["name"] for schema in protocol.TOOL_SCHEMAS)


def flatten_messages(messages: list[dict]) -> tuple[list[dict[str, str]], list[dict[str, bytes]]]:
    """Chat messages with PIL images in content lists → (string messages with ``<image>``
    placeholders, ``[{"bytes": PNG}]`` in placeholder order)."""
    flat, images = [], []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            flat.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content:
            if part.get("type") == "image":
                parts.append(IMAGE_PLACEHOLDER)
                images.append({"bytes": png_bytes(np.asarray(part["image"].convert("RGB")))})
            else:
                parts.append(part["text"])
        flat.append({"role": message["role"], "content": "".join(parts)})
    return flat, images


def check_size(size: int) -> int:
    if size <= 0 or size % 32:
        raise InvalidInput(f"policy_image_size must be a positive multiple of 32, got {size}")
    return size


def sft_row(image: np.ndarray, trajectory: Trajectory, *, policy_image_size: int = 512,
            data_source: str = "msagent") -> dict[str, Any]:
    """One MultiTurnSFTDataset row (columns ``messages``, ``images``) for a finished
    trajectory of ``image`` (the original H×W×3 uint8). Rejected replies are left out, as
    in inference; the row ends with the trajectory's last valid reply."""
    if tuple(image.shape[:2]) != tuple(trajectory.image_size):
        raise InvalidInput(f"image {image.shape[:2]} does not match the trajectory's "
                           f"{trajectory.image_size}; pass the trajectory's original image")
    episode = Episode(id=trajectory.case_id, image=image, target=trajectory.target,
                      max_turns=max(1, trajectory.turns), steps=list(trajectory.steps))
    messages = protocol.build_messages(episode, size=check_size(policy_image_size))
    if messages[-1]["role"] != "assistant":
        messages = messages[:-1]  # a trailing observation has no reply to learn
    if len(messages) < 3:
        raise InvalidInput(f"trajectory {trajectory.case_id!r} has no valid reply to learn from")
    flat, images = flatten_messages(messages)
    return {"messages": flat, "images": images, "data_source": data_source,
            "case_id": trajectory.case_id}


def rl_prompt(case: Case, *, policy_image_size: int = 512) -> tuple[list[dict], list[dict]]:
    """The first two messages (system, user with the image) and their image bytes."""
    messages = [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                protocol.user_message(protocol.policy_image(case.image, size=check_size(
                    policy_image_size)), protocol.first_user_text(case.target))]
    return flatten_messages(messages)


def create_kwargs(case: Case, *, with_image: bool) -> dict[str, Any]:
    """A tool's ``create_kwargs``: the same keys for every tool and row (uniform Parquet)."""
    ground_truth = None if case.ground_truth is None else png_bytes(np.asarray(case.ground_truth,
                                                                               dtype=bool))
    return {"case_id": case.id, "target": case.target,
            "image": png_bytes(case.image) if with_image else None,
            "ground_truth": ground_truth if with_image else None}


def rl_row(case: Case, index: int, *, policy_image_size: int = 512,
           data_source: str = "msagent") -> dict[str, Any]:
    """One RLHFDataset row. ``extra_info.tools_kwargs`` gives add_bbox and add_point the
    original image and ground truth (the tools build the episode from whichever runs first);
    stop_action needs neither."""
    if case.ground_truth is None or not np.asarray(case.ground_truth).any():
        raise InvalidInput(f"case {case.id!r} has no (non-empty) ground truth; the RL reward "
                           "scores masks against it")
    prompt, images = rl_prompt(case, policy_image_size=policy_image_size)
    tools_kwargs = {name: {"create_kwargs": create_kwargs(case, with_image=name != "stop_action")}
                    for name in TOOL_NAMES}
    meta: Mapping[str, Any] = case.meta or {}
    return {
        "data_source": data_source,
        "prompt": prompt,
        "images": images,
        "ability": "segmentation",
        "reward_model": {"style": "rule", "ground_truth": case.id},
        "agent_name": AGENT_NAME,
        "extra_info": {
            "index": int(index), "case_id": case.id, "target": case.target,
            "dataset": str(meta.get("dataset", "")), "modality": str(meta.get("modality", "")),
            "need_tools_kwargs": True, "tools_kwargs": tools_kwargs,
        },
    }
