"""3-D runs (msagent.segment_volume): key slice, generic propagation, review, trajectories, bad
input. A stand-in backbone with known behaviour (a box selects the bright pixels inside it)
makes every expected result exact; real LiteMedSAM runs on MNI152 in tests/volume/test_volume_real.py."""

from __future__ import annotations

import attrs
import nibabel as nib
import numpy as np
import pytest

import msagent
from msagent import protocol
from msagent.backbones.propagation import Seed, SliceStack
from msagent.errors import InvalidImage, InvalidInput, InvalidMask, MsAgentError
from msagent.policies.base import Policy, Reply
from msagent.testing import BrightBackbone, make_tube
from msagent.types import BBox
from msagent.volume.embeddings import EmbeddingStore
from msagent.volume.propagation import GenericPropagator, grown_box, propagator_for
from msagent.volume.stack import build_stack
from msagent.volume.trajectory import VolumeTrajectory


@pytest.fixture
def bright():
    return BrightBackbone()


def test_expert_key_slice_and_propagation_recover_the_tube(bright):
    volume, mask = make_tube()
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                                    ground_truth=mask, spacing=(3.0, 0.8, 0.8), review_slices=0)
    assert result.mask.shape == volume.shape and result.mask.dtype == bool
    assert result.dice == 1.0 and result.iou == 1.0 and result.nsd == 1.0
    trajectory = result.trajectory
    areas = mask.reshape(len(mask), -1).sum(axis=1)
    assert trajectory.key_rule == "largest_gt_area" and trajectory.key_slice == int(np.argmax(areas))
    assert trajectory.propagation == "generic" and trajectory.seeds == [trajectory.key_slice]
    assert trajectory.spacing == (3.0, 0.8, 0.8) and trajectory.where == "axis 0"
    # each slice encoded once: the key episode reuses the run's embedding of its slice
    assert len(bright.encoded) == len(set(bright.encoded)) == trajectory.counts["encodes"] == 16
    assert set(result.slice_dice) == set(range(16))


def test_axis_and_voxel_order(bright):
    volume, mask = make_tube()
    moved, moved_mask = np.moveaxis(volume, 0, 2), np.moveaxis(mask, 0, 2)
    result = msagent.segment_volume(moved, "tube", backbone=bright, policy="expert",
                                    ground_truth=moved_mask, axis=2, review_slices=0)
    assert result.mask.shape == moved.shape and np.array_equal(result.mask, moved_mask)
    assert result.trajectory.where == "axis 2"


def test_generic_propagation_ends_where_the_target_ends(bright):
    volume, mask = make_tube()
    volume[:3], mask[:3] = 20.0, False  # no target in the first three slices
    stack = build_stack(volume).slices
    propagator = GenericPropagator(bright, stack)
    propagator.add_seed(8, Seed(mask[8]))
    results = propagator.propagate()
    assert sorted(results) == list(range(3, 16))
    assert np.array_equal(propagator.masks(), mask)
    # slices 3..7 and 9..15 decoded once each, slice 2 once to find the end
    assert propagator.decodes == 13


def test_repropagation_decodes_only_until_results_stop_changing(bright):
    volume, mask = make_tube()
    stack = build_stack(volume).slices
    propagator = GenericPropagator(bright, stack, correction="nearest")
    propagator.add_seed(8, Seed(mask[8]))
    propagator.propagate()
    first = propagator.decodes
    assert first == 15
    propagator.propagate()
    assert propagator.decodes == first  # nothing changed: nothing decoded
    # a seed equal to the slice's current result: its neighbours get new inputs (the seed's
    # logits), decode to the same masks, and the walks stop there
    propagator.add_seed(12, Seed(propagator.results[12].mask))
    propagator.propagate()
    assert propagator.decodes - first == 2
    assert np.array_equal(propagator.masks(), mask)


def test_between_two_seeds_each_slice_follows_the_nearer(bright):
    volume, mask = make_tube()
    stack = build_stack(volume).slices
    propagator = GenericPropagator(bright, stack)
    calls = []
    decode = bright.decode

    def watched(embedding, prompts, prev, **kw):
        calls.append(prompts.box)
        return decode(embedding, prompts, prev, **kw)

    bright.decode = watched
    propagator.add_seed(4, Seed(mask[4]))
    propagator.add_seed(10, Seed(mask[10]))
    propagator.propagate()
    # slices 5..7 from seed 4 (7 is the midpoint: a tie goes to the lower seed), 8..9 from 10
    assert propagator.decodes == 4 + 3 + 2 + 5


def test_review_finds_a_slice_the_propagation_lost_and_fixes_it(bright):
    # the tube jumps 40 px sideways at slice 11: a box grown from slice 10 misses it there
    volume, mask = make_tube(shift_at=11, shift=40)
    no_review = msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy="expert",
                                       ground_truth=mask, review_slices=0, key_slice=7)
    assert max(no_review.trajectory.masks) == 10 and no_review.dice < 0.9
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                                    ground_truth=mask, review_slices=3, key_slice=7)
    review = [e for e in result.episodes if e.role == "review"]
    # the slice just beyond the result's end ranks first (expected wrong voxels, no truth)
    assert review[0].slice == 11 and review[0].reason.startswith("end of extent") and review[0].seeded
    assert review[0].trajectory.initial is None  # propagation left it empty: from nothing
    assert result.dice == 1.0
    assert len(bright.encoded) == len(set(bright.encoded))  # still each slice once


def test_expert_marks_slices_beyond_the_target_as_empty(bright):
    volume, mask = make_tube()
    mask[12:] = False  # the bright tube goes on, but the target ends at slice 11
    # only the truth tells where such a target ends: the worst-Dice ranking finds slice 12
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                                    ground_truth=mask, review_slices=1, review_rank="dice")
    (review,) = [e for e in result.episodes if e.role == "review"]
    assert review.slice == 12 and review.decision == "no_target" and review.trajectory is None
    assert result.dice == 1.0 and max(result.trajectory.masks) == 11


def test_review_starts_from_the_propagated_mask(bright):
    volume, mask = make_tube()
    mask[5, 20, 12:16] = False  # a notch the box cannot make: the expert clicks it away
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                                    ground_truth=mask, review_slices=1, key_slice=8,
                                    review_below=0.999, review_rank="dice")
    (review,) = [e for e in result.episodes if e.role == "review"]
    assert review.slice == 5 and review.trajectory.initial is not None
    assert review.trajectory.initial.source == "propagated"


class CentreBox(Policy):
    """Reads the image only: a box around the bright pixels, then stop."""

    name = "centre-box"

    def act(self, episode):
        if episode.executed_turns:
            return Reply(protocol.stop_action().raw_text)
        ys, xs = np.nonzero(episode.image[:, :, 0] > 120)
        if not len(xs):
            return Reply(protocol.bbox_action(BBox(0, 0, 3, 3), episode.image_size).raw_text)
        box = BBox(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        return Reply(protocol.bbox_action(box, episode.image_size).raw_text)


def test_survey_keeps_the_slice_whose_first_prediction_scores_best(bright):
    volume, mask = make_tube()
    volume[9, 20, 20:24] = 20.0  # slice 9's bright disk has a gap: a lower score there
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy=CentreBox(),
                                    ground_truth=mask, review_slices=0, survey_slices=5)
    trajectory = result.trajectory
    survey = [e for e in trajectory.episodes if e.role == "survey"]
    assert [e.slice for e in survey] == [3, 5, 8, 10, 12]
    scores = {e.slice: e.trajectory.executed_steps[0].score for e in survey}
    assert trajectory.key_rule == "survey" and trajectory.key_slice == max(scores, key=scores.get)
    # survey slices are encoded once too, the key slice's embedding reused
    assert len(bright.encoded) == len(set(bright.encoded))


def test_suspicion_review_without_ground_truth(bright):
    volume, _ = make_tube()
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy=CentreBox(),
                                    review_slices=2, key_slice=8)
    review = [e for e in result.episodes if e.role == "review"]
    # each review keeps the propagated mask: none counts, so it looks at twice the budget
    assert len(review) == 4 and all(e.reason for e in review) and not any(e.seeded for e in review)
    assert {e.slice for e in review} <= set(result.trajectory.masks)
    assert result.dice is None


def test_volume_trajectory_json_is_lossless(bright):
    volume, mask = make_tube(shift_at=11, shift=40)
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                                    ground_truth=mask, review_slices=2, key_slice=7)
    trajectory = result.trajectory
    again = VolumeTrajectory.from_json(trajectory.to_json())
    assert again.to_dict() == trajectory.to_dict()
    assert np.array_equal(again.final_masks(), trajectory.final_masks())
    assert [e.trajectory.to_dict() if e.trajectory else None for e in again.episodes] == \
        [e.trajectory.to_dict() if e.trajectory else None for e in trajectory.episodes]


def test_embeddings_beyond_the_budget_are_spilled_and_reloaded(bright):
    volume, mask = make_tube()
    stack = build_stack(volume).slices
    store = EmbeddingStore(bright, stack, max_in_memory=2)
    propagator = GenericPropagator(bright, stack, store=store)
    propagator.add_seed(8, Seed(mask[8]))
    propagator.propagate()
    propagator.add_seed(2, Seed(mask[2]))  # revisits spilled slices
    propagator.propagate()
    assert store.in_memory == 2 and np.array_equal(propagator.masks(), mask)
    assert len(bright.encoded) == len(set(bright.encoded)) == store.encodes
    folder = store._folder
    store.close()
    assert folder is not None and not folder.exists()


def test_nifti_in_voxel_order(tmp_path, bright):
    volume, mask = make_tube()
    data = np.moveaxis(volume, 0, 2)[::-1]  # (W, H, D), x flipped
    affine = np.diag([-0.8, 0.8, 3.0, 1.0])
    nib.save(nib.Nifti1Image(data.astype(np.int16), affine), tmp_path / "ct.nii.gz")
    labels = np.moveaxis(mask, 0, 2)[::-1].astype(np.uint8) * 6
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "labels.nii.gz")
    result = msagent.segment_volume(tmp_path / "ct.nii.gz", "tube", backbone=bright,
                                    policy="expert", ground_truth=tmp_path / "labels.nii.gz",
                                    label=6, review_slices=0)
    assert np.array_equal(result.mask, labels == 6)
    assert result.sliced.plane == "axial"
    assert result.trajectory.spacing == pytest.approx((3.0, 0.8, 0.8))


def test_bad_input_is_refused_clearly(bright):
    volume, mask = make_tube()
    with pytest.raises(InvalidImage, match="use msagent.segment"):
        msagent.segment_volume(volume[0], "tube", backbone=bright, policy="expert",
                               ground_truth=mask[0])
    with pytest.raises(InvalidImage, match="segment_volume"):
        msagent.segment(volume, "tube", backbone=bright, policy="expert", ground_truth=mask)
    with pytest.raises(InvalidInput, match="outside"):
        msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                               ground_truth=mask, key_slice=16)
    empty = mask.copy()
    empty[0] = False
    with pytest.raises(InvalidInput, match="empty on key slice 0"):
        msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                               ground_truth=empty, key_slice=0)
    for spacing in [(0, 1, 1), (1, 1), (1, float("nan"), 1), "abc"]:
        with pytest.raises(InvalidInput, match="spacing"):
            msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                                   ground_truth=mask, spacing=spacing)
    with pytest.raises(MsAgentError, match="voxel"):
        msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                               ground_truth=mask, max_voxels=1000)
    with pytest.raises(InvalidMask, match="shape"):
        msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                               ground_truth=mask[:-1])
    with pytest.raises(InvalidInput, match="expert"):
        msagent.segment_volume(volume, "tube", backbone=bright, policy="expert")
    with pytest.raises(InvalidInput, match="native"):
        msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                               ground_truth=mask, propagation="native")
    with pytest.raises(InvalidMask, match="empty in every slice"):
        msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                               ground_truth=np.zeros_like(mask))


def test_grown_box_and_propagator_choice(bright):
    mask = np.zeros((20, 30), bool)
    mask[5:10, 10:20] = True
    assert grown_box(mask, 0.0) == BBox(10, 5, 19, 9)
    assert grown_box(mask, 0.1) == BBox(9, 4, 20, 10)
    assert grown_box(mask, 1.0) == BBox(0, 0, 29, 14)
    stack = SliceStack(np.zeros((3, 20, 30), np.uint8))
    assert propagator_for(bright, stack).method == "generic"
    with pytest.raises(InvalidInput, match="unknown propagation"):
        propagator_for(bright, stack, "3d")


def test_volume_runs_export_as_sft_rows(tmp_path, bright):
    import pyarrow.parquet as pq

    from msagent.export.job import export_trajectories
    from msagent.generation.records import read_trajectories
    from msagent.generation.volumes import VolumeRun, write_volume_set

    volume, mask = make_tube(shift_at=11, shift=40)
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                                    ground_truth=mask, review_slices=2, key_slice=7)
    trajectory = attrs.evolve(result.trajectory, case_id="tube-1")
    run = VolumeRun(trajectory, result.sliced.slices, mask)
    write_volume_set([run], tmp_path / "set")
    records = list(read_trajectories(tmp_path / "set"))
    episodes = [e for e in trajectory.episodes if e.trajectory is not None]
    assert [r.case_id for r in records] == [f"tube-1/slice-{e.slice}" for e in episodes]
    assert [r.row["strategy"] for r in records] == [f"volume-{e.role}" for e in episodes]
    review = next(r for r in records if r.row["strategy"] == "volume-review")
    assert np.array_equal(review.image(), result.sliced.slices.image(review.trajectory.meta["slice"]))
    assert np.array_equal(review.ground_truth(), mask[review.trajectory.meta["slice"]])
    write_volume_set([run], tmp_path / "set")  # a rerun keeps the shard
    with pytest.raises(InvalidInput, match="another trajectory set"):
        write_volume_set([attrs.evolve(run, trajectory=attrs.evolve(trajectory, case_id="x"))],
                         tmp_path / "set")
    summary = export_trajectories(tmp_path / "set", tmp_path / "sft", "verl-sft", image_size=128,
                                  progress=False)
    assert summary.rows == len(episodes)
    rows = pq.read_table(next((tmp_path / "sft").rglob("*.parquet"))).to_pylist()
    assert len(rows) == len(episodes)


def test_unknown_options_are_named(bright):
    volume, mask = make_tube()
    with pytest.raises(InvalidInput, match="review_slice.*known"):
        msagent.segment_volume(volume, "tube", backbone=bright, policy="expert",
                               ground_truth=mask, review_slice=2)


def test_an_empty_seed_ends_the_target_without_claiming_slices_toward_the_key(bright):
    volume, mask = make_tube()
    mask[12:] = False
    stack = build_stack(volume).slices
    propagator = GenericPropagator(bright, stack)
    propagator.add_seed(5, Seed(mask[5]))
    propagator.propagate()
    assert max(propagator.results) == 15  # the bright tube goes on
    propagator.add_seed(12, Seed(np.zeros_like(mask[12])))  # "no target here"
    propagator.propagate()
    assert sorted(propagator.results) == list(range(12))
    assert np.array_equal(propagator.masks(), mask)


class EmptyReview(CentreBox):
    """CentreBox's box on the key slice; every later episode boxes the empty corner."""

    name = "empty-review"

    def __init__(self):
        self.episodes = 0

    def act(self, episode):
        if not episode.executed_turns:
            self.episodes += 1
            if self.episodes > 1:
                return Reply(protocol.bbox_action(BBox(0, 0, 3, 3), episode.image_size).raw_text)
        return super().act(episode)


def test_a_review_that_empties_the_mask_is_not_seeded_and_writes_json(bright):
    volume, _ = make_tube()
    result = msagent.segment_volume(volume, "tube", backbone=bright, policy=EmptyReview(),
                                    review_slices=1, key_slice=8)
    review, *others = [e for e in result.episodes if e.role == "review"]
    assert not review.trajectory.final_mask.any() and review.seeded is False  # a bool, not NumPy's
    assert len(others) == 1  # not seeded: it did not count against review_slices
    again = VolumeTrajectory.from_json(result.trajectory.to_json())
    assert again.to_dict() == result.trajectory.to_dict()
