"""Offline resolution of the checkpoint, registration, and the one-argument swap."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from msagent_qwen import loading

import msagent
from msagent.errors import WeightsNotFound


def test_missing_directory_and_empty_directory_say_what_to_pass(tmp_path):
    with pytest.raises(WeightsNotFound, match="no checkpoint directory .* model="):
        msagent.load_policy("qwen", model=str(tmp_path / "missing"))
    with pytest.raises(WeightsNotFound, match="no config.json"):
        msagent.load_policy("qwen", model=str(tmp_path))


def test_default_checkpoint_not_cached_says_what_to_download(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv(loading.MODEL_ENV, raising=False)
    with pytest.raises(WeightsNotFound) as info:
        msagent.load_policy("qwen")
    message = str(info.value)
    assert loading.DEFAULT_MODEL in message and "hf download" in message
    assert "never downloads" in message and loading.MODEL_ENV in message


def test_hugging_face_id_resolves_from_the_local_cache_only(tiny_checkpoints, tmp_path, monkeypatch):
    """A checkpoint laid out as the HF cache does is found by id, without network."""
    from huggingface_hub import constants

    repo = tmp_path / "models--Saint-lsy--MedSAM-Agent-Qwen3-VL-8B-MedSAM2"
    commit = "0" * 40
    shutil.copytree(tiny_checkpoints["qwen3_vl"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(loading.MODEL_ENV, raising=False)
    assert loading.resolve_model() == repo / "snapshots" / commit
    monkeypatch.setenv(loading.MODEL_ENV, str(tiny_checkpoints["qwen2_5_vl"]))
    assert loading.resolve_model() == tiny_checkpoints["qwen2_5_vl"]


def test_listing_plugins_imports_no_torch_or_transformers():
    code = ("import sys, msagent; assert 'qwen' in msagent.list_policies(); "
            "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    env = {**os.environ, "MSAGENT_LOAD_PLUGINS": "qwen"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_bad_options_are_refused(tiny_checkpoints):
    from msagent.errors import InvalidInput

    with pytest.raises(InvalidInput, match="dtype"):
        msagent.load_policy("qwen", model=str(tiny_checkpoints["qwen3_vl"]), dtype="fp8")
    with pytest.raises(InvalidInput, match="max_new_tokens"):
        msagent.load_policy("qwen", model=str(tiny_checkpoints["qwen3_vl"]), max_new_tokens=0)


@pytest.mark.slow
def test_cli_swaps_the_policy_with_one_option(tiny_checkpoints, phantom, tmp_path, capsys):
    from msagent import io
    from msagent.cli import main

    image = tmp_path / "phantom.png"
    io.save_png(phantom[0], image)
    out = tmp_path / "traj.json"
    code = main(["segment", str(image), "blob", "--backbone", "litemedsam", "--policy", "qwen",
                 "--policy-option", f"model={tiny_checkpoints['qwen2_5_vl']}",
                 "--policy-option", "max_new_tokens=8", "--policy-option", "max_pixels=16384",
                 "--backbone-option", "device=cpu", "--trajectory", str(out)])
    trajectory = json.loads(out.read_text())
    assert trajectory["meta"]["policy"] == "qwen"
    assert trajectory["steps"] and all(s["usage"]["completion_tokens"] for s in trajectory["steps"]
                                       if s["raw_text"])
    # no mask at all is a failure (exit 2); a mask after an early end exits 1 (see msagent segment)
    assert code in ((0, 1) if any(s["mask"] for s in trajectory["steps"]) else (2,))
    assert "stopped:" in capsys.readouterr().out
