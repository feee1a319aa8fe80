"""3-D corrections (issue 28): a correction re-propagates only as far as its change carries
(msagent.volume.propagation, ``correction="local"``), clicks in the CVPR 3-D protocol never
make the volume worse, and reviews are ranked by expected wrong voxels
(msagent.volume.reviews.rank_reviews). On the deterministic stand-ins of msagent.testing."""

from __future__ import annotations

import numpy as np
import pytest

import msagent
from msagent import protocol
from msagent.backbones.propagation import Seed
from msagent.evaluation.volume_protocols import run_cvpr_3d
from msagent.policies.base import Policy, Reply
from msagent.testing import (
    CT_PHANTOM_ORGANS,
    BandBackbone,
    BrightBackbone,
    make_ct_phantom,
    make_tube,
)
from msagent.types import BBox, MaskPrediction, Point
from msagent.volume import propagation
from msagent.volume.propagation import GenericPropagator, click_correction, local_change
from msagent.volume.reviews import rank_reviews
from msagent.volume.session import VolumeSession
from msagent.volume.stack import build_stack


def propagated(backbone, volume, mask, seed=8, **options):
    propagator = GenericPropagator(backbone, build_stack(volume).slices, **options)
    propagator.add_seed(seed, Seed(mask[seed]))
    propagator.propagate()
    return propagator


def test_a_correction_that_changes_nothing_nearby_stops_at_its_neighbours():
    volume, mask = make_tube()
    propagator = propagated(BrightBackbone(), volume, mask)
    before, decodes = dict(propagator.results), propagator.decodes
    corrected = mask[12].copy()
    corrected[0:2, 0:2] = True  # a stray corner: the neighbours' decodes do not change near it
    propagator.add_seed(12, Seed(corrected))
    propagator.propagate()
    # slices 11 and 13 are decoded, show no change near the correction and keep theirs
    assert propagator.decodes - decodes == 2
    assert all(propagator.results[i] is before[i] for i in before if i != 12)


def test_a_correction_follows_its_change_until_the_change_ends():
    volume, mask = make_tube()
    lobe = np.zeros_like(mask)
    lobe[9:13, 17:24, 28:40] = True  # a bright lobe out of the disk, past its boxes
    volume[lobe] = 200.0
    propagator = propagated(BandBackbone(), volume, mask)
    assert (propagator.masks() & lobe).sum() < lobe.sum()  # its boxes miss part of it
    before = dict(propagator.results)
    propagator.add_seed(10, Seed(before[10].mask | lobe[10]))  # a review adds the lobe there
    propagator.propagate()
    after = propagator.masks()
    # carried to 9, 11 and 12, where the lobe is (but its corners, which the stand-in's
    # median filter rounds off); the slices beyond keep their results
    for index in (9, 11, 12):
        assert (after[index] & lobe[index]).sum() >= 0.9 * lobe[index].sum()
        assert (before[index].mask & lobe[index]).sum() < (after[index] & lobe[index]).sum()
    assert all(propagator.results[i] is before[i] for i in (*range(8), 13, 14, 15))


def test_a_correction_stops_where_the_predicted_score_falls():
    # a correction that keeps only a sliver of the disk: walking back toward the key slice,
    # a box around the sliver fills with the disk (the stand-in's score falls), so the walk
    # stops and the slices the key slice made keep their masks
    volume, mask = make_tube()
    for rule in ("local", "nearest"):
        propagator = propagated(BandBackbone(), volume, mask, correction=rule)
        before = propagator.masks()
        sliver = np.zeros_like(mask[14])
        sliver[18:22, 18:22] = True
        propagator.add_seed(14, Seed(sliver))
        propagator.propagate()
        kept = np.array_equal(propagator.masks()[:14], before[:14])
        assert kept == (rule == "local"), rule


def disks(radii) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk per slice of the given radius (0: none), on distinct backgrounds."""
    volume = np.full((len(radii), 40, 80), 20.0) + np.arange(len(radii))[:, None, None] * 2.0
    yy, xx = np.mgrid[:40, :80]
    mask = np.stack([(yy - 20) ** 2 + (xx - 30) ** 2 <= r * r if r else np.zeros((40, 80), bool)
                     for r in radii])
    volume[mask] = 200.0
    return volume, mask


@pytest.mark.parametrize("beyond, extended", [((5, 4, 3, 0, 0), (11, 12, 13)),  # it narrows
                                              ((10, 12, 14, 16, 18), ())])  # something grows
def test_past_the_results_end_a_correction_extends_a_narrowing_target_only(beyond, extended):
    volume, mask = disks((6,) * 10 + (8,) + beyond)
    propagator = GenericPropagator(BrightBackbone(), build_stack(volume).slices)
    propagator.add_seed(4, Seed(mask[4]))
    propagator.add_seed(10, Seed(np.zeros_like(mask[10])))  # "no target here" at first
    propagator.propagate()
    assert sorted(propagator.results) == list(range(10))
    propagator.add_seed(10, Seed(mask[10]))  # a review finds the target there after all
    propagator.propagate()
    assert sorted(propagator.results) == [*range(11), *extended]
    for index in extended:
        assert np.array_equal(propagator.results[index].mask, mask[index])


@pytest.mark.parametrize("growth", [1.25, 100.0])
def test_a_correction_whose_change_grows_as_it_walks_stops(monkeypatch, growth):
    # a bright wedge beside the disk, wider slice by slice from slice 8 on: a review adds
    # slice 8's part; walking on, each box takes more of the wedge (the change grows: the
    # backbone's drift, not the correction), so the walk stops at once
    monkeypatch.setattr(propagation, "WALK_GROWTH", growth)
    volume, mask = disks((6,) * 16)
    for index in range(8, 16):
        volume[index, 10:31, 37:41 + 3 * (index - 8)] = 200.0
    propagator = GenericPropagator(BrightBackbone(), build_stack(volume).slices, score_drop=1.0)
    propagator.add_seed(4, Seed(mask[4]))
    propagator.propagate()
    before = dict(propagator.results)
    corrected = mask[8].copy()
    corrected[10:31, 37:41] = True
    propagator.add_seed(8, Seed(corrected))
    propagator.propagate()
    walked = [i for i in range(9, 16) if propagator.results[i] is not before[i]]
    assert walked == ([] if growth == 1.25 else [9, 10, 11, 12, 13, 14, 15]), walked


def test_past_the_results_end_a_correction_that_shrank_the_end_does_not_grow_beyond():
    # a result that ends at slice 10 (a large disk) while a smaller disk goes on beyond; a
    # review shrinks slice 10 to a disk smaller still: past the end the next slice's mask
    # would grow (113 px against 81) although the change carried (the 172 px the review
    # removed) would allow it; the departure stop, which would also stop it here, is off
    volume, mask = disks((9,) * 11 + (6, 6, 6))
    propagator = GenericPropagator(BrightBackbone(), build_stack(volume).slices, depart=100.0)
    zeros = np.zeros((256, 256), np.float32)
    propagator.resume({i: MaskPrediction(mask[i], zeros, 1.0) for i in range(11)},
                      {4: Seed(mask[4])})
    small = disks((5,))[1][0]
    propagator.add_seed(10, Seed(small))
    propagator.propagate()
    assert sorted(propagator.results) == list(range(11))
    assert np.array_equal(propagator.results[10].mask, small)


def test_a_click_whose_decode_equals_the_slice_is_no_correction():
    segmenter = BrightBackbone()
    before = np.zeros((20, 20), bool)
    before[5:10, 5:10] = True
    same = MaskPrediction(before.copy(), np.zeros((256, 256), np.float32), 0.9)
    old = MaskPrediction(before, np.zeros((256, 256), np.float32), 0.9)
    assert click_correction(segmenter, old, same, (7, 7), reach=1) is None
    empty = MaskPrediction(np.zeros((20, 20), bool), np.zeros((256, 256), np.float32), 0.0)
    assert click_correction(segmenter, None, empty, (7, 7), reach=1) is None


def test_an_empty_correction_clears_only_beyond_it():
    volume, mask = make_tube()
    propagator = propagated(BrightBackbone(), volume, mask)
    before = dict(propagator.results)
    propagator.add_seed(13, Seed(np.zeros_like(mask[13])))
    propagator.propagate()
    assert sorted(propagator.results) == list(range(13))
    assert all(propagator.results[i] is before[i] for i in range(13))


def test_a_click_keeps_only_the_change_that_reaches_it():
    before = np.zeros((20, 20), bool)
    before[5:10, 5:10] = True
    after = before.copy()
    after[5:10, 10:13] = True  # grown where the click is
    after[15:18, 15:18] = True  # and a stray region far from it
    kept = local_change(before, after, (11, 7), reach=1)
    assert kept[5:10, 10:13].all() and not kept[15:, 15:].any() and kept[5:10, 5:10].all()
    assert np.array_equal(local_change(before, before, (11, 7), 1), before)


def test_a_click_the_backbone_rates_worse_is_no_correction():
    segmenter = BrightBackbone()
    before = np.zeros((20, 20), bool)
    before[5:10, 5:10] = True
    grown = before.copy()
    grown[5:10, 10:13] = True
    old = MaskPrediction(before, np.zeros((256, 256), np.float32), 0.9)
    for score, kept in [(0.85, True), (0.75, False), (float("nan"), True)]:
        after = MaskPrediction(grown, np.zeros((256, 256), np.float32), score)
        result = click_correction(segmenter, old, after, (11, 7), reach=1)
        assert (result is not None) == kept, score
    # a slice without a score (a seed) takes any decode; the session passes no limit
    unscored = MaskPrediction(before, np.zeros((256, 256), np.float32), float("nan"))
    assert click_correction(segmenter, unscored, MaskPrediction(grown, None, 0.1), (11, 7), 1)
    assert click_correction(segmenter, old, MaskPrediction(grown, None, 0.1), (11, 7), 1,
                            score_drop=float("inf"))


class StrayBackbone(BrightBackbone):
    """A click's decode also marks a corner far from it (a decode that moves the outline
    everywhere, as a box-trained model's click decodes do)."""

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        out = super().decode_prompts(embedding, prompt_sets, prev_logits, multimask=multimask)
        for prompts, prediction in zip(prompt_sets, out):
            if prompts.points:
                prediction.mask[:3, :3] = True
        return out


@pytest.mark.parametrize("method", ["generic", "auto"])
def test_a_click_in_the_3d_session_keeps_only_the_change_that_reaches_it(method):
    volume, mask = make_tube()
    session = VolumeSession(build_stack(volume, window=(200, 110)), StrayBackbone(radius=3),
                            method=method, target="tube")
    height, width = session.image_size
    session.add_box(8, BBox(0, 0, width - 1, height - 1))
    session.propagate()
    edge = np.argwhere(mask[10])[:, ::-1].max(axis=0)  # the disk's lower-right edge (x, y)
    before = session.slice_view(10).mask
    after = session.add_point(10, Point(int(edge[0]) + 2, int(edge[1]), 1)).mask
    assert (after & ~before).any()  # the disk the click adds...
    assert not after[:3, :3].any()  # ...but not the corner the decode also marked
    assert np.array_equal(after & ~before, (after ^ before))  # nothing else moved
    # a click whose decode changes nothing near it leaves the slice as it was
    inside = np.argwhere(mask[10]).mean(axis=0).astype(int)
    again = session.add_point(10, Point(int(inside[1]), int(inside[0]), 1)).mask
    assert np.array_equal(again, after)


@pytest.fixture(scope="module")
def phantom():
    volume, labels = make_ct_phantom((32, 128, 128))
    return build_stack(volume, spacing=(7.8, 3.2, 3.2), window="abdomen").slices, labels


@pytest.mark.parametrize("label", sorted(CT_PHANTOM_ORGANS))
def test_a_click_never_makes_the_volume_worse(phantom, label):
    stack, labels = phantom
    dice = run_cvpr_3d(BandBackbone(), stack, labels == label, propagation="generic").curves["dice"]
    # each click: no worse than before it
    assert all(b >= a for a, b in zip(dice, dice[1:])), dice


def test_before_the_rule_a_click_carried_damage_through_its_neighbours(phantom):
    stack, labels = phantom
    aorta = labels == 5
    dice = run_cvpr_3d(BandBackbone(), stack, aorta, propagation="generic",
                       correction="nearest").curves["dice"]
    assert dice[1] < dice[0] - 0.05  # the first click's re-propagation replaced good slices


def prediction(area: int, score: float) -> MaskPrediction:
    mask = np.zeros((64, 64), bool)
    mask.flat[:area] = True
    return MaskPrediction(mask, np.zeros((256, 256), np.float32), score)


def test_reviews_rank_the_start_of_a_runaway_tail_first():
    # the target (slices 10..20, well scored) and a tail past its end that grows slice by
    # slice with low scores: reviewing where the tail starts fixes it all (an empty seed)
    results = {i: prediction(100, 0.9) for i in range(10, 21)}
    results.update({i: prediction(150 * (i - 20), 0.3) for i in range(21, 31)})
    ranked = rank_reviews(results, set(), {15}, 40)
    assert ranked[0][0] == 21 and ranked[0][1].startswith("carried")
    assert ranked[0][2] > ranked[1][2]


def test_reviews_look_beyond_the_ends_when_every_slice_scores_alike():
    results = {i: prediction(100, 0.6) for i in range(5, 11)}
    ranked = rank_reviews(results, set(), {5}, 20)
    assert {i for i, _, _ in ranked[:2]} == {4, 11}
    assert all(reason.startswith("end of extent") for _, reason, _ in ranked[:2])
    assert rank_reviews(results, {4, 11}, {5}, 20)[0][0] not in (4, 11, 5)


class CentreBox(Policy):
    """Reads the image only: a box around the bright pixels, then stop."""

    name = "centre-box"

    def act(self, episode):
        if episode.executed_turns:
            return Reply(protocol.stop_action().raw_text)
        ys, xs = np.nonzero(episode.image[:, :, 0] > 120)
        box = BBox(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        return Reply(protocol.bbox_action(box, episode.image_size).raw_text)


def test_the_expert_and_other_policies_look_at_the_same_slice_first():
    volume, mask = make_tube(shift_at=11, shift=40)
    firsts = []
    for policy in ("expert", CentreBox()):
        result = msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy=policy,
                                        ground_truth=mask if policy == "expert" else None,
                                        review_slices=1, key_slice=7)
        firsts.append(next(e.slice for e in result.episodes if e.role == "review"))
    assert firsts == [11, 11]


def test_each_seeded_episode_records_what_it_did_to_the_volume():
    volume, mask = make_tube(shift_at=11, shift=40)
    result = msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy="expert",
                                    ground_truth=mask, review_slices=3, key_slice=7)
    seeded = [e for e in result.episodes if e.seeded]
    key = seeded[0]
    assert key.role == "key" and key.slices_changed == 4 + 7  # slices 0..10 from nothing
    assert key.dice_after < 0.9  # the propagation lost the tube past its jump at slice 11
    # the review beyond the end fixes slices 11.. : its effect is what the volume gained
    first_review = seeded[1]
    assert first_review.slice == 11 and first_review.slices_changed >= 1
    assert first_review.dice_after > key.dice_after
    assert seeded[-1].dice_after == pytest.approx(result.dice)
    for episode in result.episodes:
        if not episode.seeded:
            assert episode.slices_changed == 0 and episode.dice_after is None
    # without a ground truth nothing is measured, and nothing else changes
    blind = msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy=CentreBox(),
                                   review_slices=1, key_slice=7)
    assert all(e.dice_after is None for e in blind.episodes)
    assert next(e for e in blind.episodes if e.role == "key").slices_changed > 0
