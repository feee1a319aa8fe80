"""Finding IMISNet-B.pth without downloading, and reading it safely."""

import pytest
import torch
from msagent_imisnet import weights
from msagent_imisnet.model import build_imisnet

from msagent.errors import WeightsMismatch, WeightsNotFound


@pytest.fixture
def no_caches(monkeypatch, tmp_path):
    """No env var, an empty HF cache and an empty ModelScope cache."""
    import huggingface_hub.constants

    monkeypatch.delenv(weights.ENV_CHECKPOINT, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    return tmp_path


def test_nothing_found_says_what_to_download_and_where(no_caches):
    with pytest.raises(WeightsNotFound) as info:
        weights.resolve_checkpoint()
    message = str(info.value)
    assert "IMISNet-B.pth" in message and "modelscope download --model 1Junlong/IMIS-Net" in message
    assert weights.ENV_CHECKPOINT in message and "checkpoint=" in message
    assert "never downloads" in message


def test_explicit_path_and_env_var_must_exist(no_caches, monkeypatch):
    with pytest.raises(WeightsNotFound, match="from checkpoint="):
        weights.resolve_checkpoint(no_caches / "missing.pth")
    monkeypatch.setenv(weights.ENV_CHECKPOINT, str(no_caches / "also-missing.pth"))
    with pytest.raises(WeightsNotFound, match=r"from \$MSAGENT_IMISNET_CHECKPOINT"):
        weights.resolve_checkpoint()
    real = no_caches / "IMISNet-B.pth"
    real.write_bytes(b"x")
    monkeypatch.setenv(weights.ENV_CHECKPOINT, str(real))
    assert weights.resolve_checkpoint() == real
    assert weights.resolve_checkpoint(real) == real  # the option wins over the variable


def test_found_in_the_hugging_face_cache(no_caches):
    repo = no_caches / "hf" / "models--1Junlong--IMIS-Net"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "IMISNet-B.pth").write_bytes(b"x")
    assert weights.resolve_checkpoint() == snapshot / "IMISNet-B.pth"


def test_found_in_the_modelscope_cache(no_caches):
    target = no_caches / "ms" / "models" / "1Junlong" / "IMIS-Net" / "IMISNet-B.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert weights.resolve_checkpoint() == target


def test_training_checkpoints_are_unwrapped(tmp_path):
    tensors = {"text_out_dim.weight": torch.ones(2), "text_out_dim.bias": torch.zeros(2)}
    path = tmp_path / "IMIS_latest.pth"
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in tensors.items()},
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    loaded = weights.load_state_dict(path)
    assert set(loaded) == set(tensors)
    flat = {**tensors, "text_model.text_model.embeddings.position_ids": torch.arange(77)[None]}
    assert set(weights.unwrap_state_dict(flat)) == set(tensors)  # a benign extra buffer


def test_unreadable_or_unsafe_files_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMismatch, match="weights_only=True"):
        weights.load_state_dict(garbage)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, unsafe)  # a pickled module, not a state_dict
    with pytest.raises(WeightsMismatch):
        weights.load_state_dict(unsafe)
    with pytest.raises(WeightsMismatch, match="no state_dict"):
        weights.unwrap_state_dict({"epoch": 3})


def test_key_or_shape_mismatch_names_the_keys():
    with torch.device("meta"):
        model = build_imisnet()
    state = dict(model.state_dict())
    state.pop("text_out_dim.bias")
    state["mask_decoder.iou_token.weight"] = torch.empty(1, 256, device="meta")
    state["image_encoder.sam_encoder.head.fc.weight"] = torch.empty(1, device="meta")
    with pytest.raises(WeightsMismatch) as info:
        weights.load_into(model, state, "other.pth")
    message = str(info.value)
    for key in ("text_out_dim.bias", "mask_decoder.iou_token.weight", "head.fc.weight"):
        assert key in message
