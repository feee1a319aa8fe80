"""The imisnet backbone through msagent's public API, on random weights in the official layout."""

import numpy as np
import pytest
import torch
from msagent_imisnet import segmenter as imis

import msagent
from msagent.errors import SegmenterError, WeightsNotFound
from msagent.types import BBox, Point, Prompts

BOX = Prompts(box=BBox(70, 30, 170, 90))
CLICK = Point(120, 60, True)


class PromptSpy:
    """Records what reaches the prompt encoder (points, boxes, masks, text) per call."""

    def __init__(self, seg):
        self.calls = []
        self.handle = seg.model.prompt_encoder.register_forward_hook(
            lambda module, args, out: self.calls.append(args))

    def __enter__(self):
        return self.calls

    def __exit__(self, *exc):
        self.handle.remove()


class Scripted(msagent.Policy):
    def __init__(self, replies):
        self.replies = list(replies)

    def act(self, episode):
        return msagent.Reply(self.replies.pop(0))


def call(name, **arguments):
    import json
    return f'<tool_call>{json.dumps({"name": name, "arguments": arguments})}</tool_call>'


@pytest.mark.slow
def test_loads_the_official_layout_strictly(seg, reference):
    model, path = reference
    assert seg.checkpoint == path and "imisnet" in msagent.list_backbones()
    ours, theirs = seg.model.state_dict(), model.state_dict()
    assert set(ours) == set(theirs)
    for key in ("image_encoder.neck.2.weight", "text_model.text_model.final_layer_norm.bias",
                "mask_decoder.semantic_tokens.weight"):
        torch.testing.assert_close(ours[key], theirs[key])


@pytest.mark.slow
def test_encode_once_per_image_content(seg, wide, embedding):
    assert embedding.features.shape == (1, 768, 64, 64)
    assert embedding.image_size == (120, 200)
    before = seg.cache_info()
    again = seg.encode(wide[0].copy())
    assert again is embedding
    after = seg.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_decode_on_a_non_square_image(seg, embedding):
    pred = seg.decode(embedding, BOX)
    assert pred.mask.shape == (120, 200) and pred.mask.dtype == bool
    assert pred.low_res_logits.shape == (256, 256) and pred.low_res_logits.dtype == np.float32
    assert np.isfinite(pred.score)


def test_prompts_are_scaled_per_axis(seg, embedding):
    prompts = Prompts(box=BBox(50, 30, 150, 90), points=(Point(100, 60, False),))
    with PromptSpy(seg) as calls:
        seg.decode(embedding, prompts)
    (coords, labels), boxes, masks, text = calls[0]
    torch.testing.assert_close(coords, torch.tensor([[[100 * 1024 / 200, 60 * 1024 / 120]]]))
    assert labels.tolist() == [[0]] and masks is None and text is None
    torch.testing.assert_close(boxes, torch.tensor([[256.0, 256.0, 768.0, 768.0]]))
    sparse, _ = seg.model.prompt_encoder(*calls[0])
    assert sparse.shape[1] == 3  # one point and two corners: no padding point with a box


def test_best_of_three_by_predicted_iou_and_single_mask_option(seg, embedding):
    prompts = Prompts(points=(CLICK,))
    coords = torch.tensor([[[120 * 1024 / 200, 60 * 1024 / 120]]])
    with torch.inference_mode():
        logits, iou = seg.model.decode(embedding.features, (coords, torch.tensor([[1]])))
    best = int(iou[0, 1:].argmax()) + 1
    pred = seg.decode(embedding, prompts)
    np.testing.assert_allclose(pred.low_res_logits, logits[0, best].numpy(), atol=1e-5)
    assert pred.score == pytest.approx(float(iou[0, best]), abs=1e-6)
    single = seg.decode(embedding, prompts, multimask=False)
    np.testing.assert_allclose(single.low_res_logits, logits[0, 0].numpy(), atol=1e-5)


def test_mask_is_upscaled_256_to_1024_to_original_and_thresholded_at_sigmoid_half(seg, embedding):
    pred = seg.decode(embedding, BOX)
    low = torch.as_tensor(pred.low_res_logits)[None, None]
    full = torch.nn.functional.interpolate(low, (1024, 1024), mode="bilinear")
    full = torch.nn.functional.interpolate(full, (120, 200), mode="bilinear")
    expected = (torch.sigmoid(full[0, 0]) > 0.5).numpy()
    assert np.array_equal(pred.mask, expected)


def test_previous_logits_are_fed_back(seg, embedding):
    first = seg.decode(embedding, BOX)
    with_click = BOX.add(CLICK)
    fed = seg.decode(embedding, with_click, first.low_res_logits[None, None])  # 1×1×256×256
    unfed = seg.decode(embedding, with_click)
    assert not np.allclose(fed.low_res_logits, unfed.low_res_logits)
    with pytest.raises(SegmenterError, match="256"):
        seg.decode(embedding, BOX, np.zeros((64, 64), np.float32))


def test_agent_episode_keeps_the_box_and_passes_the_target_as_text(seg, wide):
    image, gt = wide
    replies = [call("add_bbox", bbox_2d=[350, 250, 850, 750]),
               call("add_point", point_2d=[600, 500], point_type="positive"),
               call("stop_action")]
    with PromptSpy(seg) as calls:
        result = msagent.segment(image, "liver", backbone=seg, policy=Scripted(replies),
                                 ground_truth=gt)
    assert result.turns == 2 and result.mask.shape == (120, 200)
    (_, box1, mask1, text1), (points2, box2, mask2, text2) = calls
    assert box1 is not None and mask1 is None and text1 is not None
    assert box2 is not None and points2[0].shape == (1, 1, 2) and mask2 is not None
    torch.testing.assert_close(text1, text2)
    torch.testing.assert_close(text1[0], seg.text_embedding("liver"))
    emb = seg.encode(image)
    click = Point(120, 60)
    with_box = seg.decode(emb, Prompts(box=BBox(70, 30, 170, 90), points=(click,)))
    assert not np.allclose(seg.decode(emb, Prompts(points=(click,))).low_res_logits,
                           with_box.low_res_logits)  # the box still shapes the answer


def test_text_prompt_changes_the_output_and_works_alone(seg, embedding):
    plain = seg.decode(embedding, BOX)
    liver = seg.decode(embedding, BOX, text="liver")
    spleen = seg.decode(embedding, BOX, text="spleen")
    assert not np.allclose(plain.low_res_logits, liver.low_res_logits)
    assert not np.allclose(liver.low_res_logits, spleen.low_res_logits)
    alone = seg.decode(embedding, Prompts(), text="liver")
    assert alone.mask.shape == (120, 200)
    assert seg.text_embedding("liver") is seg.text_embedding("liver")  # cached
    with pytest.raises(SegmenterError, match="box, a point or text"):
        seg.decode(embedding, Prompts())
    with pytest.raises(SegmenterError, match="non-empty"):
        seg.decode(embedding, BOX, text="  ")


@pytest.mark.slow  # two decodes of a ViT-B's decoder with the text model
def test_a_text_alone_is_the_proposal(seg, embedding, monkeypatch):
    from msagent.agent.proposal import best_candidate, check_can_propose, proposing_backbones

    assert seg.can_propose and "imisnet" in proposing_backbones()
    check_can_propose(seg)
    alone = seg.decode(embedding, Prompts(), text="liver", multimask=True)
    candidates = seg.propose(embedding, " liver ", max_candidates=3)  # the SDK strips the text
    assert len(candidates) == int(alone.mask.any()) == 1
    assert np.array_equal(candidates[0].mask, alone.mask)
    np.testing.assert_array_equal(candidates[0].low_res_logits, alone.low_res_logits)
    assert candidates[0].score == pytest.approx(alone.score)
    start = best_candidate(seg, candidates)  # turn 0 of an episode from the proposal
    assert start.source == "proposal:imisnet" and start.score == pytest.approx(alone.score)
    # an empty mask is no candidate: the episode starts from nothing
    empty = msagent.MaskPrediction(np.zeros_like(alone.mask), alone.low_res_logits, alone.score)
    monkeypatch.setattr(seg, "decode_prompts", lambda *args, **kwargs: [empty])
    assert seg.propose(embedding, "liver") == []


@pytest.mark.slow
def test_batched_decode_equals_one_by_one(seg, embedding):
    first = seg.decode(embedding, BOX)
    sets = [BOX, Prompts(box=BBox(20, 10, 90, 100)), BOX.add(CLICK), Prompts(points=(CLICK,))]
    prev = [None, None, first.low_res_logits, None]
    texts = [None, None, None, "liver"]
    with PromptSpy(seg) as calls:
        batch = seg.decode_batch(embedding, sets, prev, text=texts)
    assert [c[1].shape[0] for c in calls if c[1] is not None] == [2, 1]  # the two boxes batch
    for prompts, logits, target, got in zip(sets, prev, texts, batch):
        one = seg.decode(embedding, prompts, logits, text=target)
        np.testing.assert_allclose(got.low_res_logits, one.low_res_logits, atol=1e-4)
        assert got.score == pytest.approx(one.score, abs=1e-5)
    with pytest.raises(SegmenterError, match="one of each"):
        seg.decode_batch(embedding, sets, prev, text=["liver"])


def test_encode_batch_runs_the_encoder_in_chunks(seg, monkeypatch):
    sizes = []

    def fake_encoder(x):
        sizes.append(x.shape)
        return torch.zeros(x.shape[0], 768, 64, 64)

    monkeypatch.setattr(seg.model, "embed_image", fake_encoder)
    images = [np.full((40 + i, 50, 3), 7 * i, np.uint8) for i in range(3)]
    embeddings = seg.encode_batch(images)
    assert [s[0] for s in sizes] == [2, 1] and sizes[0][1:] == (3, 1024, 1024)
    assert [e.image_size for e in embeddings] == [(40, 50), (41, 50), (42, 50)]
    assert seg.encode_batch(images)[1] is embeddings[1]  # cached now


def test_text_option(reference, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("MSAGENT_IMISNET_TOKENIZER", raising=False)
    # construction without rebuilding the network: the weights path is tested above
    monkeypatch.setattr(imis, "build_imisnet", lambda: reference[0])
    monkeypatch.setattr(imis, "load_state_dict", lambda path: {})
    monkeypatch.setattr(imis, "load_into", lambda model, state, path: None)
    path = reference[1]
    off = imis.IMISNetSegmenter(path, device="cpu", use_text_prompt=False)
    assert not off.accepts_text and not off.can_propose  # no text, no proposals
    with pytest.raises(SegmenterError, match="cannot propose"):
        off.propose(msagent.Embedding(None, (8, 8), "k"), "liver")
    with pytest.raises(SegmenterError, match="text prompts are off"):
        off.text_embedding("liver")
    auto = imis.IMISNetSegmenter(path, device="cpu")  # no tokenizer on this machine: a warning
    assert not auto.accepts_text and not auto.can_propose
    with pytest.raises(WeightsNotFound, match="use_text_prompt=True"):
        imis.IMISNetSegmenter(path, device="cpu", use_text_prompt=True)


@pytest.mark.slow
def test_conformance(seg, wide, embedding):
    from msagent.testing import check_segmenter

    check_segmenter(seg, wide[0])  # accepts_text: a text alone is checked too
