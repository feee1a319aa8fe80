"""compute_score reproduces msagent's MedSAMReward on recorded trajectories."""

from __future__ import annotations

import msagent
import pytest
from msagent.reward import MedSAMReward
from msagent.types import Action, Step, Trajectory

from msagent_training.episode import CALLS, IOUS
from msagent_training.reward import METRIC_KEYS, compute_score, trajectory_extra_info


def _step(index, kind, iou=None, dice=None, error=None):
    import numpy as np

    action = None if kind is None else Action(kind, {} if kind == "stop_action" else
                                              ({"bbox_2d": [1, 2, 3, 4]} if kind == "add_bbox" else
                                               {"point_2d": [5, 6], "point_type": "positive"}))
    executed = kind not in (None, "stop_action") and error is None
    return Step(index, "reply", action, error=error,
                mask=np.zeros((4, 4), bool) if executed else None, score=0.5 if executed else None,
                iou=iou, dice=dice)


CRAFTED = [
    # improves, regresses, stops: penalty and bonus both active
    [("add_bbox", .5, .6), ("add_point", .8, .85), ("add_point", .7, .75), ("stop_action",)],
    # one call, stopped: no penalty/bonus
    [("add_bbox", .9, .95), ("stop_action",)],
    # never stops (turn limit)
    [("add_bbox", .4, .5), ("add_point", .45, .55)],
    # an invalid reply, then a call: the invalid one is not a call
    [(None,), ("add_bbox", .6, .7), ("stop_action",)],
    # stop before any mask (rejected), then box and stop
    [("stop_action", None, None, "stop_action before any mask exists"), ("add_bbox", .3, .4),
     ("stop_action",)],
    # nothing valid at all
    [(None,), (None,)],
]


def crafted(spec):
    steps = [_step(i, *item) for i, item in enumerate(spec)]
    return Trajectory(target="t", image_size=(4, 4), steps=tuple(steps))


@pytest.mark.parametrize("spec", CRAFTED)
def test_parity_on_crafted_trajectories(spec):
    trajectory = crafted(spec)
    expected = MedSAMReward().score(trajectory).as_dict()
    got = compute_score("msagent", "", "case", trajectory_extra_info(trajectory))
    assert list(got) == list(METRIC_KEYS)
    assert got == pytest.approx({k: float(expected[k]) for k in METRIC_KEYS}, abs=1e-12)


def test_parity_on_expert_trajectories(expert_runs):
    for _, trajectory in expert_runs:
        expected = MedSAMReward().score(trajectory)
        got = compute_score("msagent", "", trajectory.case_id, trajectory_extra_info(trajectory))
        assert got["score"] == pytest.approx(expected.score, abs=1e-12)
        assert got["turns"] == trajectory.turns >= 1


def test_weights_come_from_reward_kwargs():
    trajectory = crafted(CRAFTED[0])
    weights = {"format_weight": 0.5, "quality_weight": 0.5, "step_cost": 0.05}
    expected = MedSAMReward(**weights).score(trajectory).score
    got = compute_score("msagent", "", "c", trajectory_extra_info(trajectory),
                        reward_router_address=None, **weights)
    assert got["score"] == pytest.approx(expected)


def test_calls_are_parsed_from_text_without_the_loop_record():
    trajectory = crafted(CRAFTED[0])
    info = trajectory_extra_info(trajectory)
    text = "".join(msagent.protocol.format_action(s.action) + "\nuser turn text\n"
                   for s in trajectory.steps)
    del info[CALLS]
    assert compute_score("msagent", text, "c", info) == compute_score(
        "msagent", "", "c", trajectory_extra_info(trajectory))


def test_missing_ground_truth_is_an_error():
    info = trajectory_extra_info(crafted(CRAFTED[1]))
    info[IOUS] = []
    with pytest.raises(msagent.errors.InvalidInput, match="ground_truth"):
        compute_score("msagent", "", "c", info)
