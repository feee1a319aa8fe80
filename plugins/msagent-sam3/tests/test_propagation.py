"""``sam3``'s native propagation against ``Sam3TrackerVideoModel`` run the documented way
(``Sam3TrackerVideoProcessor.init_video_session`` on the frames, a mask added on the seed
frame, ``propagate_in_video_iterator`` forward and backward from it), on the reduced SAM 3
with random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msagent.backbones import Seed

LOGIT_ATOL = 1e-5


def documented(checkpoint, stack, seeds: dict[int, np.ndarray]):
    """transformers' video tracking: every frame's (H×W logits from post_process_masks, the
    frame's native logits)."""
    from msagent_sam3.tiny import processors
    from transformers import Sam3TrackerVideoModel

    model = Sam3TrackerVideoModel.from_pretrained(checkpoint).eval()
    _, _, processor = processors()
    frames = np.stack([stack.image(i) for i in range(stack.count)])
    session = processor.init_video_session(video=frames, inference_device="cpu")
    logits: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    height, width = stack.image_size
    with torch.inference_mode():
        for index, mask in sorted(seeds.items()):
            processor.add_inputs_to_inference_session(session, frame_idx=index, obj_ids=1,
                                                      input_masks=mask)
            model(inference_session=session, frame_idx=index)
        for reverse in (False, True):
            for out in model.propagate_in_video_iterator(session, start_frame_idx=min(seeds),
                                                         reverse=reverse):
                logits[out.frame_idx] = (processor.post_process_masks(
                    [out.pred_masks], original_sizes=[[height, width]], binarize=False)[0][0, 0],
                    out.pred_masks[:, 0])
    return logits


@pytest.fixture(scope="module")
def seeded(segmenter, stack):
    slices, truth = stack
    propagator = segmenter.native_propagator(slices)
    propagator.add_seed(4, Seed(mask=truth[4]))
    return propagator, propagator.propagate()


def test_is_native(segmenter, stack):
    assert segmenter.native_propagator(stack[0]).method == "native"


def test_forward_and_backward_equal_transformers(checkpoint, stack, seeded):
    from msagent_sam3.segmenter import resize_logits

    slices, truth = stack
    propagator, results = seeded
    theirs = documented(checkpoint, slices, {4: truth[4]})
    assert sorted(theirs) == list(range(slices.count))
    assert sum(bool((full > 0).any()) for full, _ in theirs.values()) >= 3  # not vacuous
    for index in range(slices.count):
        if index == 4:
            assert np.array_equal(results[4].mask, truth[4])  # a seed keeps its own mask
            continue
        full, native = theirs[index]
        expected = (full > 0).numpy()
        got = results[index].mask if index in results else np.zeros_like(expected)
        assert np.array_equal(got, expected), index
        if index in results:
            diff = np.abs(results[index].low_res_logits - resize_logits(native)[0].numpy()).max()
            assert diff <= LOGIT_ATOL, (index, diff)


def test_each_slice_encoded_once(segmenter, stack, seeded):
    slices, truth = stack
    propagator, _ = seeded
    assert propagator.encodes <= slices.count
    before = segmenter.encodes
    propagator.add_seed(1, Seed(mask=truth[1]))
    propagator.propagate()
    assert segmenter.encodes == before  # a second seed re-tracks without encoding
    assert propagator.propagate() is propagator.results  # nothing new: nothing runs


def test_two_seeds_equal_transformers(checkpoint, segmenter, stack):
    slices, truth = stack
    propagator = segmenter.native_propagator(slices)
    for index in (2, 6):
        propagator.add_seed(index, Seed(mask=truth[index]))
    results = propagator.propagate()
    theirs = documented(checkpoint, slices, {2: truth[2], 6: truth[6]})
    for index in set(range(slices.count)) - {2, 6}:
        expected = (theirs[index][0] > 0).numpy()
        got = results[index].mask if index in results else np.zeros_like(expected)
        assert np.array_equal(got, expected), index
    for prediction in results.values():
        assert prediction.low_res_logits.shape == (256, 256)
        assert prediction.low_res_logits.dtype == np.float32


def test_bad_seed(segmenter, stack):
    propagator = segmenter.native_propagator(stack[0])
    with pytest.raises(ValueError, match="bool array"):
        propagator.add_seed(0, Seed(mask=np.zeros(stack[0].image_size, np.uint8)))
    with pytest.raises(IndexError):
        propagator.add_seed(99, Seed(mask=np.zeros(stack[0].image_size, bool)))
