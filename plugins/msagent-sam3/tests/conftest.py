"""Fixtures: a reduced SAM 3 of the real architecture with random weights, saved in the
published layout with a real CLIP tokenizer (``msagent_sam3.tiny``); a phantom; a slice
stack; no ambient weights (``hf_cache``, a fake Hugging Face cache, is msagent's fixture)."""

from __future__ import annotations

import numpy as np
import pytest

from msagent.testing import make_phantom, make_tube


@pytest.fixture(autouse=True)
def no_ambient_weights(monkeypatch, tmp_path):
    """Tests see no real weights: the variable unset, an empty HF cache."""
    for name in ("MSAGENT_SAM3_CHECKPOINT", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A directory as transformers saves SAM 3: config.json, model.safetensors, tokenizer."""
    from msagent_sam3.tiny import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("sam3"), seed=0)


@pytest.fixture(scope="session")
def segmenter(checkpoint):
    import msagent

    return msagent.load_backbone("sam3", checkpoint=str(checkpoint), device="cpu")


@pytest.fixture(scope="session")
def phantom():
    """A non-square (200×300) bright ellipse on a dark background, and its mask."""
    return make_phantom(height=200, width=300, center=(90, 170), radii=(45, 70))


@pytest.fixture(scope="session")
def stack():
    """Eight 40×80 slices of a bright tube, as a SliceStack, and the tube's mask."""
    from msagent.backbones import SliceStack

    volume, mask = make_tube(count=8, size=(40, 80))
    gray = np.clip(volume, 0, 255).astype(np.uint8)
    return SliceStack(gray), mask
