import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from msagent.types import Action, BBox, Point, Prompts, Step, Trajectory, decode_mask, encode_mask


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_mask_rle_round_trip_is_lossless(mask):
    assert np.array_equal(decode_mask(encode_mask(mask)), mask)


def test_bbox_rejects_unordered_corners_and_orders_on_request():
    with pytest.raises(ValueError, match="out of order"):
        BBox(10, 0, 5, 5)
    assert BBox.ordered(10, 9, 5, 2) == BBox(5, 2, 10, 9)


def test_prompts_accumulate_and_latest_box_wins():
    prompts = Prompts().add(BBox(0, 0, 9, 9)).add(Point(3, 3)).add(BBox(1, 1, 8, 8))
    assert prompts.box == BBox(1, 1, 8, 8)
    assert prompts.points == (Point(3, 3),)
    assert Prompts().latest_only(Point(1, 2, False)) == Prompts(points=(Point(1, 2, False),))


def test_action_kind_is_validated():
    with pytest.raises(ValueError):
        Action("add_circle", {})


def test_trajectory_json_round_trip_keeps_everything():
    mask = np.zeros((6, 7), bool)
    mask[1:4, 2:6] = True
    steps = (
        Step(0, "junk", error="no <tool_call>"),
        Step(1, "box", Action("add_bbox", {"bbox_2d": [1, 2, 3, 4]}, "box"), mask=mask, score=0.9,
             iou=0.5, dice=0.66, usage={"prompt_tokens": 10}),
        Step(2, "stop", Action("stop_action", {}, "stop")),
    )
    traj = Trajectory("liver", (6, 7), steps, "stop", "case-1", "abc", {"backbone": "x"})
    back = Trajectory.from_json(traj.to_json())
    assert back.to_dict() == traj.to_dict()
    assert np.array_equal(back.final_mask, mask)
    assert back.turns == 1 and back.usage == {"prompt_tokens": 10}
    assert back.steps[1].action == steps[1].action
