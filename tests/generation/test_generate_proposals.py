"""The hybrid generator's refine strategy from proposals (``refine_from="proposal"``): expert
trajectories that refine the backbone's proposal (turn 0 the proposal, its source and score),
part of the job's identity; refused for a backbone that cannot propose, before the job."""

import json

import numpy as np
import pytest

import msagent
from msagent.datasets import write_folder
from msagent.errors import InvalidInput
from msagent.generation import HybridGenerator, generate, read_trajectories
from msagent.testing import BrightBackbone, ProposingBackbone, make_phantom
from msagent.types import Case

PROPOSALS = {"refine_ratio": 1.0, "refine_from": "proposal", "max_actions": 2}


def case(target="blob", case_id="p0"):
    image, gt = make_phantom(96, 112, center=(44, 56), radii=(22, 30))
    return Case(case_id, image, target, gt)


def test_refine_episodes_start_from_the_proposal_and_the_expert_refines_it():
    backbone = ProposingBackbone(erode=4)
    generator = HybridGenerator(**PROPOSALS)
    attempt = next(generator.attempt(case(), backbone))
    trajectory = attempt.trajectory
    assert attempt.kept and trajectory.meta["strategy"] == "refine"
    initial = trajectory.initial
    assert initial.source == "proposal:proposing" and initial.score == 0.9
    assert msagent.metrics.iou(trajectory.final_mask, case().ground_truth) > initial.iou
    assert backbone.encodes == 1 and backbone.proposals == 1  # the episode's own embedding
    again = next(HybridGenerator(**PROPOSALS).attempt(case(), ProposingBackbone(erode=4)))
    assert again.trajectory.to_json() == trajectory.to_json()  # deterministic


def test_nothing_matched_runs_box_to_point_and_says_so():
    trajectory = next(HybridGenerator(**PROPOSALS).attempt(case("nothing"), ProposingBackbone())).trajectory
    assert trajectory.initial is None and trajectory.executed_steps
    assert trajectory.meta["strategy"] == "box" and trajectory.meta["requested_strategy"] == "refine"
    assert "no candidate matched" in trajectory.meta["proposal"]


def test_the_options_are_part_of_the_identity_and_checked():
    proposals = HybridGenerator(**PROPOSALS).options()
    assert proposals["refine_from"] == "proposal" and "refine_kinds" not in proposals
    degrading = HybridGenerator(refine_ratio=0.5).options()
    assert "refine_from" not in degrading and "refine_kinds" in degrading  # older sets resume
    assert "refine_from" not in HybridGenerator().options()
    with pytest.raises(InvalidInput, match="set refine_ratio too"):
        HybridGenerator(refine_from="proposal")
    with pytest.raises(InvalidInput, match="refine_from"):
        HybridGenerator(refine_ratio=1.0, refine_from="nnunet")


@pytest.fixture
def folder(tmp_path):
    rows = []
    for i in range(2):
        image, mask = make_phantom(96, 112, center=(44, 56), radii=(22, 30 - 2 * i), seed=i)
        msagent.io.save_png(image, tmp_path / "data" / f"p{i}.png")
        msagent.io.save_mask_png(mask, tmp_path / "data" / f"m{i}.png")
        rows.append({"image": f"p{i}.png", "mask": f"m{i}.png", "target": "blob"})
    write_folder(tmp_path / "data", rows)
    return tmp_path / "data"


def test_a_job_of_proposal_refinements_and_its_manifest(folder, tmp_path):
    out = tmp_path / "set"
    summary = generate(folder, out, backbone=ProposingBackbone(erode=4),
                       generator_options=PROPOSALS, progress=False, overlays=False)
    assert summary.trajectories == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator_options"]["refine_from"] == "proposal"
    for record in read_trajectories(out):
        assert record.trajectory.initial.source == "proposal:proposing"
    with pytest.raises(InvalidInput, match="differs in generator_options"):
        generate(folder, out, backbone=ProposingBackbone(erode=4),
                 generator_options={**PROPOSALS, "refine_from": "degrade"}, progress=False,
                 overlays=False)


def test_a_backbone_that_cannot_propose_is_refused_before_the_job(folder, tmp_path):
    backbone = BrightBackbone()
    with pytest.raises(InvalidInput, match="cannot propose a mask from the target's description"):
        generate(folder, tmp_path / "set", backbone=backbone, generator_options=PROPOSALS,
                 progress=False)
    assert backbone.encodes == 0 and not (tmp_path / "set").exists()
    np.testing.assert_equal(HybridGenerator(refine_ratio=1.0).check_backbone(backbone), None)
