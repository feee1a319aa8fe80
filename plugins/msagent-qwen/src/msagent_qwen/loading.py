"""Find a Qwen-VL checkpoint offline and load it with transformers.

Resolution order: the ``model=`` option, then ``$MSAGENT_QWEN_MODEL``, then the released
MedSAM-Agent checkpoint. A value that names an existing directory is used as is; otherwise
it is a Hugging Face id looked up in the local Hugging Face cache only
(``local_files_only=True``). Nothing is ever downloaded here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from msagent.errors import InvalidInput, WeightsNotFound

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Saint-lsy/MedSAM-Agent-Qwen3-VL-8B-MedSAM2"
MODEL_ENV = "MSAGENT_QWEN_MODEL"
_DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """The local directory of the checkpoint named by ``model``, $MSAGENT_QWEN_MODEL or the
    default; raises :class:`WeightsNotFound` saying what to download when it is not local."""
    name = str(model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsNotFound(f"{path} has no config.json; point model= at a transformers "
                                  "checkpoint directory (config.json, weights, processor files)")
        return path
    if _looks_like_path(name):
        raise WeightsNotFound(f"no checkpoint directory at {path}; pass model= an existing "
                              f"directory or a Hugging Face id (or set ${MODEL_ENV})")
    return _from_hf_cache(name)


def _looks_like_path(name: str) -> bool:
    """A Hugging Face id is ``owner/name``; anything else is meant as a directory."""
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or "\\" in name


def _from_hf_cache(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        raise WeightsNotFound(f"cannot look up {repo_id!r}: huggingface_hub is not installed") from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        from huggingface_hub import constants

        raise WeightsNotFound(
            f"the Qwen-VL checkpoint {repo_id!r} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); msagent never downloads weights. Download it once "
            f"with `hf download {repo_id}`, or pass "
            f"model=/path/to/checkpoint (CLI: --policy-option model=<path>; or set ${MODEL_ENV})") from None


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str):
    """``auto``: bfloat16 on a GPU that supports it, float16 on other GPUs, float32 on CPU."""
    import torch

    if dtype not in _DTYPES:
        raise InvalidInput(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load(path: Path, *, device: str = "auto", dtype: str = "auto",
         attn_implementation: str | None = None, max_pixels: int | None = None) -> tuple[Any, Any]:
    """(model, processor) from a local checkpoint directory, in eval mode on ``device``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    if max_pixels is not None:
        set_max_pixels(processor, max_pixels)
    options: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True}
    if attn_implementation:
        options["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **options)
    except (OSError, ValueError) as exc:
        raise WeightsNotFound(f"could not load a Qwen-VL model from {path}: {exc}") from exc
    model.to(device).eval()
    log.info("loaded %s (%s) on %s as %s", path, type(model).__name__, device, torch_dtype)
    return model, processor


def set_max_pixels(processor: Any, max_pixels: int) -> None:
    """Cap the pixels per image the vision tower sees (the image processor's longest_edge)."""
    if int(max_pixels) <= 0:
        raise InvalidInput(f"max_pixels must be positive, got {max_pixels}")
    images = processor.image_processor
    size = dict(images.size)
    size["longest_edge"] = int(max_pixels)
    size["shortest_edge"] = min(size.get("shortest_edge", 0), int(max_pixels))
    images.size = type(images.size)(**size) if not isinstance(images.size, dict) else size
    if hasattr(images, "max_pixels"):
        images.max_pixels = int(max_pixels)
