"""Fixtures: random-weight SAM2.1 Hiera-tiny checkpoints in the official layout, a phantom,
and no ambient weights (``hf_cache``, a fake Hugging Face cache, is msagent's fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from msagent.testing import make_phantom


def save_official(model: torch.nn.Module, path: Path) -> Path:
    """Save ``model`` as sam2/MedSAM2 release their checkpoints: ``{"model": state_dict}``."""
    torch.save({"model": model.state_dict()}, path)
    return path



@pytest.fixture(autouse=True)
def no_ambient_weights(monkeypatch, tmp_path):
    """Tests see no real weights: env vars unset, an empty HF cache."""
    for name in ("MSAGENT_MEDSAM2_CHECKPOINT", "MSAGENT_SAM2_CHECKPOINT", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


@pytest.fixture(scope="session")
def phantom():  # not msagent's phantom fixture: non-square, and built once per session
    """A non-square (200×300) bright ellipse on a dark background, and its mask."""
    return make_phantom(height=200, width=300, center=(90, 170), radii=(45, 70))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """SAM2.1 Hiera-tiny with random weights, built by sam2's own builder, saved officially."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", device="cpu")
    return save_official(model, tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt")
