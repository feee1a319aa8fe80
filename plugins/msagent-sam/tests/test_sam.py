"""Backbone ``sam``: the real ViT-B architecture with random weights, loaded from an official
flat state_dict; results compared with segment-anything's own SamPredictor.

ViT-B at 1024 px takes most of a minute on two CPU cores, so the phantom is encoded once per
module; the predictor reuses that embedding (its input is checked to be identical), and one
``slow`` test runs the predictor's own ``set_image`` for the encoder itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from msagent_sam.segmenter import SamGeometry, sam_upscale
from msagent_sam.weights import resolve_checkpoint

import msagent
from msagent.errors import InvalidInput, WeightsMismatch, WeightsNotFound
from msagent.types import BBox, Point, Prompts

BOX = BBox(100, 45, 240, 135)
CLICKS = (Point(170, 90, True), Point(110, 50, False))


@pytest.fixture(scope="module")
def seg(vit_b_checkpoint):
    return msagent.load_backbone("sam", checkpoint=vit_b_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def emb(seg, phantom):
    return seg.encode(phantom[0])


@pytest.fixture(scope="module")
def predictor(vit_b_checkpoint, phantom, emb):
    """SamPredictor on a model that segment-anything itself built and loaded, given our
    embedding of the phantom in place of a second minute-long set_image."""
    from segment_anything import SamPredictor, sam_model_registry

    predictor = SamPredictor(sam_model_registry["vit_b"](checkpoint=str(vit_b_checkpoint)).eval())
    image = phantom[0]
    predictor.original_size = image.shape[:2]
    predictor.input_size = predictor.transform.apply_image(image).shape[:2]
    predictor.features = emb.features
    predictor.is_image_set = True
    return predictor


def upstream(predictor, prompts, prev=None, multimask=True):
    """SamPredictor.predict, keeping the best-scored mask."""
    coords = np.array([[p.x, p.y] for p in prompts.points], np.float32) if prompts.points else None
    labels = np.array([p.label for p in prompts.points]) if prompts.points else None
    box = np.array(prompts.box.as_tuple(), np.float32) if prompts.box else None
    masks, scores, logits = predictor.predict(coords, labels, box, None if prev is None else prev[None],
                                              multimask_output=multimask)
    best = int(np.argmax(scores))
    return masks[best], logits[best], float(scores[best])


@pytest.mark.slow
def test_loads_the_official_flat_state_dict_strictly(seg, vit_b_checkpoint, emb):
    saved = torch.load(vit_b_checkpoint, weights_only=True)
    state = seg.model.state_dict()
    assert seg.variant == "vit_b" and seg.name == "sam" and seg.multimask_default
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    assert emb.features.shape == (1, 256, 64, 64) and torch.isfinite(emb.features).all()


def test_preprocessing_is_sampredictors(seg, predictor, phantom):
    image = phantom[0]
    resized = predictor.transform.apply_image(image)
    reference = seg.model.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None])[0]
    assert torch.equal(seg.preprocess(image), reference)


@pytest.mark.slow
def test_encoder_output_equals_sampredictor_set_image(emb, predictor, phantom):
    from segment_anything import SamPredictor

    fresh = SamPredictor(predictor.model)
    fresh.set_image(phantom[0])
    torch.testing.assert_close(fresh.features, emb.features, atol=1e-4, rtol=1e-4)


CASES = {
    "box": (Prompts(box=BOX), False, True),
    "points": (Prompts(points=CLICKS), False, True),
    "box+points": (Prompts(box=BOX, points=CLICKS), False, True),
    "box+points+mask": (Prompts(box=BOX, points=CLICKS[:1]), True, True),
    "box single-mask": (Prompts(box=BOX), False, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_masks_and_logits_equal_sampredictor(seg, emb, predictor, case):
    prompts, with_mask, multimask = CASES[case]
    prev = seg.decode(emb, Prompts(box=BOX)).low_res_logits if with_mask else None
    ours = seg.decode(emb, prompts, prev, multimask=multimask)
    mask, logits, score = upstream(predictor, prompts, prev, multimask)
    assert ours.mask.shape == (200, 300) and ours.low_res_logits.shape == (256, 256)
    np.testing.assert_allclose(ours.low_res_logits, logits, atol=1e-4)
    assert (ours.mask != mask).sum() == 0
    assert ours.score == pytest.approx(score, abs=1e-5)


def test_non_square_geometry_is_segment_anythings(seg):
    from segment_anything.utils.transforms import ResizeLongestSide

    transform = ResizeLongestSide(1024)
    geometry = SamGeometry((200, 300), 1024)
    points, _, box = geometry.prompt_arrays(Prompts(box=BOX, points=CLICKS))
    xy = np.array([[p.x, p.y] for p in CLICKS], float)
    np.testing.assert_allclose(points, transform.apply_coords(xy, (200, 300)), rtol=1e-6)
    np.testing.assert_allclose(box, transform.apply_boxes(np.array([BOX.as_tuple()], float),
                                                          (200, 300))[0], rtol=1e-6)
    logits = torch.randn(256, 256)
    reference = seg.model.postprocess_masks(logits[None, None], geometry.resized_hw, (200, 300))
    assert np.array_equal(sam_upscale(logits, geometry), (reference[0, 0] > 0).numpy())


def test_box_context_is_kept_and_logits_are_fed_back(seg, emb):
    first = seg.decode(emb, Prompts(box=BOX))
    refined = Prompts(box=BOX).add(CLICKS[0])
    with_box = seg.decode(emb, refined, first.low_res_logits)
    without_box = seg.decode(emb, Prompts(points=CLICKS[:1]), first.low_res_logits)
    no_feedback = seg.decode(emb, refined)
    assert not np.allclose(with_box.low_res_logits, without_box.low_res_logits)
    assert not np.allclose(with_box.low_res_logits, no_feedback.low_res_logits)


def test_decode_batch_equals_one_by_one(seg, emb):
    prev = seg.decode(emb, Prompts(box=BOX)).low_res_logits
    sets = [Prompts(box=BOX), Prompts(box=BOX, points=CLICKS[:1]),
            Prompts(box=BOX, points=CLICKS[:1]), Prompts(box=BBox(20, 20, 120, 150))]
    prevs = [None, None, prev, None]
    for prompts, logits, got in zip(sets, prevs, seg.decode_batch(emb, sets, prevs)):
        one = seg.decode(emb, prompts, logits)
        np.testing.assert_allclose(got.low_res_logits, one.low_res_logits, atol=1e-4)


class StubEncoder(torch.nn.Module):
    """Stands in for the minute-long ViT: content-dependent 256×64×64 features, counts calls."""

    img_size = 1024

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return x[:, :1, ::16, ::16].repeat(1, 256, 1, 1)


@pytest.mark.slow
def test_cache_and_batched_encode(vit_b_checkpoint, phantom, monkeypatch):
    seg = msagent.load_backbone("sam", checkpoint=vit_b_checkpoint, device="cpu")
    stub = StubEncoder()
    monkeypatch.setattr(seg.model, "image_encoder", stub)
    image = phantom[0]
    first = seg.encode(image)
    assert seg.encode(image.copy()) is first
    assert (seg.cache_info().hits, seg.cache_info().misses) == (1, 1)
    others = [np.ascontiguousarray(image[::-1]), np.ascontiguousarray(image[:, ::-1])]
    batched = seg.encode_batch(others)
    assert stub.batches == [1, 2]
    for other, embedding in zip(others, batched):
        assert torch.equal(embedding.features, seg.encode_image(other))


def test_segment_through_the_agent(seg, emb, phantom):
    image, truth = phantom
    result = msagent.segment(image, "bright disk", backbone=seg, policy="oracle-box",
                             ground_truth=truth)
    assert result.turns == 1 and result.mask.shape == image.shape[:2]
    assert seg.cache_info().hits >= 1  # the embedding came from the cache


@pytest.mark.slow
def test_weights_resolution(vit_b_checkpoint, hf_cache, monkeypatch):
    with pytest.raises(WeightsNotFound) as info:
        msagent.load_backbone("sam", device="cpu")
    assert "ybelkada/segment-anything" in str(info.value)
    assert "sam_vit_b_01ec64.pth" in str(info.value) and "MSAGENT_SAM_CHECKPOINT" in str(info.value)
    monkeypatch.setenv("MSAGENT_SAM_CHECKPOINT", "/nonexistent/sam.pth")
    with pytest.raises(WeightsNotFound, match=r"\$MSAGENT_SAM_CHECKPOINT"):
        resolve_checkpoint()
    monkeypatch.setenv("MSAGENT_SAM_CHECKPOINT", str(vit_b_checkpoint))
    assert resolve_checkpoint() == vit_b_checkpoint
    monkeypatch.delenv("MSAGENT_SAM_CHECKPOINT")
    cached = hf_cache("ybelkada/segment-anything", "checkpoints/sam_vit_b_01ec64.pth",
                      vit_b_checkpoint)
    seg = msagent.load_backbone("sam", device="cpu")
    assert seg.checkpoint == cached and seg.variant == "vit_b"
    with pytest.raises(WeightsNotFound, match="sam_vit_l_0b3195.pth"):
        msagent.load_backbone("sam", variant="vit_l", device="cpu")


def test_wrong_files_are_refused(vit_b_checkpoint, tmp_path):
    with pytest.raises(WeightsMismatch, match="vit_b"):
        msagent.load_backbone("sam", checkpoint=vit_b_checkpoint, variant="vit_h")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsMismatch, match="not a Segment Anything checkpoint"):
        msagent.load_backbone("sam", checkpoint=tmp_path / "other.pth")
    with pytest.raises(InvalidInput, match="vit_b"):
        msagent.load_backbone("sam", checkpoint=vit_b_checkpoint, variant="vit_x")


def test_listing_the_backbone_imports_no_torch():
    code = ("import sys, msagent; assert 'sam' in msagent.list_backbones(); "
            "assert not {'torch', 'segment_anything'} & set(sys.modules), 'heavy import'")
    env = dict(os.environ, MSAGENT_LOAD_PLUGINS="sam")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.slow
def test_conformance(seg, phantom, emb):
    from msagent.testing import check_segmenter

    check_segmenter(seg, phantom[0])  # the phantom is encoded already (emb): no extra encode
