"""verl 0.9 rows: multi-turn SFT (MultiTurnSFTDataset) and RL prompts (RLHFDataset).

SFT row (one per trajectory): ``messages`` (role, content with ``<image>`` placeholders),
``images`` (``{"bytes": PNG}`` in placeholder order), ``id``, ``data_source``. The tool
schemas live in the system prompt, as the checkpoint saw them, so there is no ``tools``
column. ``tool_format="inline"`` keeps each call inside the assistant text (the checkpoint's
exact text); ``"structured"`` moves it to ``tool_calls`` with the arguments as a JSON
string (a chat template renders it back to the same text).

RL row (one per case): ``data_source``, ``prompt`` (system + first user turn), ``images``
(the 512×512 policy image), ``ability``, ``reward_model`` {style, ground_truth: run-length
coded mask as JSON}, ``extra_info`` {index, case_id, target, dataset, modality, class,
split, image_sha256, height, width, need_tools_kwargs, tools_kwargs}. ``tools_kwargs`` has
the same keys for every tool (Parquet needs uniform structs): ``create_kwargs`` = {case_id,
target, image: {"bytes": the original image PNG}, ground_truth}; ``stop_action`` gets nulls
for image and ground_truth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from msagent import protocol, render
from msagent.export.conversation import IMAGE_TOKEN, conversation
from msagent.generation.shards import png_bytes
from msagent.types import Trajectory, encode_mask

TOOL_NAMES = tuple(t["function"]["name"] for t in protocol.TOOL_SCHEMAS)
TOOL_FORMATS = ("inline", "structured")


def _image_entry(image) -> dict[str, bytes]:
    return {"bytes": png_bytes(np.asarray(image))}


def sft_row(trajectory: Trajectory, image: np.ndarray, *, key: str, data_source: str,
            size: int = render.POLICY_IMAGE_SIZE, tool_format: str = "inline") -> dict[str, Any]:
    """The MultiTurnSFTDataset row of one trajectory."""
    chat = conversation(trajectory, image, size)
    messages = [dict(m) for m in chat.messages]
    if tool_format == "structured":
        messages = [_structured(m) for m in messages]
    elif tool_format != "inline":
        raise ValueError(f"tool_format must be one of {TOOL_FORMATS}, got {tool_format!r}")
    return {"messages": messages, "images": [_image_entry(img) for img in chat.images],
            "id": key, "data_source": data_source}


def _structured(message: dict) -> dict:
    if message["role"] != "assistant":
        return {**message, "tool_calls": None}
    action = protocol.parse_action(message["content"])
    rationale = protocol.rationale(message["content"])
    call = {"type": "function", "function": {"name": action.kind,
                                             "arguments": json.dumps(dict(action.arguments))}}
    return {"role": "assistant", "content": rationale, "tool_calls": [call]}


def rl_row(*, index: int, case_id: str, target: str, image: np.ndarray, ground_truth: np.ndarray,
           meta: Mapping[str, Any], image_sha256: str, data_source: str,
           size: int = render.POLICY_IMAGE_SIZE, agent_name: str | None = None) -> dict[str, Any]:
    """The RLHFDataset row of one case."""
    gt = json.dumps(encode_mask(np.asarray(ground_truth, dtype=bool)))
    original = _image_entry(image)
    kwargs = {name: {"create_kwargs": {
        "case_id": case_id, "target": target,
        "image": None if name == "stop_action" else original,
        "ground_truth": None if name == "stop_action" else gt}} for name in TOOL_NAMES}
    row = {
        "data_source": data_source,
        "prompt": [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                   {"role": "user", "content": IMAGE_TOKEN + protocol.first_user_text(target)}],
        "images": [_image_entry(render.policy_image(image, size=size))],
        "ability": "interactive_segmentation",
        "reward_model": {"style": "rule", "ground_truth": gt},
        "extra_info": {
            "index": int(index), "case_id": case_id, "target": target,
            "dataset": str(meta.get("dataset", "")), "modality": str(meta.get("modality", "")),
            "class": str(meta.get("class", "")), "split": str(meta.get("split", "")),
            "image_sha256": image_sha256, "height": int(image.shape[0]),
            "width": int(image.shape[1]), "need_tools_kwargs": True, "tools_kwargs": kwargs},
    }
    if agent_name:
        row["agent_name"] = agent_name
    return row


def sft_schema(tool_format: str = "inline"):
    """The Arrow schema of SFT rows."""
    import pyarrow as pa

    fields = [("role", pa.string()), ("content", pa.string())]
    if tool_format == "structured":
        function = pa.struct([("name", pa.string()), ("arguments", pa.string())])
        fields.append(("tool_calls", pa.list_(pa.struct([("type", pa.string()), ("function", function)]))))
    return pa.schema([("messages", pa.list_(pa.struct(fields))),
                      ("images", pa.list_(pa.struct([("bytes", pa.binary())]))),
                      ("id", pa.string()), ("data_source", pa.string())])


def rl_schema(agent_name: bool = False):
    """The Arrow schema of RL rows."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    create = pa.struct([("case_id", pa.string()), ("target", pa.string()),
                        ("image", pa.struct([("bytes", pa.binary())])),
                        ("ground_truth", pa.string())])
    tool = pa.struct([("create_kwargs", create)])
    extra = pa.struct([
        ("index", pa.int64()), ("case_id", pa.string()), ("target", pa.string()),
        ("dataset", pa.string()), ("modality", pa.string()), ("class", pa.string()),
        ("split", pa.string()), ("image_sha256", pa.string()), ("height", pa.int64()),
        ("width", pa.int64()), ("need_tools_kwargs", pa.bool_()),
        ("tools_kwargs", pa.struct([(name, tool) for name in TOOL_NAMES]))])
    fields = [("data_source", pa.string())]
    if agent_name:
        fields.append(("agent_name", pa.string()))
    fields += [("prompt", pa.list_(message)),
               ("images", pa.list_(pa.struct([("bytes", pa.binary())]))),
               ("ability", pa.string()),
               ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
               ("extra_info", extra)]
    return pa.schema(fields)
