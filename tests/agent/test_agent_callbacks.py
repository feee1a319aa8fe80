"""Agent.run/arun(on_step=..., cancel=...): the caller sees each step as it is recorded and can
stop the episode between turns, without anything touching the caller's policy object."""

import asyncio
import threading

import numpy as np
import pytest
from my_msagent_plugin import MySegmenter

import msagent
from msagent.errors import InvalidInput
from msagent.testing import make_phantom

BOX = '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [250, 250, 700, 700]}}</tool_call>'
POS = '<tool_call>{"name": "add_point", "arguments": {"point_2d": [500, 500], "point_type": "positive"}}</tool_call>'
STOP = '<tool_call>{"name": "stop_action", "arguments": {}}</tool_call>'


class Scripted(msagent.Policy):
    def __init__(self, replies):
        self.replies, self.asked = list(replies), 0

    def act(self, episode):
        self.asked += 1
        return msagent.Reply(self.replies.pop(0))


def test_on_step_sees_every_step_in_order_and_the_policy_is_not_touched():
    image, gt = make_phantom()
    policy = Scripted([BOX, "no tool call here", POS, STOP])
    before = dict(vars(policy))
    seen = []
    trajectory = msagent.Agent(policy, MySegmenter(threshold=100)).run(
        image, "blob", gt, on_step=seen.append)
    assert [s.index for s in seen] == [s.index for s in trajectory.steps] == [0, 1, 2, 3]
    assert all(a is b for a, b in zip(seen, trajectory.steps, strict=True))
    assert seen[1].error and not seen[1].executed  # rejected replies are steps too
    assert "act" not in vars(policy) and set(vars(policy)) == set(before)


def test_cancel_before_the_first_turn_asks_nothing():
    image, _ = make_phantom()
    policy, cancel = Scripted([BOX, STOP]), threading.Event()
    cancel.set()
    trajectory = msagent.Agent(policy, MySegmenter(threshold=100)).run(image, "blob", cancel=cancel)
    assert policy.asked == 0 and trajectory.stop_reason == "cancelled" and not trajectory.steps
    assert "cancelled" in msagent.types.failure_message(trajectory)


def test_cancel_set_during_a_turn_stops_before_the_next_policy_call():
    image, _ = make_phantom()
    policy, cancel = Scripted([BOX, POS, POS, STOP]), threading.Event()
    trajectory = msagent.Agent(policy, MySegmenter(threshold=100)).run(
        image, "blob", on_step=lambda step: cancel.set(), cancel=cancel)
    assert policy.asked == 1 and trajectory.turns == 1 and trajectory.stop_reason == "cancelled"
    assert np.array_equal(trajectory.final_mask, trajectory.steps[0].mask)


def test_arun_takes_the_same_callbacks():
    image, gt = make_phantom()
    seen, cancel = [], threading.Event()

    def on_step(step):
        seen.append(step.index)
        if step.index == 1:
            cancel.set()

    trajectory = asyncio.run(msagent.Agent(Scripted([BOX, POS, POS, STOP]), MySegmenter(threshold=100))
                             .arun(image, "blob", gt, on_step=on_step, cancel=cancel))
    assert seen == [0, 1] and trajectory.turns == 2 and trajectory.stop_reason == "cancelled"


def test_callbacks_of_the_wrong_kind_are_refused_before_anything_runs():
    image, _ = make_phantom()
    policy, backbone = Scripted([BOX, STOP]), MySegmenter(threshold=100)
    agent = msagent.Agent(policy, backbone)
    with pytest.raises(InvalidInput, match="cancel must be a threading.Event"):
        agent.run(image, "blob", cancel=True)
    with pytest.raises(InvalidInput, match="on_step must be callable"):
        agent.run(image, "blob", on_step="print")
    assert policy.asked == 0


def test_an_on_step_that_raises_ends_the_run_and_the_policy_still_ends_its_episode():
    image, _ = make_phantom()
    ended = []

    class Ending(Scripted):
        def end_episode(self, episode):
            ended.append(episode.id)

    def boom(step):
        raise RuntimeError("the caller's callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        msagent.Agent(Ending([BOX, STOP]), MySegmenter(threshold=100)).run(image, "blob", on_step=boom)
    assert len(ended) == 1
