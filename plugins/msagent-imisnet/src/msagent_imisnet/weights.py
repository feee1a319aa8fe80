"""Finding and loading ``IMISNet-B.pth`` (never downloads).

Resolution order: the ``checkpoint=`` option, ``$MSAGENT_IMISNET_CHECKPOINT``, the Hugging Face
cache (``huggingface_hub.try_to_load_from_cache``), the ModelScope cache. The file is read with
``torch.load(weights_only=True, map_location="cpu")``; flat state_dicts and training
checkpoints (``{"model_state_dict": ...}``, optionally with a ``module.`` prefix) are accepted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from msagent.errors import WeightsMismatch, WeightsNotFound

log = logging.getLogger(__name__)

ENV_CHECKPOINT = "MSAGENT_IMISNET_CHECKPOINT"
FILENAME = "IMISNet-B.pth"
#: where the weights are published (ModelScope; the same id is tried in the HF cache)
REPO_ID = "1Junlong/IMIS-Net"
#: keys some checkpoints carry that the network does not need (older transformers saved it)
BENIGN_EXTRA_KEYS = ("text_model.text_model.embeddings.position_ids",)

HOW_TO_GET = (
    f"Download {FILENAME} (about 0.7 GB) yourself, e.g. "
    f"`modelscope download --model {REPO_ID} {FILENAME} --local_dir <dir>` "
    "(or from the link in the uni-medical/IMIS-Bench README), then pass "
    f"checkpoint='<dir>/{FILENAME}' or set {ENV_CHECKPOINT}=<dir>/{FILENAME}. "
    f"A copy in the Hugging Face cache under repo id {REPO_ID!r} or in the ModelScope cache "
    "is found automatically; msagent never downloads it."
)


def _hf_cached(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, FILENAME)
    return Path(found) if isinstance(found, str) else None


def _modelscope_cached(repo_id: str) -> Path | None:
    root = Path(os.environ.get("MODELSCOPE_CACHE", Path.home() / ".cache" / "modelscope" / "hub"))
    for candidate in (root / "models" / repo_id / FILENAME, root / repo_id / FILENAME):
        if candidate.is_file():
            return candidate
    return None


def resolve_checkpoint(checkpoint: str | os.PathLike | None = None,
                       repo_id: str = REPO_ID) -> Path:
    """The path of ``IMISNet-B.pth``; raises :class:`WeightsNotFound` saying what to fetch."""
    explicit = checkpoint or os.environ.get(ENV_CHECKPOINT)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            source = "checkpoint=" if checkpoint else f"${ENV_CHECKPOINT}"
            raise WeightsNotFound(f"IMIS-Net weights not found at {path} (from {source}). "
                                  + HOW_TO_GET)
        return path
    for finder in (_hf_cached, _modelscope_cached):
        path = finder(repo_id)
        if path is not None:
            log.info("using IMIS-Net weights from %s", path)
            return path
    raise WeightsNotFound(f"IMIS-Net weights ({FILENAME}) are not on this machine. " + HOW_TO_GET)


def unwrap_state_dict(state: object, path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """The flat ``name → tensor`` mapping inside a loaded checkpoint."""
    for wrapper in ("model_state_dict", "state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                  for v in state.values()):
        raise WeightsMismatch(f"{path} holds no state_dict (a mapping of tensor names to "
                              f"tensors); expected the official {FILENAME}")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in BENIGN_EXTRA_KEYS}


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU and unwrap it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise WeightsMismatch(f"cannot read {path} as a PyTorch checkpoint with "
                              f"weights_only=True ({type(exc).__name__}: {exc}); expected the "
                              f"official {FILENAME}") from None
    return unwrap_state_dict(state, path)


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
              source: Path | str = "checkpoint") -> None:
    """Load ``state`` strictly; a mismatch raises :class:`WeightsMismatch` naming the keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if keys]
        raise WeightsMismatch(f"{source} is not an IMIS-Net ViT-B checkpoint: "
                              f"{'; '.join(parts)}. Use the official {FILENAME}.")
    model.load_state_dict(state, strict=True)
