"""Native 3-D propagation (``native_propagator``) against sam2's own ``SAM2VideoPredictor``.

MedSAM2's 512-px model with random weights; a phantom whose ellipse moves and changes over 4
slices (96×128), written as JPEG frames (the official loader's input) and read back as the
stack's slices, so both sides see the same pixels. The reference is sam2's predictor built by
``build_sam2_video_predictor`` from the same checkpoint, run the documented way: ``init_state``
on the folder, ``add_new_mask`` / ``add_new_points_or_box`` on the key frame,
``propagate_in_video`` forward in one state and reverse in another (MedSAM2 resets between the
two), a later seed added to both states and both passes run again.

For speed the image encoder (sam2's ``forward_image``, the same weights on both sides) runs
once per distinct input frame for both sides together: sam2 re-encodes a frame each time it
returns to it, and the encoder is deterministic. So the comparison covers the frames going in
(checked bit for bit against sam2's loader) and everything after the encoder.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from msagent_medsam2.model import build_model, medsam2_config
from msagent_medsam2.propagation import Sam2VideoPropagator, video_frame
from PIL import Image

import msagent
from msagent.backbones import Propagator, Seed, SliceStack
from msagent.testing import make_phantom
from msagent.types import BBox, Prompts

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning",
                                        "ignore:(?s).*Skipping the post-processing:UserWarning")
COUNT, SIZE = 4, (96, 128)
KEY, SECOND = 1, 3
#: sam2's Hiera-tiny config at MedSAM2's 512 px (what sam2.1_hiera_t512.yaml changes)
AT_512 = ["++model.image_size=512",
          "++model.memory_attention.layer.self_attention.feat_sizes=[32,32]",
          "++model.memory_attention.layer.cross_attention.feat_sizes=[32,32]"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("medsam2-video") / "MedSAM2_latest.pt"
    torch.save({"model": build_model(medsam2_config(512)).state_dict()}, path)
    return path


def memoised(forward_image, memo: dict):
    """``forward_image`` computed once per distinct input (fresh lists: callers replace items)."""

    def forward(batch):
        key = hashlib.sha256(batch.numpy().tobytes()).hexdigest()
        if key not in memo:
            memo[key] = forward_image(batch)
        return {k: list(v) if isinstance(v, list) else v for k, v in memo[key].items()}

    return forward


@pytest.fixture(scope="module")
def encoder_memo():
    return {}


@pytest.fixture(scope="module")
def seg(checkpoint, encoder_memo):
    seg = msagent.load_backbone("medsam2", checkpoint=checkpoint, image_size=512, device="cpu")
    seg.model.forward_image = memoised(seg.model.forward_image, encoder_memo)
    return seg


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """(JPEG folder, the stack read back from it, the ellipse's mask on each slice)."""
    folder = tmp_path_factory.mktemp("frames")
    truths = []
    for i in range(COUNT):
        image, truth = make_phantom(*SIZE, center=(40 + 3 * i, 50 + 5 * i),
                                    radii=(18 + 2 * i, 26 - 2 * i), seed=i)
        Image.fromarray(image[:, :, 0]).save(folder / f"{i}.jpg")  # gray JPEG, as "L"
        truths.append(truth)
    gray = np.stack([np.array(Image.open(folder / f"{i}.jpg")) for i in range(COUNT)])
    return folder, SliceStack(gray), truths


@pytest.fixture(scope="module")
def official(checkpoint, encoder_memo):
    """sam2's video predictor, built by sam2 itself from the checkpoint (encoder shared)."""
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", str(checkpoint), device="cpu",
        hydra_overrides_extra=AT_512 + ["++model.add_all_frames_to_correct_as_cond=true"])
    predictor.forward_image = memoised(predictor.forward_image, encoder_memo)
    return predictor


def official_pass(predictor, states, seeds, prompts=False):
    """Add ``seeds`` (index → Seed) to both states, propagate forward and reverse: masks."""
    masks = {}
    for reverse, state in states.items():
        for index, seed in sorted(seeds.items()):
            if prompts:
                box = np.array(seed.prompts.box.as_tuple(), np.float32)
                predictor.add_new_points_or_box(state, index, 1, box=box)
            else:
                predictor.add_new_mask(state, index, 1, seed.mask)
        for index, _, logits in predictor.propagate_in_video(state, reverse=reverse):
            masks[index] = (logits[0, 0] > 0).numpy()
    return masks


def assert_parity(prop, states, masks, seeds):
    """Every slice: the seed's own mask on seed slices, the official mask elsewhere (an
    empty one absent); and both video states hold identical memories, pointers and logits."""
    assert set(masks) == set(range(prop.stack.count))
    for index, official_mask in masks.items():
        expected = seeds[index].mask if index in seeds else official_mask
        if expected.any():
            assert np.array_equal(prop.results[index].mask, expected), index
        else:
            assert index not in prop.results, index
    for reverse, state in states.items():
        ours = prop._states[reverse]["output_dict_per_obj"][0]
        theirs = state["output_dict_per_obj"][0]
        for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
            assert set(ours[kind]) == set(theirs[kind]), (reverse, kind)
            for index, out in theirs[kind].items():
                for key in ("pred_masks", "maskmem_features", "obj_ptr", "object_score_logits"):
                    assert torch.equal(ours[kind][index][key], out[key]), (reverse, index, key)


@pytest.fixture(scope="module")
def ours(seg, video):
    """Pass 1, ours: a mask seed on the key slice."""
    prop = seg.native_propagator(video[1])
    prop.add_seed(KEY, Seed(video[2][KEY]))
    prop.propagate()
    return prop


@pytest.fixture(scope="module")
def first(ours, video, official):
    """Pass 1, sam2's: the same seed, one state per direction."""
    states = {reverse: official.init_state(str(video[0])) for reverse in (False, True)}
    return states, official_pass(official, states, ours.seeds)


@pytest.fixture(scope="module")
def second(ours, first, video, official):
    """Pass 2 on both sides: a second mask seed, added to the existing states."""
    counts = ours.encodes, ours.decodes
    ours.add_seed(SECOND, Seed(video[2][SECOND]))
    ours.propagate()
    states = first[0]
    masks = official_pass(official, states, {SECOND: ours.seeds[SECOND]})
    return states, masks, counts


def test_frames_are_what_sams_loader_makes_of_the_jpegs(video):
    from sam2.utils.misc import load_video_frames

    folder, stack, _ = video
    images, height, width = load_video_frames(str(folder), 512, offload_video_to_cpu=True,
                                              compute_device=torch.device("cpu"))
    assert (height, width) == SIZE
    for index in range(COUNT):
        assert torch.equal(video_frame(stack.image(index), 512), images[index])


@pytest.mark.slow
def test_results_keep_the_decode_contract(seg, ours):
    predictions = list(ours.results.values())
    seg.check_outputs(predictions, len(predictions), SIZE)
    for index, prediction in ours.results.items():
        assert prediction.mask.any()
        assert 0 < prediction.score <= 1, (index, prediction.score)
    assert np.array_equal(ours.masks()[KEY], ours.seeds[KEY].mask)
    assert ours.results[KEY].mask is not ours.seeds[KEY].mask


def test_first_propagation_equals_sam2_video_predictor(ours, first):
    states, masks = first
    assert_parity(ours, states, masks, ours.seeds)
    assert [i for i in ours.results if i != KEY], \
        "the random model tracked nothing: the comparison would be vacuous"
    assert set(ours._states[False]) - set(states[False]) == {"msagent_frames", "msagent_scores"}


def test_a_second_seed_repropagates_in_the_existing_state(ours, second):
    states, masks, _ = second
    assert_parity(ours, states, masks, ours.seeds)
    assert set(states[False]["output_dict_per_obj"][0]["cond_frame_outputs"]) == {KEY, SECOND}


def test_each_slice_is_encoded_once_and_tracking_steps_are_counted(ours, second):
    encodes, decodes = second[2]
    # pass 1: the seed in each state, then slices 2, 3 forward and 0 backward
    assert (encodes, decodes) == (COUNT, 2 + 2 + 1)
    # pass 2: the new seed in each state, slice 2 forward (3 is a seed) and 0 backward
    assert (ours.encodes, ours.decodes) == (COUNT, decodes + 2 + 1 + 1)
    ours.propagate()  # nothing new: no work
    assert (ours.encodes, ours.decodes) == (COUNT, decodes + 4)


def test_a_box_seed_equals_add_new_points_or_box(seg, video, official, tmp_path):
    folder, stack, truths = video
    for index in range(3):
        (tmp_path / f"{index}.jpg").write_bytes((folder / f"{index}.jpg").read_bytes())
    small = SliceStack(stack.gray[:3])
    ys, xs = np.nonzero(truths[1])
    seed = Seed(truths[1], Prompts(box=BBox(int(xs.min()), int(ys.min()), int(xs.max()),
                                            int(ys.max()))))
    prop = Sam2VideoPropagator(seg, small, seed_with="prompts")
    prop.add_seed(1, seed)
    prop.propagate()
    states = {reverse: official.init_state(str(tmp_path)) for reverse in (False, True)}
    masks = official_pass(official, states, {1: seed}, prompts=True)
    assert_parity(prop, states, masks, {1: seed})
    assert prop.results[1].mask is not seed.mask and np.array_equal(prop.results[1].mask,
                                                                    seed.mask)


def test_both_backbones_propagate_natively(seg, video, tiny_checkpoint):
    stack = video[1]
    sam2 = msagent.load_backbone("sam2", checkpoint=tiny_checkpoint, device="cpu")
    for backbone in (seg, sam2):
        prop = backbone.native_propagator(stack)
        assert isinstance(prop, Propagator) and isinstance(prop, Sam2VideoPropagator)
        assert prop.method == "native" and prop.propagate() == {}  # no seed yet
        prop.close()


def test_bad_seeds_and_options_are_refused(seg, video):
    stack = video[1]
    prop = seg.native_propagator(stack)
    with pytest.raises(ValueError, match="96×128 bool"):
        prop.add_seed(0, Seed(np.zeros((10, 10), bool)))
    with pytest.raises(IndexError):
        prop.add_seed(COUNT, Seed(np.zeros(SIZE, bool)))
    with pytest.raises(ValueError, match="seed_with"):
        Sam2VideoPropagator(seg, stack, seed_with="box")


@pytest.mark.slow
def test_segment_volume_runs_native_propagation_end_to_end(checkpoint):
    """msagent.segment_volume with medsam2 picks the native propagator (propagation="auto"):
    the expert's key episode, SAM2's memory through the stack, one review episode."""
    segmenter = msagent.load_backbone("medsam2", checkpoint=checkpoint, image_size=512,
                                      device="cpu")
    yy, xx = np.mgrid[:SIZE[0], :SIZE[1]]
    gt = np.stack([(yy - 48) ** 2 / 400 + (xx - 50 - 6 * z) ** 2 / 900 <= 1 for z in range(COUNT)])
    volume = np.where(gt, 200.0, 30.0) + np.arange(COUNT)[:, None, None]
    result = msagent.segment_volume(volume, "ellipse", backbone=segmenter, policy="expert",
                                    ground_truth=gt, review_slices=1, max_turns=2)
    trajectory = result.trajectory
    assert trajectory.propagation == "native" and result.mask.shape == gt.shape
    assert trajectory.key_slice in range(COUNT) and trajectory.seeds[0] == trajectory.key_slice
    # the propagator encodes each frame once; the episodes' slices once more (their own
    # preprocessing): at most COUNT + episodes
    episodes = len([e for e in trajectory.episodes if e.trajectory is not None])
    assert COUNT <= trajectory.counts["encodes"] <= COUNT + episodes
    assert np.array_equal(result.trajectory.final_masks()[trajectory.key_slice],
                          trajectory.episodes[0].trajectory.final_mask)


def test_propagate_until_stops_between_frames(seg, video):
    """The contract's stop rule (issue 26): the propagator calls checkpoint() after each
    tracked frame, so propagate_until stops it there; a new propagator then runs in full."""
    from msagent.backbones import PropagationStopped

    stack = video[1]
    prop = seg.native_propagator(stack)
    prop.add_seed(KEY, Seed(video[2][KEY]))
    checks: list[int] = []

    def should_stop() -> bool:
        checks.append(1)
        return len(checks) > 3  # the first check is before any frame

    with pytest.raises(PropagationStopped) as stopped:
        prop.propagate_until(should_stop)
    assert stopped.value.done == 2 and prop.progress == 2 and prop.results == {}
    prop.close()
