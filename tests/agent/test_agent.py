import asyncio

import numpy as np
import pytest
from my_msagent_plugin import MySegmenter

import msagent
from msagent import protocol, render
from msagent.errors import PolicyError
from msagent.types import BBox, Point

BOX = '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [250, 250, 700, 700]}}</tool_call>'
POS = '<tool_call>{"name": "add_point", "arguments": {"point_2d": [500, 500], "point_type": "positive"}}</tool_call>'
NEG = '<tool_call>{"name": "add_point", "arguments": {"point_2d": [300, 300], "point_type": "negative"}}</tool_call>'
STOP = '<tool_call>{"name": "stop_action", "arguments": {}}</tool_call>'


class Scripted(msagent.Policy):
    """Replies from a list; records what it saw."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.seen = []
        self.ended = []

    def act(self, episode):
        self.seen.append((len(episode.steps), episode.feedback, len(protocol.build_messages(episode))))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return msagent.Reply(reply, {"prompt_tokens": 3})

    def end_episode(self, episode):
        self.ended.append(episode.id)


class Recording(MySegmenter):
    def __init__(self):
        super().__init__(threshold=100)
        self.calls = []

    def decode(self, embedding, prompts, prev_logits=None, *, multimask=False):
        self.calls.append((prompts, None if prev_logits is None else prev_logits.copy()))
        return super().decode(embedding, prompts, prev_logits, multimask=multimask)


def run(replies, gt=None, **agent_kw):
    image, mask = _phantom()
    policy, seg = Scripted(replies), Recording()
    traj = msagent.Agent(policy, seg, **agent_kw).run(image, "blob", mask if gt is None else gt)
    return traj, policy, seg


def _phantom():
    from msagent.testing import make_phantom
    return make_phantom()


def test_one_episode_state_accumulates_prompts_and_feeds_back_logits():
    traj, policy, seg = run([BOX, POS, NEG, STOP])
    assert traj.stop_reason == "stop" and traj.turns == 3
    prompts = [c[0] for c in seg.calls]
    assert prompts[0].box is not None and prompts[1].box == prompts[0].box  # box context kept
    assert prompts[2].points == (Point(112, 80, True), Point(67, 48, False))
    assert seg.calls[0][1] is None and seg.calls[1][1] is not None
    assert all(s.iou is not None and s.dice is not None for s in traj.executed_steps)
    assert seg.cache_info().misses == 1
    assert policy.ended and traj.usage == {"prompt_tokens": 12}


def test_latest_prompt_mode_sends_only_the_new_prompt():
    _, _, seg = run([BOX, POS, STOP], prompt_mode="latest")
    assert seg.calls[1][0].box is None and len(seg.calls[1][0].points) == 1


def test_max_turns_counts_executed_actions():
    traj, _, _ = run([BOX, POS, NEG, POS], max_turns=2)
    assert traj.turns == 2 and traj.stop_reason == "max_turns"


def test_invalid_reply_is_retried_once_then_ends():
    traj, policy, _ = run(["no call here", BOX, "still nothing", "nope"])
    assert [s.error is not None for s in traj.steps] == [True, False, True, True]
    assert traj.stop_reason == "invalid_output" and traj.turns == 1
    assert policy.seen[1][1] is not None  # the retry carried feedback
    # the rejected reply is not shown again: same message count on the retry
    assert policy.seen[0][2] == policy.seen[1][2]


def test_stop_before_any_mask_is_retried_once():
    traj, _, _ = run([STOP, BOX, STOP])
    assert traj.steps[0].error and traj.turns == 1 and traj.stop_reason == "stop"
    traj, _, _ = run([STOP, STOP])
    assert traj.stop_reason == "stopped_without_mask" and traj.turns == 0
    assert not traj.final_mask.any()


def test_policy_failure_is_recorded_and_ends_the_episode():
    traj, _, _ = run([BOX, PolicyError("API down (HTTP 503)")])
    assert traj.stop_reason == "policy_error" and "503" in traj.steps[-1].error
    assert traj.turns == 1


def test_messages_follow_the_checkpoint_format():
    image, mask = _phantom()
    policy = Scripted([BOX, POS, STOP])
    traj = msagent.Agent(policy, Recording()).run(image, "blob", mask)
    episode = msagent.Episode("x", image, "blob", 5, steps=list(traj.steps))
    messages = protocol.build_messages(episode)
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert messages[3]["content"][1]["text"] == protocol.FOLLOW_UP_TEXT
    assert messages[1]["content"][0]["image"].size == (512, 512)


def test_async_run_gives_the_same_trajectory():
    image, mask = _phantom()
    sync = msagent.Agent(Scripted([BOX, POS, STOP]), Recording()).run(image, "blob", mask)
    asyn = asyncio.run(msagent.Agent(Scripted([BOX, POS, STOP]), Recording()).arun(image, "blob", mask))
    assert [s.iou for s in sync.steps] == [s.iou for s in asyn.steps]
    assert np.array_equal(sync.final_mask, asyn.final_mask)


def test_expert_needs_ground_truth():
    image, _ = _phantom()
    with pytest.raises(PolicyError, match="ground_truth"):
        msagent.Agent(msagent.load_policy("expert"), Recording()).run(image, "blob")


def test_box_argument_maps_to_pixels_of_non_square_image():
    _, _, seg = run([BOX, STOP])
    height, width = 160, 224
    assert seg.calls[0][0].box == BBox(int(250 * width / 1000), int(250 * height / 1000),
                                       int(700 * width / 1000), int(700 * height / 1000))


def test_policy_images_are_rendered_once_per_executed_step(monkeypatch):
    calls = []
    real = render.policy_image

    def counting(*args, **kwargs):
        calls.append(len(args) > 1 and args[1] is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "policy_image", counting)
    traj, policy, _ = run([BOX, POS, NEG, POS, STOP])  # Scripted builds the chat every turn
    assert traj.turns == 4 and len(policy.seen) == 5
    assert len(calls) == 5 and calls.count(False) == 1  # the original once, one overlay per step


def test_steps_keep_the_pixel_prompts_in_force():
    from msagent.types import BBox, Point

    for mode in ("accumulate", "latest"):
        traj, _, seg = run([BOX, POS, NEG, STOP], prompt_mode=mode)
        executed = traj.executed_steps
        assert isinstance(executed[0].prompt, BBox) and isinstance(executed[2].prompt, Point)
        assert [p for p, _ in seg.calls][1:] == [s.prompts for s in executed][1:]
        if mode == "latest":
            assert executed[2].prompts.points == (executed[2].prompt,) and executed[2].prompts.box is None
        else:
            assert executed[2].prompts.box == executed[0].prompt and len(executed[2].prompts.points) == 2
        again = msagent.Trajectory.from_json(traj.to_json())
        assert [s.prompts for s in again.steps] == [s.prompts for s in traj.steps]
