"""The 3-D protocols (msagent.evaluation.volume_protocols) on msagent.testing.BrightBackbone,
the stand-in backbone whose results are exact."""

from __future__ import annotations

from msagent import clicker, metrics
from msagent.evaluation.volume_protocols import run_cvpr_3d, run_volume_agent
from msagent.policies.expert import ExpertPolicy
from msagent.testing import BrightBackbone, make_tube
from msagent.volume.agent import VolumeAgent
from msagent.volume.stack import build_stack


def test_cvpr_3d_box_then_propagation_is_perfect_on_a_clean_tube():
    volume, mask = make_tube()
    mask[:2] = False  # the target starts at slice 2: the box's slice range stops propagation
    stack = build_stack(volume, spacing=(3.0, 0.8, 0.8)).slices
    outcome = run_cvpr_3d(BrightBackbone(), stack, mask, propagation="generic")
    assert outcome.curves["dice"] == [1.0] * 6 and outcome.curves["nsd"] == [1.0] * 6
    assert outcome.values["dsc_auc"] == 4.0 and outcome.values["nsd_auc"] == 4.0
    assert outcome.values["key_slice"] == clicker.cvpr_initial_box_3d(mask).z_mid
    assert not outcome.mask[:2].any() and outcome.turns == 1
    assert outcome.values["count_encodes"] == 14  # slices 2..15, each once


def test_cvpr_3d_clicks_go_where_the_3d_error_is_and_help():
    volume, mask = make_tube(shift_at=11, shift=40)  # propagation from z_mid loses the jump
    stack = build_stack(volume).slices
    bright = BrightBackbone()
    outcome = run_cvpr_3d(bright, stack, mask, propagation="generic")
    dice = outcome.curves["dice"]
    assert dice[0] < 0.8 and dice[-1] > dice[0]
    assert outcome.turns == 6  # the box and 5 clicks
    # the first click is the challenge's: the centre of the largest 3-D error component
    box = clicker.cvpr_initial_box_3d(mask)
    assert 11 <= clicker.cvpr_click_3d(mask, _box_step(volume, mask, box)).z <= 15
    assert outcome.values["dsc_auc"] == metrics.curve_auc(dice[-5:], normalize=False)
    assert len(bright.encoded) == len(set(bright.encoded))


def _box_step(volume, mask, box):
    """Step 0 of the protocol (the box's slice, propagated), to predict its first click."""
    outcome = run_cvpr_3d(BrightBackbone(), build_stack(volume).slices, mask, clicks=0,
                          propagation="generic")
    return outcome.mask


def test_volume_agent_protocol_scores_in_3d():
    volume, mask = make_tube()
    stack = build_stack(volume, spacing=(2.0, 1.0, 1.0)).slices
    agent = VolumeAgent(ExpertPolicy(), BrightBackbone(), review_slices=0)
    outcome = run_volume_agent(agent, stack, "tube", mask, case_id="tube-1")
    assert outcome.values["dice"] == 1.0 and outcome.values["nsd"] == 1.0
    assert outcome.trajectory.case_id == "tube-1" and outcome.mask.shape == mask.shape
