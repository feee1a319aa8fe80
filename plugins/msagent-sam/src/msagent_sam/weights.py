"""Finding and loading the original Segment Anything checkpoints (never downloads).

Resolution order: the ``checkpoint=`` option, ``$MSAGENT_SAM_CHECKPOINT``, the Hugging Face
cache (``huggingface_hub.try_to_load_from_cache``; the official ``.pth`` files are mirrored
in the repo ``ybelkada/segment-anything`` under ``checkpoints/``). Files are read with
``torch.load(weights_only=True, map_location="cpu")``; the official layout is a flat
state_dict. The variant (ViT-B/L/H) is read off the checkpoint's patch-embedding width.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from msagent.backbones import weights
from msagent.errors import InvalidInput, WeightsMismatch

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
            f"pass checkpoint=<path> "
            f"(CLI: --backbone-option checkpoint=<path>) or set {ENV_CHECKPOINT}=<path>. "
            "msagent never downloads them.")


def resolve_checkpoint(checkpoint: str | os.PathLike | None = None,
                       variant: str | None = None) -> Path:
    """The path of a SAM checkpoint; raises :class:`WeightsNotFound` saying what to fetch.

    Without an explicit path the HF cache is searched for ``variant`` or, when None, for the
    first cached of ViT-H, ViT-L, ViT-B (segment-anything's default order of preference).
    """
    wanted = [variant] if variant else list(FILES)
    return weights.resolve_checkpoint(checkpoint, ENV_CHECKPOINT,
                                      [(HF_REPO, f"checkpoints/{FILES[v]}") for v in wanted],
                                      what="SAM", hint=how_to_get(wanted))


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU; unwrap ``{"model": ...}``
    and ``module.`` prefixes if a training script added them."""
    return weights.load_state_dict(path, require=("Segment Anything", PATCH_KEY),
                                   expected="an official sam_vit_b/l/h_*.pth")


def infer_variant(state: Mapping[str, torch.Tensor], source: Path | str = "checkpoint") -> str:
    """``vit_b``/``vit_l``/``vit_h`` from the patch-embedding width (768/1024/1280)."""
    width = int(state[PATCH_KEY].shape[0])
    if width not in WIDTHS:
        raise WeightsMismatch(f"{source} has an image encoder of width {width}, not one of the "
                              "SAM variants (768 ViT-B, 1024 ViT-L, 1280 ViT-H)")
    return WIDTHS[width]

