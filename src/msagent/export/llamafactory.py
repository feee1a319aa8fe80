"""LLaMA-Factory ShareGPT multimodal records and their ``dataset_info.json`` entry.

A record is ``{"id", "system", "messages": [{"role": "user"|"assistant", "content"}],
"images": [relative paths]}``: the checkpoint's conversation (system prompt in ``system``,
then user/assistant turns alternating, user first, assistant last), one ``<image>`` per
image in order. Images are PNG files under ``images/`` named by content hash (shared by
trajectories of the same image), relative to the dataset folder (LLaMA-Factory's default
``media_dir``). The records of a trajectory set go to ``{name}/part-*.json``; the entry
registers that folder with the ``sharegpt`` formatting.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from msagent import render
from msagent.export.conversation import conversation
from msagent.generation.shards import png_bytes
from msagent.io.atomic import atomic_write, read_json_file
from msagent.types import Trajectory

DEFAULT_NAME = "msagent_sft"


def dataset_info_entry(name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The ``dataset_info.json`` entry for the records folder ``name``."""
    return {
        "file_name": name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images", "system": "system"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"},
    }


def record(trajectory: Trajectory, image: np.ndarray, out: Path, *, key: str,
           size: int = render.POLICY_IMAGE_SIZE) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(record, files to write) for one trajectory; image paths are relative to ``out``."""
    chat = conversation(trajectory, image, size)
    files, paths = {}, []
    for img in chat.images:
        data = png_bytes(np.asarray(img))
        sha = hashlib.sha256(data).hexdigest()
        rel = f"images/{sha[:2]}/{sha}.png"
        files[rel] = data
        paths.append(rel)
    messages = [dict(m) for m in chat.messages[1:]]
    return {"id": key, "system": chat.messages[0]["content"], "messages": messages,
            "images": paths}, files


def write_dataset_info(out: Path, name: str = DEFAULT_NAME) -> Path:
    """Add (or replace) the entry ``name`` in ``out/dataset_info.json``, keeping others."""
    path = Path(out) / "dataset_info.json"
    info = read_json_file(path, "LLaMA-Factory dataset_info.json", f"fix or delete {path}") \
        if path.is_file() else {}
    info[name] = dataset_info_entry(name)
    atomic_write(path, json.dumps(info, indent=2).encode())
    return path


def write_part(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write(path, json.dumps(records, ensure_ascii=False, indent=1).encode())


def read_records(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a records folder, in part order."""
    out = []
    for part in sorted(Path(folder).glob("part-*.json")):
        out.extend(json.loads(part.read_text()))
    return out
