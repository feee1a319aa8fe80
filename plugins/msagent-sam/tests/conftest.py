"""Fixtures: a random-weight SAM ViT-B saved as the official flat state_dict, a non-square
phantom, and no ambient weights (``hf_cache``, a fake Hugging Face cache, is msagent's fixture)."""

from __future__ import annotations

import pytest
import torch

from msagent.testing import make_phantom


@pytest.fixture(autouse=True)
def no_ambient_weights(monkeypatch, tmp_path):
    """Tests see no real weights: env var unset, an empty HF cache."""
    monkeypatch.delenv("MSAGENT_SAM_CHECKPOINT", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


@pytest.fixture(scope="session")
def phantom():  # not msagent's phantom fixture: non-square, and built once per session
    """A non-square (200×300) bright ellipse on a dark background, and its mask."""
    return make_phantom(height=200, width=300, center=(90, 170), radii=(45, 70))


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory):
    """SAM ViT-B with random weights, built by segment-anything, saved as the official file is."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    model = sam_model_registry["vit_b"]()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_01ec64.pth"
    torch.save(model.state_dict(), path)
    return path
