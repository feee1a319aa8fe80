"""Finding and loading the original Segment Anything checkpoints (never downloads).

Resolution order: the ``checkpoint=`` option, ``$MSAGENT_SAM_CHECKPOINT``, the Hugging Face
cache (``huggingface_hub.try_to_load_from_cache``; the official ``.pth`` files are mirrored
in the repo ``ybelkada/segment-anything`` under ``checkpoints/``). Files are read with
``torch.load(weights_only=True, map_location="cpu")``; the official layout is a flat
state_dict. The variant (ViT-B/L/H) is read off the checkpoint's patch-embedding width.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from msagent.errors import InvalidInput, WeightsMismatch, WeightsNotFound

log = logging.getLogger(__name__)

ENV_CHECKPOINT = "MSAGENT_SAM_CHECKPOINT"
HF_REPO = "ybelkada/segment-anything"
#: variant → official file name (https://dl.fbaipublicfiles.com/segment_anything/<file>)
FILES = {"vit_h": "sam_vit_h_4b8939.pth", "vit_l": "sam_vit_l_0b3195.pth",
         "vit_b": "sam_vit_b_01ec64.pth"}
#: the image encoder's embedding width of each variant
WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
PATCH_KEY = "image_encoder.patch_embed.proj.weight"


def normalize_variant(variant: str | None) -> str | None:
    """``"vit_b"``/``"b"``/``"ViT-B"`` → ``"vit_b"``; None stays None."""
    if variant is None:
        return None
    key = variant.lower().replace("-", "_")
    key = key if key.startswith("vit_") else f"vit_{key}"
    if key not in FILES:
        raise InvalidInput(f"unknown SAM variant {variant!r}; use one of {', '.join(sorted(FILES))}")
    return key


def how_to_get(variants: Sequence[str]) -> str:
    """The exact downloads that would satisfy the resolver, one per variant."""
    commands = "; ".join(f"`hf download {HF_REPO} checkpoints/{FILES[v]}` ({v})" for v in variants)
    return (f"Put the weights in the Hugging Face cache with {commands} — or download "
            f"https://dl.fbaipublicfiles.com/segment_anything/{FILES[variants[0]]} anywhere and "
            f"pass checkpoint=<path> or set {ENV_CHECKPOINT}=<path>. msagent never downloads them.")


def hf_cache_dir() -> str | None:
    """The hub cache as the environment says now (``HF_HUB_CACHE``, then ``HF_HOME/hub``);
    None lets huggingface_hub use its default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def hf_cached(repo_id: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def resolve_checkpoint(checkpoint: str | os.PathLike | None = None,
                       variant: str | None = None) -> Path:
    """The path of a SAM checkpoint; raises :class:`WeightsNotFound` saying what to fetch.

    Without an explicit path the HF cache is searched for ``variant`` or, when None, for the
    first cached of ViT-H, ViT-L, ViT-B (segment-anything's default order of preference).
    """
    explicit = checkpoint or os.environ.get(ENV_CHECKPOINT)
    wanted = [variant] if variant else list(FILES)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            source = "checkpoint=" if checkpoint else f"${ENV_CHECKPOINT}"
            raise WeightsNotFound(f"SAM weights not found at {path} (from {source}). "
                                  + how_to_get(wanted))
        return path
    for name in wanted:
        path = hf_cached(HF_REPO, f"checkpoints/{FILES[name]}")
        if path is not None:
            log.info("using SAM %s weights from the Hugging Face cache: %s", name, path)
            return path
    raise WeightsNotFound(f"SAM weights ({', '.join(wanted)}) are not on this machine: no "
                          f"checkpoint= given, ${ENV_CHECKPOINT} unset, nothing cached for "
                          f"{HF_REPO}. " + how_to_get(wanted))


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU; unwrap ``{"model": ...}``
    and ``module.`` prefixes if a training script added them."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise WeightsMismatch(f"cannot read {path} as a PyTorch checkpoint with "
                              f"weights_only=True ({type(exc).__name__}: {exc}); expected an "
                              "official SAM .pth") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or PATCH_KEY not in {k.removeprefix("module.") for k in state}:
        raise WeightsMismatch(f"{path} is not a Segment Anything checkpoint (no {PATCH_KEY}); "
                              "expected sam_vit_b/l/h_*.pth")
    return {k.removeprefix("module."): v for k, v in state.items()}


def infer_variant(state: Mapping[str, torch.Tensor], source: Path | str = "checkpoint") -> str:
    """``vit_b``/``vit_l``/``vit_h`` from the patch-embedding width (768/1024/1280)."""
    width = int(state[PATCH_KEY].shape[0])
    if width not in WIDTHS:
        raise WeightsMismatch(f"{source} has an image encoder of width {width}, not one of the "
                              "SAM variants (768 ViT-B, 1024 ViT-L, 1280 ViT-H)")
    return WIDTHS[width]


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
              source: Path | str = "checkpoint") -> None:
    """Load ``state`` strictly; a mismatch raises :class:`WeightsMismatch`."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsMismatch(f"{source} does not fit the SAM architecture: {exc}") from None
