"""The ``sam3`` backbone against transformers' own documented usage, on a reduced SAM 3 of the
real architecture with random weights (offline): identical features, tracker masks and
logits, concept proposals; the conformance suite; weights and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import msagent
from msagent.backbones import BBox, Point, Prompts
from msagent.errors import SegmenterError, WeightsMismatch, WeightsNotFound
from msagent.testing import check_segmenter

LOGIT_ATOL = 1e-5


def reference(cls, checkpoint):
    """A transformers SAM 3 class loaded the documented way, from the same checkpoint."""
    model, info = cls.from_pretrained(checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    return model.eval()


@pytest.fixture(scope="module")
def tracker_reference(checkpoint):
    from msagent_sam3.tiny import processors
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    _, processor, _ = processors()
    assert isinstance(processor, Sam3TrackerProcessor)
    return reference(Sam3TrackerModel, checkpoint), processor


def tracker_documented(tracker_reference, image, *, points=None, labels=None, box=None,
                       masks=None, multimask=True):
    """Sam3TrackerProcessor → Sam3TrackerModel → post_process_masks, best mask by IoU."""
    model, processor = tracker_reference
    kwargs = {}
    if points is not None:
        kwargs.update(input_points=[[points]], input_labels=[[labels]])
    if box is not None:
        kwargs.update(input_boxes=[[box]])
    inputs = processor(images=image, return_tensors="pt", **kwargs)
    with torch.no_grad():
        out = model(**inputs, input_masks=masks, multimask_output=multimask)
    full = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0]
    best = int(out.iou_scores[0, 0].argmax())
    return full[best].numpy(), out.pred_masks[0, 0, best], float(out.iou_scores[0, 0, best])


def test_registered_and_loads(segmenter, checkpoint):
    assert "sam3" in msagent.list_backbones()
    assert segmenter.name == "sam3" and segmenter.can_propose
    assert segmenter.checkpoint == checkpoint


def test_one_vit_pass_serves_both_heads(segmenter, checkpoint, phantom):
    """The tracker and the detector read the same ViT weights (one module here, one set of
    weights in the checkpoint), and one encode is one ViT pass."""
    from transformers import Sam3Model, Sam3TrackerModel

    image, _ = phantom
    image = image.copy()
    image[0, 0] = 7  # not cached by another test
    detector = reference(Sam3Model, checkpoint)
    tracker = reference(Sam3TrackerModel, checkpoint)
    ours = segmenter.detector.vision_encoder.backbone.state_dict()
    for other in (detector.vision_encoder.backbone, tracker.vision_encoder.backbone):
        assert all(torch.equal(ours[k], v) for k, v in other.state_dict().items())
    assert segmenter.model.tracker_model.vision_encoder is None  # no second copy
    before = segmenter.encodes
    embedding = segmenter.encode(image)
    segmenter.decode(embedding, Prompts(box=BBox(120, 50, 220, 130)))
    segmenter.propose(embedding, "bright ellipse")
    segmenter.encode(image)
    assert segmenter.encodes == before + 1


def test_tracker_features_equal_transformers(segmenter, checkpoint, phantom, tracker_reference):
    image, _ = phantom
    model, processor = tracker_reference
    pixels = processor(images=image, return_tensors="pt").pixel_values
    with torch.no_grad():
        theirs = model.get_image_features(pixels).fpn_hidden_states[:3]
    ours = segmenter.encode(image).features.tracker
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", ["box", "points", "box+points", "single"])
def test_tracker_masks_equal_transformers(segmenter, phantom, tracker_reference, case):
    image, _ = phantom
    box = [120, 50, 220, 130] if "box" in case else None
    points = [[170, 90], [130, 60]] if "points" in case or case == "single" else None
    labels = [1, 0] if points else None
    prompts = Prompts(box=BBox(*box) if box else None,
                      points=tuple(Point(x, y, label) for (x, y), label
                                   in zip(points or [], labels or [])))
    multimask = case != "single"
    mask, logits, score = tracker_documented(tracker_reference, image, points=points,
                                             labels=labels, box=box, multimask=multimask)
    ours = segmenter.decode(segmenter.encode(image), prompts, multimask=multimask)
    assert np.array_equal(ours.mask, mask)
    assert abs(ours.score - score) <= LOGIT_ATOL
    from msagent_sam3.segmenter import resize_logits

    assert np.abs(ours.low_res_logits - resize_logits(logits[None])[0].numpy()).max() <= LOGIT_ATOL


def test_mask_input_equals_transformers(segmenter, phantom, tracker_reference):
    """The previous turn's 256×256 logits go in as the tracker's input_masks (it resizes them)."""
    image, _ = phantom
    embedding = segmenter.encode(image)
    first = segmenter.decode(embedding, Prompts(box=BBox(120, 50, 220, 130)))
    prompts = Prompts(box=BBox(120, 50, 220, 130), points=(Point(170, 90, 1),))
    ours = segmenter.decode(embedding, prompts, first.low_res_logits)
    mask, _, score = tracker_documented(
        tracker_reference, image, points=[[170, 90]], labels=[1], box=[120, 50, 220, 130],
        masks=torch.from_numpy(first.low_res_logits)[None, None])
    assert np.array_equal(ours.mask, mask)
    assert abs(ours.score - score) <= LOGIT_ATOL


def test_concept_proposals_equal_transformers(segmenter, checkpoint, phantom):
    """propose() = Sam3Processor + Sam3Model + post_process_instance_segmentation."""
    from transformers import Sam3Model, Sam3Processor

    image, _ = phantom
    model = reference(Sam3Model, checkpoint)
    processor = Sam3Processor.from_pretrained(checkpoint)
    inputs = processor(images=image, text="bright ellipse", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    # random weights score every query alike, below the default 0.5: keep the upper half
    scores = outputs.pred_logits.sigmoid() * outputs.presence_logits.sigmoid()
    threshold = float(scores.median())
    found = processor.post_process_instance_segmentation(
        outputs, threshold=threshold, mask_threshold=0.5,
        target_sizes=inputs["original_sizes"].tolist())[0]
    ours_raw = segmenter.detect(segmenter.encode(image).features, "bright ellipse")
    for key in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits"):
        diff = (getattr(ours_raw, key) - getattr(outputs, key)).abs().max()
        assert diff <= LOGIT_ATOL, (key, float(diff))
    order = np.argsort(-found["scores"].numpy(), kind="stable")
    expected = [(found["masks"][i].numpy(), float(found["scores"][i])) for i in order
                if found["masks"][i].any()]
    segmenter = msagent.load_backbone("sam3", checkpoint=str(checkpoint), device="cpu",
                                      threshold=threshold)
    candidates = segmenter.propose(segmenter.encode(image), "bright ellipse", max_candidates=50)
    assert len(candidates) == len(expected) > 0
    for candidate, (mask, score) in zip(candidates, expected):
        assert np.array_equal(candidate.mask, mask)
        assert abs(candidate.score - score) <= LOGIT_ATOL
        assert candidate.low_res_logits.shape == (256, 256)
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
    top = segmenter.propose(segmenter.encode(image), "bright ellipse", max_candidates=2)
    assert [c.score for c in top] == [c.score for c in candidates[:2]]


def test_a_proposal_refines_through_the_tracker(checkpoint, phantom):
    image, _ = phantom
    segmenter = msagent.load_backbone("sam3", checkpoint=str(checkpoint), device="cpu",
                                      threshold=0.0)
    embedding = segmenter.encode(image)
    candidate = segmenter.propose(embedding, "bright ellipse", max_candidates=1)[0]
    refined = segmenter.decode(embedding, Prompts(points=(Point(170, 90, 1),)),
                               candidate.low_res_logits)
    assert refined.mask.shape == image.shape[:2]


def test_concept_matching_nothing_returns_no_candidates(checkpoint, phantom):
    seg = msagent.load_backbone("sam3", checkpoint=str(checkpoint), device="cpu", threshold=1.0)
    assert seg.propose(seg.encode(phantom[0]), "liver") == []


def test_conformance(segmenter):
    check_segmenter(segmenter)


def test_conformance_thin(segmenter):
    check_segmenter(segmenter, thin=True)


@pytest.mark.parametrize("text, message", [
    ("", "non-empty"), ("   ", "non-empty"), ("x" * 201, "at most 200"),
    ("liver\nspleen", "printable"), (None, "string")])
def test_bad_text(segmenter, phantom, text, message):
    embedding = segmenter.encode(phantom[0])
    with pytest.raises(SegmenterError, match=message):
        segmenter.propose(embedding, text)


def test_text_over_the_token_limit(segmenter, phantom):
    long = " ".join("abcdefghij" * 4)  # 79 characters, 40 words: 42 tokens
    assert len(long) <= 200
    with pytest.raises(SegmenterError, match="at most 32"):
        segmenter.propose(segmenter.encode(phantom[0]), long)


def test_bad_max_candidates(segmenter, phantom):
    with pytest.raises(SegmenterError, match="max_candidates"):
        segmenter.propose(segmenter.encode(phantom[0]), "liver", max_candidates=0)


def test_other_backbones_cannot_propose(phantom):
    from msagent.testing import BoxBackbone

    seg = BoxBackbone()
    assert not seg.can_propose
    with pytest.raises(SegmenterError, match="cannot propose.*sam3"):
        seg.propose(seg.encode(phantom[0]), "liver")


# -- weights ------------------------------------------------------------------------------
def test_missing_weights_hint():
    with pytest.raises(WeightsNotFound, match="gated.*huggingface.co/facebook/sam3"):
        msagent.load_backbone("sam3")


def test_checkpoint_path_not_there(tmp_path):
    with pytest.raises(WeightsNotFound, match="checkpoint=.*config.json"):
        msagent.load_backbone("sam3", checkpoint=str(tmp_path / "nowhere"))


def test_env_var_and_file_in_directory(checkpoint, monkeypatch):
    from msagent_sam3.weights import resolve_checkpoint

    monkeypatch.setenv("MSAGENT_SAM3_CHECKPOINT", str(checkpoint / "model.safetensors"))
    assert resolve_checkpoint() == checkpoint


def test_hf_cache(checkpoint, hf_cache):
    from msagent_sam3.weights import REPO_ID, resolve_checkpoint

    for name in ("config.json", "model.safetensors"):
        hf_cache(REPO_ID, name, checkpoint / name)
    found = resolve_checkpoint()
    assert found.parent.name == "snapshots" and (found / "config.json").is_file()
    assert "models--facebook--sam3" in str(found)


def test_not_a_full_sam3(tmp_path, checkpoint):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint).detector_config
    config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    with pytest.raises(WeightsMismatch, match="'sam3' checkpoint.*sam3_video"):
        msagent.load_backbone("sam3", checkpoint=str(tmp_path))


def test_lora_only_keys_refused(tmp_path, checkpoint):
    from msagent_sam3.weights import load_model
    from safetensors.torch import load_file, save_file

    state = load_file(checkpoint / "model.safetensors")
    state["detector_model.text_projection.lora_A.weight"] = torch.zeros(4, 4)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    with pytest.raises(WeightsMismatch, match="unexpected 1.*LoRA"):
        load_model(tmp_path)


def test_tokenizer_missing(tmp_path, phantom):
    from msagent_sam3.tiny import save_checkpoint

    seg = msagent.load_backbone("sam3", device="cpu",
                                checkpoint=str(save_checkpoint(tmp_path, tokenizer=False)))
    embedding = seg.encode(phantom[0])
    seg.decode(embedding, Prompts(box=BBox(120, 50, 220, 130)))  # boxes need no tokenizer
    with pytest.raises(WeightsNotFound, match="no tokenizer files"):
        seg.propose(embedding, "liver")


def test_full_configuration_key_layout():
    """The full default SAM 3 (≈ 860 M parameters, built on the meta device) expects exactly the
    keys the official checkpoint holds: detector_model.*, tracker_model.*, tracker_neck.* as
    transformers' Sam3VideoModel names them; the tracker's own loading rules
    (conversion_mapping: detector backbone → vision_encoder.backbone, tracker_neck →
    vision_encoder.neck, tracker_model.* → *) map them onto Sam3TrackerModel's keys."""
    from msagent_sam3.weights import expected_keys
    from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3VideoConfig

    config = Sam3VideoConfig()
    keys = expected_keys(config)
    assert {k.split(".")[0] for k in keys} == {"detector_model", "tracker_model", "tracker_neck"}
    assert not any(k.startswith("tracker_model.vision_encoder") for k in keys)
    with torch.device("meta"):
        tracker = Sam3TrackerModel(Sam3TrackerConfig())
    renamed = set()
    for key in keys:
        if key.startswith("detector_model.vision_encoder.backbone."):
            renamed.add("vision_encoder.backbone." + key.removeprefix(
                "detector_model.vision_encoder.backbone."))
        elif key.startswith("tracker_neck."):
            renamed.add("vision_encoder.neck." + key.removeprefix("tracker_neck."))
        elif key.startswith("tracker_model."):
            renamed.add(key.removeprefix("tracker_model."))
    assert set(tracker.state_dict()) <= renamed
