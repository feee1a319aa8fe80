"""Starting an episode from the backbone's proposal for the target's description: turn 0 is
the proposal (source and score), the agent refines it, one encode serves both, and every
way of asking for one that cannot work is refused clearly."""

import numpy as np
import pytest

import msagent
from msagent.agent.proposal import check_can_propose, proposing_backbones
from msagent.errors import InvalidInput
from msagent.testing import BrightBackbone, ProposingBackbone, make_phantom


def test_proposal_then_the_expert_refines_and_turn_zero_is_the_proposal():
    image, gt = make_phantom()
    backbone = ProposingBackbone(erode=4)
    result = msagent.segment(image, "blob", backbone=backbone, policy="expert", ground_truth=gt,
                             initial_mask="proposal")
    initial = result.trajectory.initial
    assert initial is not None and initial.source == "proposal:proposing" and initial.score == 0.9
    assert initial.dice < 1.0 and result.dice > initial.dice  # the agent improved the proposal
    assert backbone.proposals == 1 and backbone.encodes == 1  # the episode's own embedding
    assert "best of 1 candidate(s)" in result.trajectory.meta["proposal"]
    again = msagent.Trajectory.from_json(result.trajectory.to_json())
    assert again.initial.score == 0.9 and again.initial.source == "proposal:proposing"


def test_a_concept_matching_nothing_starts_from_nothing_and_says_so():
    image, gt = make_phantom()
    result = msagent.segment(image, "nothing here", backbone=ProposingBackbone(),
                             policy="expert", ground_truth=gt, initial_mask="proposal")
    assert result.trajectory.initial is None and result.turns >= 1
    assert "no candidate matched 'nothing here'" in result.trajectory.meta["proposal"]


def test_a_backbone_that_cannot_propose_is_refused_before_anything_runs():
    image, gt = make_phantom()
    backbone = BrightBackbone()
    with pytest.raises(InvalidInput, match="cannot propose a mask from the target's description"):
        msagent.segment(image, "blob", backbone=backbone, policy="expert", ground_truth=gt,
                        initial_mask="proposal")
    assert backbone.encodes == 0
    with pytest.raises(InvalidInput, match="cannot propose"):
        msagent.Agent(msagent.load_policy("expert"), backbone).run(image, "blob", gt,
                                                                   initial_mask="proposal")


class StandIns:
    @msagent.hookimpl
    def msagent_register_segmenters(self, register):
        register("proposing", ProposingBackbone, "proposes from text")
        register("bright", BrightBackbone, "does not")


def test_names_are_checked_without_loading_and_the_error_lists_those_that_can(isolated_registry):
    isolated_registry(StandIns(), load_entrypoints=False)
    assert proposing_backbones() == ["proposing"]
    check_can_propose("proposing")
    with pytest.raises(InvalidInput, match="installed backbones that can: proposing"):
        check_can_propose("bright")
    check_can_propose("not-installed")  # loading it says so, with its own hints


@pytest.mark.parametrize("text", ["", "   ", "x" * 201, "liver\x00"])
def test_bad_descriptions_are_refused_by_the_backbone_front_door(text):
    backbone = ProposingBackbone()
    embedding = backbone.encode(make_phantom()[0])
    with pytest.raises(msagent.errors.SegmenterError):
        backbone.propose(embedding, text)
    assert backbone.proposals == 0


def test_the_cli_starts_from_a_proposal(tmp_path, isolated_registry, capsys):
    from msagent.cli import main
    from msagent.io import save_png

    isolated_registry(StandIns())
    image, gt = make_phantom()
    save_png(image, tmp_path / "image.png")
    save_png(gt.astype(np.uint8) * 255, tmp_path / "gt.png")
    code = main(["segment", str(tmp_path / "image.png"), "blob", "--backbone", "proposing",
                 "--policy", "expert", "--ground-truth", str(tmp_path / "gt.png"),
                 "--initial-mask", "proposal", "--trajectory", str(tmp_path / "t.json")])
    assert code == 0
    trajectory = msagent.Trajectory.from_json((tmp_path / "t.json").read_text())
    assert trajectory.initial.source == "proposal:proposing"
