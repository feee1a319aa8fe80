"""The network reproduces the official checkpoint's layout and IMIS-Net's fixed geometry."""

import json
from pathlib import Path

import pytest
import torch
from msagent_imisnet.model import IMISNet, build_imisnet

OFFICIAL = json.loads((Path(__file__).parent / "data" / "imisnet_b_state_dict.json").read_text())


@pytest.fixture(scope="module")
def meta_model() -> IMISNet:
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        return build_imisnet()


def test_state_dict_has_exactly_the_official_keys_and_shapes(meta_model):
    ours = {k: list(v.shape) for k, v in meta_model.state_dict().items()}
    official = OFFICIAL["tensors"]
    assert len(official) == OFFICIAL["count"] == 527
    assert sorted(set(ours) - set(official)) == []
    assert sorted(set(official) - set(ours)) == []
    assert {k: s for k, s in ours.items() if s != official[k]} == {}


def test_official_prefixes_and_widths():
    tensors = OFFICIAL["tensors"]
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes == {"image_encoder", "prompt_encoder", "mask_decoder", "text_model",
                        "text_out_dim"}
    assert all(k.startswith(("image_encoder.sam_encoder.", "image_encoder.neck."))
               for k in tensors if k.startswith("image_encoder"))
    assert all(k.startswith("text_model.text_model.") for k in tensors
               if k.startswith("text_model"))
    assert tensors["image_encoder.neck.0.weight"] == [768, 768, 1, 1]
    assert tensors["image_encoder.neck.2.weight"] == [768, 768, 3, 3]
    assert tensors["image_encoder.sam_encoder.neck.0.weight"] == [256, 768, 1, 1]  # unused
    assert tensors["text_out_dim.weight"] == [768, 512]
    assert tensors["mask_decoder.text_output.weight"] == [96, 768]
    assert tensors["mask_decoder.semantic_tokens.weight"] == [4, 768]
    assert tensors["mask_decoder.output_upscaling.3.weight"] == [192, 96, 2, 2]


def test_encoder_geometry(meta_model):
    blocks = meta_model.image_encoder.sam_encoder.blocks
    assert len(blocks) == 12
    assert [i for i, b in enumerate(blocks) if b.window_size == 0] == [2, 5, 8, 11]
    assert {b.window_size for i, b in enumerate(blocks) if i not in (2, 5, 8, 11)} == {14}
    assert all(b.norm1.eps == 1e-5 for b in blocks)
    assert meta_model.prompt_encoder.dense_pe().shape == (1, 768, 64, 64)


def test_image_normalisation_uses_imagenet_statistics_on_the_0_255_scale(monkeypatch):
    model = build_imisnet()
    monkeypatch.setattr(model, "image_encoder", torch.nn.Identity())
    pixels = torch.tensor([[123.675, 116.28, 103.53], [182.07, 173.4, 160.905]]).T
    out = model.embed_image(pixels.reshape(1, 3, 2, 1))
    torch.testing.assert_close(out.reshape(3, 2), torch.tensor([[0.0, 1.0]] * 3))
