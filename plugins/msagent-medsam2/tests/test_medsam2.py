"""Backbone ``medsam2``: SAM2.1 Hiera-tiny with random weights saved as ``MedSAM2_latest.pt``
(``{"model": state_dict}``), at MedSAM2's own 512 px and at MedSAM-Agent's 1024 px."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from msagent_medsam2.decoding import resize_logits
from msagent_medsam2.model import build_model, medsam2_config
from msagent_medsam2.weights import TRUNK_KEY

import msagent
from msagent.errors import InvalidInput, WeightsMismatch, WeightsNotFound
from msagent.types import BBox, Point, Prompts

# sam2's SAM2Transforms (built by SAM2ImagePredictor) scripts its resize with a deprecated API
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")
BOX = BBox(100, 45, 240, 135)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model(medsam2_config(512))
    path = tmp_path_factory.mktemp("medsam2") / "MedSAM2_latest.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def seg(checkpoint):
    return msagent.load_backbone("medsam2", checkpoint=checkpoint, image_size=512, device="cpu")


@pytest.fixture(scope="module")
def emb(seg, phantom):
    return seg.encode(phantom[0])


def test_512_config_ships_with_the_plugin_and_loads_strictly(seg, checkpoint):
    saved = torch.load(checkpoint, weights_only=True)["model"]
    state = seg.model.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    assert seg.name == "medsam2" and seg.image_size == 512
    assert medsam2_config(512).parent.parent.name == "msagent_medsam2"
    assert tuple(seg.model.sam_prompt_encoder.mask_input_size) == (128, 128)


def test_default_is_the_1024_config_medsam_agent_ran(checkpoint):
    seg = msagent.load_backbone("medsam2", checkpoint=checkpoint, device="cpu")
    assert seg.image_size == 1024 and medsam2_config(1024).name == "sam2.1_hiera_t.yaml"
    with pytest.raises(InvalidInput, match="1024"):
        medsam2_config(768)


def test_512_results_equal_medsam2s_predictor(seg, emb, phantom):
    """sam2 1.1.0's predictor hard-codes 1024-px feature sizes; MedSAM2's fork derives them
    from image_size. With that one fix it is MedSAM2's reference for 512-px inference."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(seg.model)
    predictor._bb_feat_sizes = [(128, 128), (64, 64), (32, 32)]
    predictor.set_image(phantom[0])
    torch.testing.assert_close(emb.features.image_embed, predictor._features["image_embed"])
    box = np.array(BOX.as_tuple(), np.float32)
    masks, scores, logits = predictor.predict(box=box)
    best = int(np.argmax(scores))
    first = seg.decode(emb, Prompts(box=BOX))
    assert first.low_res_logits.shape == (256, 256)
    assert (first.mask != (masks[best] > 0)).sum() == 0
    np.testing.assert_allclose(resize_logits(torch.as_tensor(first.low_res_logits)[None, None],
                                             128)[0, 0], logits[best], atol=1e-4)
    click = Point(170, 90, True)
    masks, scores, logits = predictor.predict(np.array([[click.x, click.y]], np.float32),
                                              np.array([1]), box, logits[best][None])
    best = int(np.argmax(scores))
    second = seg.decode(emb, Prompts(box=BOX, points=(click,)), first.low_res_logits)
    assert (second.mask != (masks[best] > 0)).sum() == 0
    assert second.score == pytest.approx(float(scores[best]), abs=1e-5)


def test_128_px_logits_round_trip_exactly_through_256():
    native = torch.randn(3, 1, 128, 128)
    carried = resize_logits(native, 256)
    assert carried.shape[-2:] == (256, 256)
    assert torch.equal(resize_logits(carried, 128), native)


@pytest.mark.slow
def test_encode_twice_is_one_miss_one_hit_and_batches_agree(seg, phantom):
    seg.clear_cache()
    image = phantom[0]
    other = np.ascontiguousarray(image[:, ::-1])
    single = seg.encode(image)
    assert seg.encode(image.copy()) is single
    assert (seg.cache_info().hits, seg.cache_info().misses) == (1, 1)
    batched = seg.encode_images([image, other])
    torch.testing.assert_close(batched[0].image_embed, single.features.image_embed,
                               atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batched[1].image_embed, batched[0].image_embed)


def test_segment_by_name_with_weights_from_the_environment(checkpoint, phantom, monkeypatch):
    monkeypatch.setenv("MSAGENT_MEDSAM2_CHECKPOINT", str(checkpoint))
    image, truth = phantom
    result = msagent.segment(image, "bright disk", backbone="medsam2", policy="expert",
                             ground_truth=truth, max_turns=3,
                             backbone_options={"image_size": 512, "device": "cpu"})
    assert result.mask.shape == image.shape[:2] and result.mask.dtype == bool
    assert result.turns >= 1


def test_missing_weights_say_what_to_download(checkpoint, hf_cache, monkeypatch):
    with pytest.raises(WeightsNotFound) as info:
        msagent.load_backbone("medsam2", device="cpu")
    message = str(info.value)
    assert "wanglab/MedSAM2" in message and "MedSAM2_latest.pt" in message
    assert "MSAGENT_MEDSAM2_CHECKPOINT" in message
    monkeypatch.setenv("MSAGENT_MEDSAM2_CHECKPOINT", "/nonexistent/MedSAM2_latest.pt")
    with pytest.raises(WeightsNotFound, match=r"\$MSAGENT_MEDSAM2_CHECKPOINT"):
        msagent.load_backbone("medsam2", device="cpu")
    monkeypatch.delenv("MSAGENT_MEDSAM2_CHECKPOINT")
    cached = hf_cache("wanglab/MedSAM2", "MedSAM2_latest.pt", checkpoint)
    assert msagent.load_backbone("medsam2", image_size=512, device="cpu").checkpoint == cached


def test_wrong_files_are_refused(tmp_path):
    small = {TRUNK_KEY: torch.zeros(96, 3, 7, 7)}
    small.update({f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(16)})
    torch.save({"model": small}, tmp_path / "small.pt")
    with pytest.raises(WeightsMismatch, match="small"):
        msagent.load_backbone("medsam2", checkpoint=tmp_path / "small.pt", device="cpu")
    torch.save({"model": {"foo": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(WeightsMismatch, match="not a SAM2 checkpoint"):
        msagent.load_backbone("medsam2", checkpoint=tmp_path / "other.pt", device="cpu")


def test_listing_the_backbones_imports_no_torch():
    code = ("import sys, msagent; names = msagent.list_backbones(); "
            "assert {'medsam2', 'sam2'} <= set(names), names; "
            "assert not {'torch', 'sam2', 'hydra'} & set(sys.modules), 'heavy import'")
    env = dict(os.environ, MSAGENT_LOAD_PLUGINS="medsam2")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_conformance(seg, phantom, emb):
    from msagent.testing import check_segmenter

    check_segmenter(seg, phantom[0], thin=True)
