"""``sam3`` in msagent's episodes, on the reduced SAM 3 with random weights: a 2-D episode
that starts from the proposal and the expert refines (one encode), and 3-D runs — the native
propagator chosen by ``propagation="auto"``, the key slice chosen by proposal, each slice
encoded at most once per volume."""

from __future__ import annotations

import numpy as np
import pytest

import msagent
from msagent import metrics


@pytest.fixture(scope="module")
def proposing(checkpoint):
    """``sam3`` whose every query counts as a match (random weights score low)."""
    return msagent.load_backbone("sam3", checkpoint=str(checkpoint), device="cpu", threshold=0.0)


@pytest.mark.slow
def test_an_episode_starts_from_the_proposal_and_the_expert_refines_it(proposing, phantom):
    image, gt = phantom
    encodes, proposals = proposing.encodes, proposing.proposals
    result = msagent.segment(image, "bright ellipse", backbone=proposing, policy="expert",
                             ground_truth=gt, initial_mask="proposal")
    trajectory = result.trajectory
    initial = trajectory.initial
    assert initial is not None and initial.source == "proposal:sam3"
    assert initial.score is not None and 0.0 <= initial.score <= 1.0
    assert initial.mask.any() and not initial.mask.all()
    assert initial.iou == pytest.approx(metrics.iou(initial.mask, gt))
    # the expert keeps an action only when it gains: never below the proposal
    assert metrics.iou(result.mask, gt) >= initial.iou
    assert proposing.encodes - encodes == 1  # one encode serves the proposal and the episode
    assert proposing.proposals - proposals == 1
    again = msagent.Trajectory.from_json(trajectory.to_json())
    assert again.initial.source == "proposal:sam3" and again.initial.score == initial.score


@pytest.mark.slow
def test_a_concept_matching_nothing_starts_empty(checkpoint, phantom):
    image, gt = phantom
    strict = msagent.load_backbone("sam3", checkpoint=str(checkpoint), device="cpu", threshold=1.0)
    result = msagent.segment(image, "liver", backbone=strict, policy="expert", ground_truth=gt,
                             initial_mask="proposal")
    assert result.trajectory.initial is None and "no candidate matched" in result.trajectory.meta["proposal"]


def test_auto_propagation_is_sam3s_tracker_and_reads_the_runs_embeddings(segmenter, stack):
    from msagent_sam3.propagation import Sam3VideoPropagator

    from msagent.volume.embeddings import EmbeddingStore
    from msagent.volume.propagation import propagator_for

    slices, _ = stack
    store = EmbeddingStore(segmenter, slices)
    propagator = propagator_for(segmenter, slices, "auto", store=store)
    assert isinstance(propagator, Sam3VideoPropagator) and propagator.method == "native"
    assert propagator.embeddings is not None  # the run's store serves its frames
    alone = propagator_for(segmenter, slices, "native")
    assert alone.embeddings is None  # without a run: the segmenter's cache


@pytest.mark.slow
@pytest.mark.parametrize("key_rule", ["auto", "proposal"])
def test_segment_volume_end_to_end_each_slice_encoded_once(proposing, stack, key_rule):
    slices, truth = stack
    volume = np.stack([slices.gray[i] for i in range(slices.count)]).astype(np.float32)
    before = proposing.encodes
    result = msagent.segment_volume(volume, "bright tube", backbone=proposing, policy="expert",
                                    ground_truth=truth, review_slices=1, key_rule=key_rule,
                                    proposal_slices=4, window=(255.0, 127.5))
    trajectory = result.trajectory
    assert trajectory.propagation == "native" and result.mask.shape == volume.shape
    assert trajectory.key_rule == ("largest_gt_area" if key_rule == "auto" else "proposal")
    # every slice once at most, whoever needed it first (proposal, episode or the tracker)
    assert proposing.encodes - before == trajectory.counts["encodes"] <= slices.count
    key = next(e for e in trajectory.episodes if e.role == "key").trajectory
    if key_rule == "proposal":
        assert key.initial.source == "proposal:sam3"
        assert trajectory.counts["proposals"] == len(trajectory.meta["key_proposals"]) <= 4 + 2
        assert key.initial.score == trajectory.meta["key_proposals"][str(trajectory.key_slice)]
    assert 0.0 <= result.dice <= 1.0
