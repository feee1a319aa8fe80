"""Fixtures: a random-weight SAM ViT-B saved as the official flat state_dict, a non-square
phantom, and a fake Hugging Face cache."""

from __future__ import annotations

import pytest
import torch

from msagent.testing import add_to_hf_cache, make_phantom


@pytest.fixture(autouse=True)
def no_ambient_weights(monkeypatch, tmp_path):
    """Tests see no real weights: env var unset, an empty HF cache."""
    monkeypatch.delenv("MSAGENT_SAM_CHECKPOINT", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh Hugging Face cache (``$HF_HUB_CACHE``); call it as
    ``hf_cache(repo_id, filename, source)`` to put a file in it."""
    root = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return lambda repo_id, filename, source: add_to_hf_cache(root, repo_id, filename, source)


@pytest.fixture(scope="session")
def phantom():
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
