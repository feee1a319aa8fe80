import numpy as np
import pytest

import msagent
from msagent import metrics
from msagent.policies.expert import jitter_bbox, mask_bbox
from msagent.types import BBox


@pytest.mark.slow
def test_expert_on_litemedsam_improves_every_accepted_step(litemedsam, phantom):
    image, gt = phantom
    expert = msagent.load_policy("expert", tau=0.01, target_iou=0.99)
    traj = msagent.Agent(expert, litemedsam).run(image, "bright ellipse", gt)
    ious = [s.iou for s in traj.executed_steps]
    assert traj.executed_steps[0].action.kind == "add_bbox"
    assert ious[0] > 0.5
    assert all(b - a >= 0.01 for a, b in zip(ious, ious[1:]))
    assert traj.steps[-1].action.kind == "stop_action" or traj.stop_reason == "max_turns"


@pytest.mark.slow
def test_expert_refines_an_mri_slice(litemedsam, mni_slice):
    image, gt = mni_slice
    result = msagent.segment(image, "brain", backbone=litemedsam, policy="expert", ground_truth=gt)
    ious = [s.iou for s in result.trajectory.executed_steps]
    assert len(ious) >= 2 and ious[-1] > ious[0] + 0.1  # the clicks fix what the box missed
    assert result.iou == metrics.iou(result.mask, gt)


@pytest.mark.slow
def test_expert_is_deterministic_for_a_seed(litemedsam, phantom):
    image, gt = phantom
    runs = [msagent.Agent(msagent.load_policy("expert", box_jitter=0.1, seed=3), litemedsam)
            .run(image, "ellipse", gt) for _ in range(2)]
    assert [s.raw_text for s in runs[0].steps] == [s.raw_text for s in runs[1].steps]


@pytest.mark.slow
def test_sequential_click_expert_starts_with_a_positive_click(litemedsam, phantom):
    image, gt = phantom
    traj = msagent.Agent(msagent.load_policy("expert", first="click"), litemedsam).run(image, "x", gt)
    first = traj.steps[0].action
    assert first.kind == "add_point" and first.arguments["point_type"] == "positive"


@pytest.mark.slow
def test_oracle_box_is_one_tight_box_then_stop(litemedsam, phantom):
    image, gt = phantom
    traj = msagent.Agent(msagent.load_policy("oracle-box"), litemedsam).run(image, "x", gt)
    assert [s.action.kind for s in traj.steps] == ["add_bbox", "stop_action"]
    assert msagent.protocol.action_to_prompt(traj.steps[0].action, gt.shape) == mask_bbox(gt)


def test_jitter_stays_inside_the_image_and_near_the_box():
    rng = np.random.default_rng(0)
    box = BBox(10, 20, 50, 60)
    for _ in range(50):
        j = jitter_bbox(box, 0.1, (64, 52), rng)
        assert 0 <= j.x1 <= j.x2 <= 51 and 0 <= j.y1 <= j.y2 <= 63
        assert abs(j.x1 - 10) <= 5 and abs(j.y2 - 60) <= 5
