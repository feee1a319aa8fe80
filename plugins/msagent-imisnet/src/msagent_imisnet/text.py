"""Text prompts: the CLIP tokenizer (found offline) and IMIS-Net's prompt template.

IMIS-Net embeds "A segmentation area of a {target}." with CLIP's text transformer. Upstream
accepts only the names in its category table; here any target text is normalised the same
way (lower case, ``_``/``-`` as spaces, single spaces) and used directly.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from msagent.errors import WeightsNotFound

log = logging.getLogger(__name__)

TEMPLATE = "A segmentation area of a {}."
TOKENIZER_REPO = "openai/clip-vit-base-patch32"
ENV_TOKENIZER = "MSAGENT_IMISNET_TOKENIZER"
MAX_TOKENS = 77  # CLIP's context length

TOKENIZER_HINT = (
    f"IMIS-Net's text prompts need the CLIP tokenizer of {TOKENIZER_REPO} on this machine: "
    f"`hf download {TOKENIZER_REPO} vocab.json merges.txt tokenizer.json "
    "tokenizer_config.json special_tokens_map.json` (it lands in the HF cache and is found "
    f"offline), or point tokenizer= / ${ENV_TOKENIZER} at a folder holding those files."
)


def normalize_target(target: str) -> str:
    """``"Left_adrenal-gland "`` → ``"left adrenal gland"`` (as upstream treats its names)."""
    text = target.lower().replace("_", " ").replace("-", " ")
    return re.sub(r"\s+", " ", text).strip().rstrip(".")


def prompt_text(target: str) -> str:
    """The sentence IMIS-Net embeds for ``target``."""
    return TEMPLATE.format(normalize_target(target))


def _load(source: str, local_files_only: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)


def resolve_tokenizer(tokenizer: Any = None, *, required: bool = False):
    """A CLIP tokenizer, or None when there is none and ``required`` is False.

    ``tokenizer``: a tokenizer object (used as is), a folder path, or None (then
    ``$MSAGENT_IMISNET_TOKENIZER``, then the Hugging Face cache of ``openai/clip-vit-base-patch32``;
    never downloads). An explicit path or variable that does not load raises
    :class:`WeightsNotFound`.
    """
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    explicit = tokenizer or os.environ.get(ENV_TOKENIZER)
    if explicit:
        source = "tokenizer=" if tokenizer else f"${ENV_TOKENIZER}"
        if not Path(explicit).expanduser().is_dir():
            raise WeightsNotFound(f"no tokenizer folder at {explicit} (from {source}). "
                                  + TOKENIZER_HINT)
        try:
            return _load(os.fspath(Path(explicit).expanduser()), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsNotFound(f"{explicit} (from {source}) holds no loadable tokenizer "
                                  f"({exc}). " + TOKENIZER_HINT) from None
    try:
        return _load(TOKENIZER_REPO, local_files_only=True)
    except (OSError, ValueError):
        if required:
            raise WeightsNotFound("use_text_prompt=True but no CLIP tokenizer was found. "
                                  + TOKENIZER_HINT) from None
        return None


def tokenize(tokenizer, texts: Sequence[str], device: torch.device,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Templated, padded token ids and attention mask (B×L each, L ≤ 77) on ``device``."""
    batch = tokenizer([prompt_text(t) for t in texts], padding=True, truncation=True,
                      max_length=MAX_TOKENS, return_tensors="pt")
    mask = batch.get("attention_mask")
    ids = batch["input_ids"].to(device)
    return ids, (torch.ones_like(ids) if mask is None else mask.to(device))
