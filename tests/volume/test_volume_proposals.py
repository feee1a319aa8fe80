"""The text-based key-slice rule (``key_rule="proposal"``): the slice whose proposal for the
target scores best, from a bounded search; recorded on the VolumeTrajectory; the key episode
starts from that slice's proposal; each slice encoded at most once per volume."""

import math

import numpy as np
import pytest

import msagent
from msagent.agent.proposal import Proposal
from msagent.errors import InvalidInput
from msagent.testing import BrightBackbone, ProposingBackbone, make_tube
from msagent.volume.agent import VolumeAgent, proposal_search
from msagent.volume.trajectory import VolumeTrajectory


def peaked(count, peak, calls, matched=lambda i: True):
    def at(index):
        calls.append(index)
        if not matched(index):
            return Proposal(None, None, 0, "proposal:test")
        return Proposal(np.ones((2, 2), bool), 1 - abs(index - peak) / count, 1, "proposal:test")
    return at


@pytest.mark.parametrize("count", [200, 57, 16, 5])
def test_the_search_finds_a_single_peak_within_its_budget(count):
    first = 8
    bound = min(first, count) + 2 * max(0, math.ceil(math.log2(count / min(first, count))))
    for peak in range(count):
        calls = []
        best, tried = proposal_search(peaked(count, peak, calls), count, first)
        assert best == peak and len(calls) == len(set(calls)) == len(tried) <= bound
    assert bound == 18 if count == 200 else True  # 8 evenly spaced + 2 per halving step


def test_nothing_matched_ends_after_the_first_round():
    calls = []
    best, tried = proposal_search(peaked(100, 50, calls, matched=lambda i: False), 100, 8)
    assert best is None and len(calls) == 8 and all(p.mask is None for p in tried.values())


def test_ties_go_to_the_larger_mask_then_the_middle():
    def at(index):
        return Proposal(np.ones((2, index == 3 and 3 or 2), bool), 0.9, 1, "p")
    assert proposal_search(at, 8, 8)[0] == 3
    assert proposal_search(lambda i: Proposal(np.ones((2, 2), bool), 0.9, 1, "p"), 9, 9)[0] == 4


def tube(blank=3):
    volume, mask = make_tube()
    volume[:blank], mask[:blank] = 20.0, False  # no target (nothing to propose) at the start
    return volume, mask


def test_segment_volume_picks_the_key_slice_by_proposal_and_starts_from_it():
    volume, mask = tube()
    backbone = ProposingBackbone(erode=1)
    result = msagent.segment_volume(volume, "tube", backbone=backbone, policy="expert",
                                    ground_truth=mask, review_slices=2, key_rule="proposal",
                                    proposal_slices=4)
    trajectory = result.trajectory
    assert trajectory.key_rule == "proposal" and result.dice > 0.9
    searched = {int(k): v for k, v in trajectory.meta["key_proposals"].items()}
    assert trajectory.counts["proposals"] == len(searched) == backbone.proposals <= 4 + 2 * 2
    assert searched[2] is None  # a slice without target (0-2): nothing matched
    # equal scores: the larger proposal, i.e. the widest part of the tube
    areas = {i: mask[i].sum() for i, score in searched.items() if score is not None}
    assert trajectory.key_slice == max(areas, key=lambda i: (areas[i], -abs(i - 7.5)))
    key = next(e for e in trajectory.episodes if e.role == "key").trajectory
    assert key.initial.source == "proposal:proposing" and key.initial.score == 0.9
    assert "best of 1 candidate(s)" in key.meta["proposal"]
    # each slice encoded at most once per volume: proposals, episodes, propagation share them
    assert len(backbone.encoded) == len(set(backbone.encoded)) == trajectory.counts["encodes"] <= 16
    again = VolumeTrajectory.from_json(trajectory.to_json())
    assert again.key_rule == "proposal" and again.meta["key_proposals"] == trajectory.meta["key_proposals"]


def test_no_slice_matched_falls_back_to_the_rule_without_proposals():
    volume, mask = tube(blank=0)
    result = msagent.segment_volume(volume, "nothing like it", backbone=ProposingBackbone(),
                                    policy="expert", ground_truth=mask, review_slices=0,
                                    key_rule="proposal")
    trajectory = result.trajectory
    assert trajectory.key_rule == "largest_gt_area"  # the expert's rule
    assert set(trajectory.meta["key_proposals"].values()) == {None}
    assert trajectory.counts["proposals"] == 8
    key = next(e for e in trajectory.episodes if e.role == "key").trajectory
    assert key.initial is None


def test_refused_before_any_encode():
    volume, mask = tube()
    backbone = BrightBackbone()
    with pytest.raises(InvalidInput, match="cannot propose a mask from the target's description"):
        msagent.segment_volume(volume, "tube", backbone=backbone, policy="expert",
                               ground_truth=mask, key_rule="proposal")
    assert backbone.encodes == 0
    for options in ({"key_rule": "best"}, {"key_rule": "proposal", "proposal_slices": 0},
                    {"proposal_slices": True}):
        with pytest.raises(InvalidInput, match="key_rule|proposal_slices"):
            msagent.segment_volume(volume, "tube", backbone=backbone, policy="expert",
                                   ground_truth=mask, **options)
    with pytest.raises(InvalidInput, match="cannot propose"):
        VolumeAgent(msagent.load_policy("expert"), backbone, key_rule="proposal")
