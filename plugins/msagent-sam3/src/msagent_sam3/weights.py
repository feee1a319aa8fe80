"""Finding and loading SAM 3 weights in transformers' format (never downloads).

A checkpoint is a directory as transformers saves SAM 3 and as ``facebook/sam3`` publishes it:
``config.json`` (``model_type: sam3_video``: the detector, the tracker and the tracker's neck)
and ``model.safetensors`` (or a sharded ``model.safetensors.index.json``), with keys
``detector_model.*``, ``tracker_model.*``, ``tracker_neck.*``; the tokenizer's and the
processor's files beside them. Resolution order: ``checkpoint=`` (the directory, or a file in
it), ``$MSAGENT_SAM3_CHECKPOINT``, the Hugging Face cache (``facebook/sam3``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from msagent.backbones import weights
from msagent.errors import WeightsMismatch, WeightsNotFound

log = logging.getLogger(__name__)

REPO_ID = "facebook/sam3"
ENV = "MSAGENT_SAM3_CHECKPOINT"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
HINT = ("facebook/sam3 is gated: request access on https://huggingface.co/facebook/sam3 (log in, "
        "accept Meta's SAM licence; approval can take a while), then `hf auth login` and "
        "`hf download facebook/sam3` puts it in the Hugging Face cache — or pass "
        "checkpoint=<directory with config.json and model.safetensors> (CLI: --backbone-option "
        f"checkpoint=<dir>) or set {ENV}=<dir>. A fine-tuned SAM 3 saved by transformers "
        "(save_pretrained) loads the same way. msagent never downloads weights.")


def _has_weights(directory: Path) -> bool:
    return (directory / "config.json").is_file() and any((directory / name).is_file()
                                                         for name in WEIGHT_FILES)


def resolve_checkpoint(checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint directory: ``checkpoint``, then ``$MSAGENT_SAM3_CHECKPOINT``, then
    ``facebook/sam3`` in the Hugging Face cache; :class:`WeightsNotFound` with :data:`HINT`."""
    given = checkpoint or os.environ.get(ENV)
    if given:
        path = Path(given).expanduser()
        directory = path.parent if path.is_file() else path
        if not _has_weights(directory):
            origin = "checkpoint=" if checkpoint else f"${ENV}"
            raise WeightsNotFound(f"SAM 3 weights not found at {path} (from {origin}): expected a "
                                  "directory with config.json and model.safetensors, as "
                                  f"transformers saves SAM 3. {HINT}")
        return directory
    config = weights.hf_cached(REPO_ID, "config.json")
    if config is not None and _has_weights(config.parent):
        log.info("using SAM 3 weights from the Hugging Face cache: %s", config.parent)
        return config.parent
    raise WeightsNotFound(f"SAM 3 weights are not on this machine: no checkpoint= given, ${ENV} "
                          f"unset, and no {REPO_ID} (config.json + model.safetensors) in the "
                          f"Hugging Face cache. {HINT}")


def load_model(directory: Path):
    """``Sam3VideoModel`` from ``directory`` (float32, CPU, eval), every parameter loaded.

    :raises WeightsMismatch: not a full SAM 3 checkpoint (another model type, keys missing,
        unexpected or of the wrong shape); the message says what a LoRA-only release needs.
    """
    import torch
    from transformers import AutoConfig, Sam3VideoModel

    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as exc:  # unreadable or unknown config.json
        raise WeightsMismatch(f"{directory}/config.json is not a transformers config "
                              f"({type(exc).__name__}: {exc})") from None
    if config.model_type != "sam3_video":
        raise WeightsMismatch(
            f"{directory} holds a {config.model_type!r} checkpoint; the sam3 backbone needs the "
            "full SAM 3 (model_type 'sam3_video': detector, tracker and the tracker's neck, as "
            "facebook/sam3 publishes it). A detector-only or tracker-only fine-tune must be "
            "written into a copy of the full checkpoint first.")
    model, info = Sam3VideoModel.from_pretrained(directory, config=config, local_files_only=True,
                                                 dtype=torch.float32, output_loading_info=True)
    # transformers drops unexpected keys silently here (the detector ignores tracker_model.*,
    # the tracker detector_model.*), so the file's keys are compared with the model's
    stored, wanted = checkpoint_keys(directory), set(model.state_dict())
    problems = {"missing": sorted(wanted - stored), "unexpected": sorted(stored - wanted),
                "wrong shape": sorted(str(k[0] if isinstance(k, tuple) else k)
                                      for k in info.get("mismatched_keys") or ())}
    problems = {label: keys for label, keys in problems.items() if keys}
    if problems:
        parts = [f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
                 for label, keys in problems.items()]
        lora = any("lora" in k.lower() for keys in problems.values() for k in keys)
        tail = (" It holds LoRA adapters: merge them into the base weights first (see the "
                "msagent-sam3 README, 'Fine-tuned checkpoints').") if lora else ""
        raise WeightsMismatch(f"{directory} is not a full SAM 3 checkpoint: "
                              f"{'; '.join(parts)}.{tail}")
    return model.eval()


def checkpoint_keys(directory: Path) -> set[str]:
    """The tensor names a checkpoint directory holds (read from the safetensors headers or
    the shard index; no tensor is loaded)."""
    import json

    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        return set(handle.keys())


def expected_keys(config=None) -> set[str]:
    """The state-dict keys a SAM 3 checkpoint must hold for ``config`` (default: the full
    model), computed on the meta device (no memory, no weights)."""
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    with torch.device("meta"):
        model = Sam3VideoModel(config if config is not None else Sam3VideoConfig())
    return set(model.state_dict())
