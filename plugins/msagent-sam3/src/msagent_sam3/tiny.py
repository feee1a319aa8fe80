"""A reduced SAM 3 of the real architecture, with random weights, saved as transformers saves
the official checkpoint — for tests and benchmarks, offline.

:func:`tiny_config` shrinks widths, depths and the input size (224 px instead of 1008) but
keeps every module of ``Sam3VideoModel`` (the layout ``facebook/sam3`` is published in: the
detector, the tracker with its memory, the tracker's neck). :func:`save_checkpoint` writes a
directory with ``config.json``, ``model.safetensors``, the processor's configuration and a
real CLIP tokenizer (:func:`clip_tokenizer`), so that transformers' own classes
(``Sam3Model``, ``Sam3TrackerModel``, ``Sam3TrackerVideoModel``, ``Sam3Processor``) load it
with ``from_pretrained`` exactly as they load the official one.

SAM 3's text encoder uses CLIP's BPE vocabulary; ``open-clip-torch`` ships its merges file
(``bpe_simple_vocab_16e6.txt.gz``), from which :func:`clip_tokenizer` builds the tokenizer
(vocabulary and ids equal to ``openai/clip-vit-*``'s) without a download.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import torch

#: the reduced model's input size (16×16 patches of 14 px)
TINY_IMAGE_SIZE = 224
MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408


def tiny_config(image_size: int = TINY_IMAGE_SIZE, width: int = 32):
    """A ``Sam3VideoConfig`` of the official architecture, reduced (≈ 3 M parameters, half of
    them the 49408-token text embedding)."""
    from transformers import Sam3VideoConfig

    hidden = 128  # > the memory width (64), as in the full model (256)
    vit = {"model_type": "sam3_vit_model", "hidden_size": width, "intermediate_size": 2 * width,
           "num_hidden_layers": 2, "num_attention_heads": 2, "window_size": 8, "global_attn_indexes": [1],
           "image_size": image_size, "pretrain_image_size": image_size}
    text = {"model_type": "clip_text_model", "vocab_size": CLIP_VOCAB_SIZE, "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": 2, "num_attention_heads": 2, "projection_dim": width,
            "max_position_embeddings": 32}
    small = {"hidden_size": hidden, "num_attention_heads": 2, "intermediate_size": 2 * hidden}
    detector = {
        "model_type": "sam3",
        "vision_config": {"model_type": "sam3_vision_model", "backbone_config": vit,
                          "fpn_hidden_size": hidden},
        "text_config": text,
        "geometry_encoder_config": {**small, "num_layers": 1},
        "detr_encoder_config": {**small, "num_layers": 1},
        "detr_decoder_config": {**small, "num_layers": 2, "num_queries": 12},
        "mask_decoder_config": {"hidden_size": hidden, "num_attention_heads": 2},
    }
    tracker = {
        "model_type": "sam3_tracker_video",
        "vision_config": {"model_type": "sam3_vision_model", "backbone_config": vit,
                          "fpn_hidden_size": hidden},
        "prompt_encoder_config": {"hidden_size": hidden},
        "mask_decoder_config": {"hidden_size": hidden, "num_attention_heads": 2, "mlp_dim": 2 * hidden,
                                "iou_head_hidden_dim": hidden},
        "memory_attention_hidden_size": hidden, "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 2 * hidden,
        "memory_encoder_hidden_size": hidden,
        "mask_downsampler_embed_dim": hidden, "memory_fuser_embed_dim": hidden,
        "memory_fuser_intermediate_dim": 2 * hidden, "memory_fuser_num_layers": 1,
    }
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker)
    config.image_size = image_size  # propagates to the tracker's feature and RoPE sizes
    return config


def random_model(config=None, seed: int = 0):
    """``Sam3VideoModel(config)`` with random weights (``seed``); the official layout.

    transformers zero-initialises a few parameters (the no-memory embeddings, the temporal
    encodings); they are drawn at random here too, so that tests see every parameter act."""
    from transformers import Sam3VideoModel

    torch.manual_seed(seed)
    model = Sam3VideoModel(config or tiny_config()).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim and not param.abs().any():
                param.normal_(0, 0.5 if "embedding" in name or "encoding" in name else 0.02)
    return model


def merges_path() -> Path:
    """open-clip-torch's copy of CLIP's BPE merges (found without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("clip_tokenizer needs open-clip-torch (pip install open-clip-torch), "
                          f"which ships CLIP's BPE merges ({MERGES_FILE})")
    return Path(next(iter(spec.submodule_search_locations))) / MERGES_FILE


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable-character table, in byte order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def clip_tokenizer():
    """transformers' ``CLIPTokenizer`` built from CLIP's BPE merges (the vocabulary CLIP and
    SAM 3 use: 256 byte tokens, their end-of-word forms, 48894 merges, start/end tokens)."""
    from transformers import CLIPTokenizer

    lines = gzip.open(merges_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_VOCAB_SIZE - 2 * 256 - 2 + 1]]
    base = _bytes_to_unicode()
    vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=merges)


def processors(image_size: int = TINY_IMAGE_SIZE, tokenizer=None):
    """(``Sam3Processor``, ``Sam3TrackerProcessor``, ``Sam3TrackerVideoProcessor``) for a model
    of ``image_size``, as the official checkpoint's processor files configure them (images
    stretched to size×size, mean = std = 0.5)."""
    from transformers import (
        Sam3ImageProcessor,
        Sam3Processor,
        Sam3TrackerProcessor,
        Sam3TrackerVideoProcessor,
    )
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    size = {"height": image_size, "width": image_size}
    images = Sam3ImageProcessor(size=size)
    video = Sam2VideoVideoProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return (Sam3Processor(images, tokenizer if tokenizer is not None else clip_tokenizer()),
            Sam3TrackerProcessor(images), Sam3TrackerVideoProcessor(images, video))


def save_checkpoint(directory: str | Path, model=None, *, seed: int = 0,
                    tokenizer: bool = True) -> Path:
    """Write a random-weight reduced SAM 3 to ``directory`` as the official checkpoint is laid
    out (``config.json``, ``model.safetensors`` with the published keys) with the concept
    processor's files (the image processor's; the tokenizer's too unless ``tokenizer=False``).
    Returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else random_model(seed=seed)
    # not model.save_pretrained: transformers 5 re-applies the tracker's key conversion when
    # saving a Sam3VideoModel (tracker_model.tracker_model.*), which is not the published layout
    model.config.save_pretrained(directory)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    image_size = int(model.config.image_size)
    concept, _, _ = processors(image_size)
    if tokenizer:
        concept.save_pretrained(directory)
    else:
        concept.image_processor.save_pretrained(directory)
    return directory
