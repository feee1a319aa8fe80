"""Finding and loading ``IMISNet-B.pth`` (never downloads).

Resolution order: the ``checkpoint=`` option, ``$MSAGENT_IMISNET_CHECKPOINT``, the Hugging Face
cache (``huggingface_hub.try_to_load_from_cache``), the ModelScope cache. The file is read with
``torch.load(weights_only=True, map_location="cpu")``; flat state_dicts and training
checkpoints (``{"model_state_dict": ...}``, optionally with a ``module.`` prefix) are accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from msagent.backbones import weights
from msagent.errors import WeightsMismatch

ENV_CHECKPOINT = "MSAGENT_IMISNET_CHECKPOINT"
FILENAME = "IMISNet-B.pth"
#: where the weights are published (ModelScope; the same id is tried in the HF cache)
REPO_ID = "1Junlong/IMIS-Net"
#: keys some checkpoints carry that the network does not need (older transformers saved it)
BENIGN_EXTRA_KEYS = ("text_model.text_model.embeddings.position_ids",)
#: training-checkpoint wrappers, in the order IMIS-Bench's scripts write them
WRAPPERS = ("model_state_dict", "state_dict", "model")

HOW_TO_GET = (
    f"Download {FILENAME} (about 0.7 GB) yourself, e.g. "
    f"`modelscope download --model {REPO_ID} {FILENAME} --local_dir <dir>` "
    "(or from the link in the uni-medical/IMIS-Bench README), then pass "
    f"checkpoint='<dir>/{FILENAME}' "
    f"(CLI: --backbone-option checkpoint=<dir>/{FILENAME}) or set {ENV_CHECKPOINT}=<dir>/{FILENAME}. "
    f"A copy in the Hugging Face cache under repo id {REPO_ID!r} or in the ModelScope cache "
    "is found automatically; msagent never downloads it."
)


def _modelscope_cached(repo_id: str) -> Path | None:
    root = Path(os.environ.get("MODELSCOPE_CACHE", Path.home() / ".cache" / "modelscope" / "hub"))
    for candidate in (root / "models" / repo_id / FILENAME, root / repo_id / FILENAME):
        if candidate.is_file():
            return candidate
    return None


def resolve_checkpoint(checkpoint: str | os.PathLike | None = None,
                       repo_id: str = REPO_ID) -> Path:
    """The path of ``IMISNet-B.pth``; raises :class:`WeightsNotFound` saying what to fetch."""
    return weights.resolve_checkpoint(checkpoint, ENV_CHECKPOINT, [(repo_id, FILENAME)],
                                      what="IMIS-Net", hint=HOW_TO_GET,
                                      fallbacks=[lambda: _modelscope_cached(repo_id)])


def unwrap_state_dict(state: object, path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """The flat ``name → tensor`` mapping inside a loaded checkpoint, without benign extras."""
    try:
        state = weights.unwrap_state_dict(state, path, wrappers=WRAPPERS)
    except WeightsMismatch as exc:
        raise WeightsMismatch(f"{exc}; expected the official {FILENAME}") from None
    return {k: v for k, v in state.items() if k not in BENIGN_EXTRA_KEYS}


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU and unwrap it."""
    state = weights.load_state_dict(path, wrappers=WRAPPERS,
                                    expected=f"the official {FILENAME}")
    return {k: v for k, v in state.items() if k not in BENIGN_EXTRA_KEYS}


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
              source: Path | str = "checkpoint") -> None:
    """Load ``state`` strictly; a mismatch raises :class:`WeightsMismatch` naming the keys."""
    weights.load_into(model, state, source, what="IMIS-Net ViT-B",
                      hint=f"Use the official {FILENAME}.")
