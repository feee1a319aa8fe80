import shutil

import numpy as np
import pytest
import torch
from msagent_litemedsam import segmenter as lite

import msagent
from msagent.backbones.geometry import InputGeometry
from msagent.errors import WeightsMismatch, WeightsNotFound
from msagent.testing import make_phantom
from msagent.types import BBox, Point, Prompts


@pytest.fixture(scope="module")
def seg():
    return msagent.load_backbone("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def wide():
    return make_phantom(height=120, width=260, center=(60, 190), radii=(30, 45))


def test_shipped_weights_load_with_checksum(seg):
    path, sha = lite.shipped_checkpoint()
    assert seg.checkpoint == path and lite.sha256_of(path) == sha
    assert msagent.list_backbones().count("litemedsam") == 1


@pytest.mark.slow
def test_box_logits_equal_the_reference_model_forward(seg, wide):
    image, gt = wide
    box = BBox(140, 28, 238, 92)
    pred = seg.decode(seg.encode(image), Prompts(box=box))
    geometry = InputGeometry(image.shape[:2], 256)
    tensor = torch.as_tensor(seg.preprocess(image, geometry)).permute(2, 0, 1)[None]
    _, _, box256 = geometry.prompt_arrays(Prompts(box=box))
    with torch.inference_mode():
        reference = seg.model(tensor, box256[None])  # MedSAMLite.forward: box, single mask
    np.testing.assert_allclose(pred.low_res_logits, reference[0, 0].numpy(), atol=1e-4)
    assert msagent.metrics.iou(pred.mask, gt) > 0.8  # non-square mapping lands on the blob


def test_prompt_semantics_box_context_logit_feedback_and_batching(seg, wide):
    image, gt = wide
    emb = seg.encode(image)
    box = Prompts(box=BBox(150, 35, 225, 85))
    first = seg.decode(emb, box)
    with_click = box.add(Point(190, 60, True))
    fed = seg.decode(emb, with_click, first.low_res_logits)
    unfed = seg.decode(emb, with_click, None)
    assert not np.allclose(fed.low_res_logits, unfed.low_res_logits)
    click_only = seg.decode(emb, Prompts(points=(Point(190, 60, True),)))
    assert not np.array_equal(click_only.mask, unfed.mask)  # the box still matters
    batch = seg.decode_batch(emb, [box, with_click, with_click], [None, first.low_res_logits, None])
    np.testing.assert_allclose(batch[1].low_res_logits, fed.low_res_logits, atol=1e-4)
    np.testing.assert_allclose(batch[2].low_res_logits, unfed.low_res_logits, atol=1e-4)


@pytest.mark.slow
def test_image_is_encoded_once_across_episodes(wide):
    seg = msagent.load_backbone("litemedsam", device="cpu")
    image, gt = wide
    agent = msagent.Agent(msagent.load_policy("oracle-box"), seg)
    for _ in range(4):
        agent.run(image, "blob", gt)
    assert seg.cache_info().misses == 1 and seg.cache_info().hits == 3


@pytest.mark.slow
def test_batched_encode_equals_single(seg):
    a, _ = make_phantom(seed=1)
    b, _ = make_phantom(height=100, width=90, center=(50, 45), radii=(20, 30), seed=2)
    fresh = msagent.load_backbone("litemedsam", device="cpu")
    batched = fresh.encode_batch([a, b])
    assert fresh.cache_info().misses == 2
    torch.testing.assert_close(batched[1].features, seg.encode_image(b), atol=1e-4, rtol=1e-4)


def test_weights_resolution_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFound, match="checkpoint="):
        lite.LiteMedSAMSegmenter(checkpoint=tmp_path / "nope.pth")
    monkeypatch.setenv(lite.ENV_CHECKPOINT, str(tmp_path / "env.pth"))
    with pytest.raises(WeightsNotFound, match=lite.ENV_CHECKPOINT):
        lite.LiteMedSAMSegmenter()
    monkeypatch.delenv(lite.ENV_CHECKPOINT)
    torch.save({"model": {"not": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsMismatch, match="not a LiteMedSAM checkpoint"):
        lite.LiteMedSAMSegmenter(checkpoint=tmp_path / "other.pth")


def test_tampered_shipped_weights_fail_the_checksum(tmp_path, monkeypatch):
    path, sha = lite.shipped_checkpoint()
    copy = tmp_path / "lite_medsam.pth"
    shutil.copy(path, copy)
    with copy.open("r+b") as handle:
        handle.seek(-10, 2)
        handle.write(b"0123456789")
    monkeypatch.setattr(lite, "shipped_checkpoint", lambda: (copy, sha))
    with pytest.raises(WeightsMismatch, match="SHA-256"):
        lite.LiteMedSAMSegmenter()


def test_wrapped_checkpoint_with_module_prefix_loads(tmp_path, seg):
    state = {f"module.{k}": v for k, v in seg.model.state_dict().items()}
    torch.save({"model_state_dict": state}, tmp_path / "train.pth")
    other = lite.LiteMedSAMSegmenter(checkpoint=tmp_path / "train.pth", device="cpu")
    image, _ = make_phantom()
    torch.testing.assert_close(other.encode_image(image), seg.encode_image(image))


def test_agent_episode_on_mri_slice(seg, mni_slice):
    image, gt = mni_slice
    result = msagent.segment(image, "brain", backbone=seg, policy="expert", ground_truth=gt)
    assert result.turns >= 2 and result.iou > 0.6


def test_conformance(seg, wide):
    from msagent.testing import check_segmenter

    check_segmenter(seg, wide[0], thin=True)
