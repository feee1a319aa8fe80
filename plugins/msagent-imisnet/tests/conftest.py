"""Shared fixtures: one random-weight IMIS-Net saved in the official layout, a tiny offline
CLIP tokenizer, the segmenter loaded from that file, and one encoded non-square phantom.

Encoding a ViT-B at 1024 px takes tens of seconds on two CPU cores, so everything that needs
an embedding shares the session-scoped ``embedding``.
"""

from __future__ import annotations

import string

import pytest
import torch

import msagent
from msagent.testing import make_phantom


def tiny_clip_tokenizer():
    """A CLIP tokenizer over single characters (no merges), built offline. Its special tokens
    keep CLIP's ids (49406 start, 49407 end) so the text model pools at the end token."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for char in list(string.ascii_lowercase) + list(string.digits) + [".", ","]:
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = 49406
    vocab["<|endoftext|>"] = 49407
    return CLIPTokenizer(vocab=vocab, merges=[])


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_clip_tokenizer()


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """(model, path): a seeded random-weight IMIS-Net and its flat state_dict on disk."""
    from msagent_imisnet.model import build_imisnet

    torch.manual_seed(0)
    model = build_imisnet().eval()
    path = tmp_path_factory.mktemp("weights") / "IMISNet-B.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="session")
def seg(reference, tokenizer):
    return msagent.load_backbone("imisnet", checkpoint=str(reference[1]), device="cpu",
                                  tokenizer=tokenizer)


@pytest.fixture(scope="session")
def wide():
    """A non-square phantom (H 120 × W 200) and its mask."""
    return make_phantom(height=120, width=200, center=(60, 120), radii=(30, 50))


@pytest.fixture(scope="session")
def embedding(seg, wide):
    return seg.encode(wide[0])
