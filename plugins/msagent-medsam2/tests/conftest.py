"""Fixtures: random-weight SAM2.1 Hiera-tiny checkpoints in the official layout, a phantom,
and a fake Hugging Face cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from msagent.testing import add_to_hf_cache, make_phantom


def save_official(model: torch.nn.Module, path: Path) -> Path:
    """Save ``model`` as sam2/MedSAM2 release their checkpoints: ``{"model": state_dict}``."""
    torch.save({"model": model.state_dict()}, path)
    return path



@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh Hugging Face cache (``$HF_HUB_CACHE``); call it as
    ``hf_cache(repo_id, filename, source)`` to put a file in it."""
    root = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return lambda repo_id, filename, source: add_to_hf_cache(root, repo_id, filename, source)


@pytest.fixture(autouse=True)
def no_ambient_weights(monkeypatch, tmp_path):
    """Tests see no real weights: env vars unset, an empty HF cache."""
    for name in ("MSAGENT_MEDSAM2_CHECKPOINT", "MSAGENT_SAM2_CHECKPOINT", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


@pytest.fixture(scope="session")
def phantom():
    """A non-square (200×300) bright ellipse on a dark background, and its mask."""
    return make_phantom(height=200, width=300, center=(90, 170), radii=(45, 70))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """SAM2.1 Hiera-tiny with random weights, built by sam2's own builder, saved officially."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", device="cpu")
    return save_official(model, tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt")
