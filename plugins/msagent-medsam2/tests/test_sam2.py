"""Backbone ``sam2``: real SAM2.1 Hiera-tiny architecture with random weights, loaded from an
official-layout checkpoint; results compared with sam2's own SAM2ImagePredictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import msagent
from msagent.errors import InvalidInput, WeightsMismatch, WeightsNotFound
from msagent.types import BBox, Point, Prompts

# sam2's SAM2Transforms (built by SAM2ImagePredictor) scripts its resize with a deprecated API
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")
BOX = BBox(100, 45, 240, 135)
CLICKS = (Point(170, 90, True), Point(110, 50, False))


@pytest.fixture(scope="module")
def seg(tiny_checkpoint):
    return msagent.load_backbone("sam2", checkpoint=tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def emb(seg, phantom):
    return seg.encode(phantom[0])


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint, phantom):
    """The upstream predictor on a model built and loaded by sam2's own build_sam2."""
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=str(tiny_checkpoint),
                       device="cpu")
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(phantom[0])
    return predictor


def upstream(predictor, prompts, prev=None, multimask=True):
    """SAM2ImagePredictor.predict, keeping the best-scored mask as MedSAM-Agent's server did."""
    coords = np.array([[p.x, p.y] for p in prompts.points], np.float32) if prompts.points else None
    labels = np.array([p.label for p in prompts.points]) if prompts.points else None
    box = np.array(prompts.box.as_tuple(), np.float32) if prompts.box else None
    masks, scores, logits = predictor.predict(coords, labels, box, None if prev is None else prev[None],
                                              multimask_output=multimask)
    best = int(np.argmax(scores))
    return masks[best] > 0, logits[best], float(scores[best])


def test_loads_the_official_layout_strictly(seg, tiny_checkpoint):
    saved = torch.load(tiny_checkpoint, weights_only=True)["model"]
    state = seg.model.state_dict()
    assert seg.variant == "tiny" and seg.name == "sam2" and seg.image_size == 1024
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)


@pytest.mark.slow
def test_features_equal_the_predictor(emb, predictor):
    features = emb.features
    assert features.image_embed.shape == (1, 256, 64, 64)
    torch.testing.assert_close(features.image_embed, predictor._features["image_embed"])
    for ours, theirs in zip(features.high_res_feats, predictor._features["high_res_feats"]):
        torch.testing.assert_close(ours, theirs)


CASES = {
    "box": (Prompts(box=BOX), False, True),
    "points": (Prompts(points=CLICKS), False, True),
    "box+points": (Prompts(box=BOX, points=CLICKS), False, True),
    "box+points+mask": (Prompts(box=BOX, points=CLICKS[:1]), True, True),
    "box single-mask": (Prompts(box=BOX), False, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_masks_and_logits_equal_sam2_image_predictor(seg, emb, predictor, case):
    prompts, with_mask, multimask = CASES[case]
    prev = seg.decode(emb, Prompts(box=BOX)).low_res_logits if with_mask else None
    ours = seg.decode(emb, prompts, prev, multimask=multimask)
    mask, logits, score = upstream(predictor, prompts, prev, multimask)
    assert ours.mask.shape == (200, 300) and ours.low_res_logits.shape == (256, 256)
    np.testing.assert_allclose(ours.low_res_logits, logits, atol=1e-4)
    assert (ours.mask != mask).sum() == 0
    assert ours.score == pytest.approx(score, abs=1e-5)


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
    sets = [Prompts(box=BOX), Prompts(box=BOX, points=CLICKS[:1]), Prompts(box=BOX, points=CLICKS[:1]),
            Prompts(points=CLICKS), Prompts(box=BBox(20, 20, 120, 150))]
    prevs = [None, None, prev, prev, None]
    batched = seg.decode_batch(emb, sets, prevs)
    for prompts, logits, got in zip(sets, prevs, batched):
        one = seg.decode(emb, prompts, logits)
        np.testing.assert_allclose(got.low_res_logits, one.low_res_logits, atol=1e-4)
        assert got.score == pytest.approx(one.score, abs=1e-5)


def test_the_cache_encodes_an_image_once(seg, phantom):
    seg.encode(phantom[0])  # a miss only if no earlier test encoded it
    before = seg.cache_info()
    seg.encode(phantom[0].copy())
    after = seg.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_a_variant_that_contradicts_the_checkpoint_is_refused(tiny_checkpoint):
    with pytest.raises(WeightsMismatch, match="tiny"):
        msagent.load_backbone("sam2", checkpoint=tiny_checkpoint, variant="large")
    with pytest.raises(InvalidInput, match="base_plus"):
        msagent.load_backbone("sam2", checkpoint=tiny_checkpoint, variant="huge")


def test_weights_resolve_from_env_and_hf_cache(tiny_checkpoint, hf_cache, monkeypatch):
    with pytest.raises(WeightsNotFound, match="facebook/sam2.1-hiera-tiny"):
        msagent.load_backbone("sam2", device="cpu")
    monkeypatch.setenv("MSAGENT_SAM2_CHECKPOINT", str(tiny_checkpoint))
    assert msagent.load_backbone("sam2", device="cpu").checkpoint == tiny_checkpoint
    monkeypatch.delenv("MSAGENT_SAM2_CHECKPOINT")
    cached = hf_cache("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", tiny_checkpoint)
    seg = msagent.load_backbone("sam2", device="cpu")
    assert seg.checkpoint == cached and seg.variant == "tiny"
    with pytest.raises(WeightsNotFound, match="facebook/sam2.1-hiera-small"):
        msagent.load_backbone("sam2", variant="small", device="cpu")
