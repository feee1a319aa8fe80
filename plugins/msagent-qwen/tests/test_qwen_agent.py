"""Episodes end to end: the qwen policy driving LiteMedSAM through msagent.Agent."""

from __future__ import annotations

import pytest
from msagent_qwen import kv

import msagent

BOX = ('Box around the bright ellipse.\n<tool_call>\n{"name": "add_bbox", "arguments": '
       '{"bbox_2d": [300, 280, 800, 850]}}\n</tool_call>')
POINT = ('<tool_call>\n{"name": "add_point", "arguments": {"point_2d": [535, 560], '
         '"point_type": "positive"}}\n</tool_call>')
STOP = '<tool_call>\n{"name": "stop_action", "arguments": {}}\n</tool_call>'


@pytest.mark.slow
def test_random_model_episode_is_handled_by_the_protocol_rules(policies, family, litemedsam,
                                                               phantom):
    image, mask = phantom
    policy = policies[family]
    trajectory = msagent.Agent(policy, litemedsam).run(image, "bright ellipse", mask)
    assert trajectory.stop_reason in {"invalid_output", "stopped_without_mask", "stop", "max_turns"}
    assert trajectory.meta["policy"] == "qwen" and trajectory.steps
    for step in trajectory.steps:
        assert step.usage["completion_tokens"] >= 1 and step.usage["latency_s"] > 0
        assert (step.action is None) == (step.error is not None) or step.action.is_stop
    if trajectory.stop_reason == "invalid_output":  # a retry samples, and prefills nothing
        assert trajectory.steps[1].usage["sampled"] and trajectory.steps[1].usage["prompt_tokens"] == 0
    assert policy.open_episodes == 0  # end_episode released the cache


def test_scripted_episode_reuses_the_cache_every_turn(policies, litemedsam, phantom, monkeypatch):
    """The model's decode loop is made to emit a box, a point and a stop (teacher-forced
    tokens through the real cache); each later turn prefills only its delta."""
    image, mask = phantom
    policy = policies["qwen3_vl"]
    queue: list[int] = []
    for text in (BOX, POINT, STOP):
        queue += policy.tokenizer.encode(text, add_special_tokens=False) + [policy.stop_ids[-1]]
    monkeypatch.setattr(kv, "pick", lambda *a, **k: queue.pop(0))
    monkeypatch.setattr(policy, "max_new_tokens", 128)
    trajectory = msagent.Agent(policy, litemedsam).run(image, "bright ellipse", mask)
    assert [s.action.kind for s in trajectory.steps] == ["add_bbox", "add_point", "stop_action"]
    assert trajectory.stop_reason == "stop" and trajectory.turns == 2
    assert trajectory.steps[0].iou > 0.5
    first, second, third = (s.usage for s in trajectory.steps)
    assert not first["kv_reused"] and second["kv_reused"] and third["kv_reused"]
    # the same delta each turn: end of turn, user header, 16 overlay tokens, text, prompt
    assert second["prompt_tokens"] == third["prompt_tokens"] < 80
    assert trajectory.usage["prompt_tokens"] <= third["context_tokens"]
    assert policy.open_episodes == 0


@pytest.mark.slow
def test_segment_api_swaps_the_policy_by_name(tiny_checkpoints, phantom):
    image, mask = phantom
    try:  # a random tiny model rarely writes a valid call: then segment() says no mask was made
        result = msagent.segment(image, "bright ellipse", backbone="litemedsam", policy="qwen",
                                 ground_truth=mask, backbone_options={"device": "cpu"},
                                 policy_options={"model": str(tiny_checkpoints["qwen3_vl"]),
                                                 "max_new_tokens": 6, "max_pixels": 16384})
    except msagent.errors.SegmentationFailed as exc:
        trajectory = exc.trajectory
        assert trajectory.turns == 0 and trajectory.stop_reason != "stop"
    else:
        trajectory = result.trajectory
        assert result.mask.shape == mask.shape
    assert trajectory.meta["policy"] == "qwen" and trajectory.steps
