"""The gpt policy against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys

import pytest
from msagent_gpt.messages import NATIVE_SYSTEM_PROMPT
from PIL import Image

import msagent
from msagent import protocol
from msagent.errors import InvalidInput, PolicyError

BOX = ("add_bbox", '{"bbox_2d": [300, 280, 800, 850]}')
POINT = ("add_point", '{"point_2d": [535, 560], "point_type": "positive"}')
STOP = ("stop_action", "{}")
BOX_TEXT = ('Box first.\n<tool_call>\n{"name": "add_bbox", "arguments": {"bbox_2d": '
            '[300, 280, 800, 850]}}\n</tool_call>')
STOP_TEXT = '<tool_call>\n{"name": "stop_action", "arguments": {}}\n</tool_call>'


def gpt(server, **options):
    options = {"model": "fake-model", "base_url": server.url, "max_retries": 2, "timeout": 5, **options}
    return msagent.load_policy("gpt", **options)


def image_of(part) -> Image.Image:
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_native_tool_calls_drive_an_episode(server, segmenter, phantom, completion):
    server.add(completion("The ellipse is central.", BOX, prompt_tokens=1200, completion_tokens=30))
    server.add(completion(None, POINT)).add(completion(None, STOP))
    policy = gpt(server, cost_per_1k_input=0.0025, cost_per_1k_output=0.01)
    trajectory = msagent.Agent(policy, segmenter).run(phantom[0], "bright ellipse", phantom[1])
    assert [s.action.kind for s in trajectory.steps] == ["add_bbox", "add_point", "stop_action"]
    assert trajectory.stop_reason == "stop" and trajectory.executed_steps[0].iou > 0.9
    assert trajectory.steps[0].raw_text.startswith("The ellipse is central.\n<tool_call>")

    first, _ = server.requests[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["add_bbox", "add_point", "stop_action"]
    assert first["tool_choice"] == "required" and first["temperature"] == 0.0
    assert first["messages"][0] == {"role": "system", "content": NATIVE_SYSTEM_PROMPT}
    image, text = first["messages"][1]["content"]
    assert image_of(image).size == (512, 512) and text["text"] == \
        protocol.first_user_text(trajectory.target)
    # turn 2: the reply as an assistant tool call, its result, then the overlay as a user image
    third, _ = server.requests[2]
    roles = [m["role"] for m in third["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user", "assistant", "tool", "user"]
    call = third["messages"][2]
    assert call["content"] == "The ellipse is central."
    assert call["tool_calls"][0]["id"] == third["messages"][3]["tool_call_id"] == "call_0"
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == json.loads(BOX[1])
    assert third["messages"][4]["content"][1]["text"] == protocol.FOLLOW_UP_TEXT
    assert image_of(third["messages"][4]["content"][0]).size == (512, 512)

    usage = trajectory.steps[0].usage
    assert usage["prompt_tokens"] == 1200 and usage["completion_tokens"] == 30
    assert usage["cost_usd"] == pytest.approx(1.2 * 0.0025 + 0.03 * 0.01)
    assert trajectory.usage["prompt_tokens"] == 3200
    assert trajectory.usage["cost_usd"] == pytest.approx(sum(s.usage["cost_usd"] for s in trajectory.steps))


def test_prompt_mode_sends_the_checkpoints_conversation(server, segmenter, phantom, completion):
    server.add(completion(BOX_TEXT)).add(completion(STOP_TEXT))
    trajectory = msagent.Agent(gpt(server, tool_mode="prompt"), segmenter).run(phantom[0], "bright ellipse", phantom[1])
    assert trajectory.stop_reason == "stop" and trajectory.turns == 1
    second, _ = server.requests[1]
    assert "tools" not in second and second["max_tokens"] == 512
    episode = msagent.Episode("x", phantom[0], trajectory.target, 5, steps=list(trajectory.steps[:1]))
    expected = protocol.build_messages(episode)
    assert [m["role"] for m in second["messages"]] == [m["role"] for m in expected]
    assert second["messages"][0]["content"] == protocol.SYSTEM_PROMPT
    assert second["messages"][2]["content"] == BOX_TEXT  # the raw reply, as the checkpoint saw
    for sent, want in zip(second["messages"], expected):
        if isinstance(want["content"], list):
            assert sent["content"][1]["text"] == want["content"][1]["text"]
            assert image_of(sent["content"][0]).size == (512, 512)


def test_native_tool_calls_are_parsed_in_prompt_mode_too(server, segmenter, phantom, completion):
    """sglang/vLLM with a tool parser answer the in-prompt format with native tool_calls."""
    server.add(completion(None, BOX)).add(completion(None, STOP))
    trajectory = msagent.Agent(gpt(server, tool_mode="prompt"), segmenter).run(phantom[0], "bright ellipse", phantom[1])
    assert [s.action.kind for s in trajectory.steps] == ["add_bbox", "stop_action"]


def test_malformed_json_is_retried_with_sampling_on_the_same_conversation(server, segmenter, phantom, completion):
    server.add(completion(None, ("add_bbox", '{"bbox_2d": [300, 280, 800'))).add(completion(None, BOX))
    server.add(completion(None, STOP))
    trajectory = msagent.Agent(gpt(server), segmenter).run(phantom[0], "bright ellipse", phantom[1])
    assert "not valid JSON" in trajectory.steps[0].error and trajectory.steps[0].action is None
    assert [s.action.kind for s in trajectory.steps[1:]] == ["add_bbox", "stop_action"]
    (bad, _), (retry, _), (after, _) = server.requests
    assert retry["temperature"] == 0.7 and bad["temperature"] == 0.0
    assert retry["messages"] == bad["messages"]  # the rejected reply is not shown again
    assert after["temperature"] == 0.0 and len(after["messages"]) == 5


def test_429_is_retried_by_the_sdk(server, segmenter, phantom, completion):
    server.add({"error": {"message": "slow down", "type": "rate_limit"}}, status=429,
               headers={"retry-after-ms": "20"})
    server.add(completion(None, BOX)).add(completion(None, STOP))
    trajectory = msagent.Agent(gpt(server), segmenter).run(phantom[0], "bright ellipse", phantom[1])
    assert trajectory.stop_reason == "stop"
    assert [h.get("x-stainless-retry-count") for _, h in server.requests] == ["0", "1", "0"]
    assert trajectory.steps[0].usage["requests"] == 2


def test_persistent_500_ends_the_episode_with_a_clear_error(server, segmenter, phantom):
    server.default = (500, {"error": {"message": "model crashed"}}, {"retry-after-ms": "1"}, 0.0)
    policy = gpt(server, max_retries=2)
    trajectory = msagent.Agent(policy, segmenter).run(phantom[0], "bright ellipse", phantom[1])
    assert trajectory.stop_reason == "policy_error" and len(trajectory.steps) == 1
    error = trajectory.steps[0].error
    assert "HTTP 500" in error and "after 2 retries" in error and "model crashed" in error
    assert len(server.requests) == 3
    with pytest.raises(PolicyError, match="HTTP 500"):
        policy.act(msagent.Episode("e", phantom[0], "blob", 5))


def test_client_errors_are_not_retried(server, phantom):
    server.default = (400, {"error": {"message": "image too large"}}, {}, 0.0)
    with pytest.raises(PolicyError, match="HTTP 400.*image too large"):
        gpt(server).act(msagent.Episode("e", phantom[0], "blob", 5))
    assert len(server.requests) == 1


def test_timeouts_are_retried_then_reported(server, phantom, fast_backoff, completion):
    server.default = (200, completion(None, BOX), {}, 1.5)
    with pytest.raises(PolicyError, match=r"timed out \(0.3 s per request\) after 1 retries"):
        gpt(server, timeout=0.3, max_retries=1).act(msagent.Episode("e", phantom[0], "blob", 5))
    assert len(server.requests) == 2


def test_a_slow_answer_within_the_timeout_is_fine(server, phantom, completion):
    server.add(completion(None, BOX), delay=0.3)
    reply = gpt(server, timeout=5).act(msagent.Episode("e", phantom[0], "blob", 5))
    assert "add_bbox" in reply.text and reply.usage["latency_s"] >= 0.3


def test_garbage_body_is_a_policy_error(server, phantom):
    server.add("<html>bad gateway</html>")
    with pytest.raises(PolicyError, match="fake-model"):
        gpt(server, max_retries=0).act(msagent.Episode("e", phantom[0], "blob", 5))


def test_async_batch_respects_the_concurrency_limit(server, segmenter, phantom, completion):
    server.default = (200, completion(None, BOX), {}, 0.15)
    policy = gpt(server, max_concurrency=2)
    agent = msagent.Agent(policy, segmenter, max_turns=1)

    async def batch():
        return await asyncio.gather(*(agent.arun(phantom[0], "bright ellipse", phantom[1]) for _ in range(6)))

    trajectories = asyncio.run(batch())
    assert all(t.stop_reason == "max_turns" for t in trajectories)
    assert server.max_in_flight == 2 and len(server.requests) == 6
    server.requests.clear()
    assert asyncio.run(batch())[0].turns == 1  # a new event loop gets its own client


def test_configuration_from_the_environment(server, monkeypatch, phantom, completion):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("MSAGENT_GPT_MODEL", "env-model")
    server.add(completion(None, BOX))
    policy = msagent.load_policy("gpt")
    policy.act(msagent.Episode("e", phantom[0], "blob", 5))
    body, headers = server.requests[0]
    assert body["model"] == "env-model" and headers["authorization"] == "Bearer sk-test"


def test_missing_configuration_says_what_to_set(monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "MSAGENT_GPT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidInput, match="MSAGENT_GPT_MODEL"):
        msagent.load_policy("gpt")
    with pytest.raises(InvalidInput, match="OPENAI_API_KEY"):
        msagent.load_policy("gpt", model="gpt-4o")
    with pytest.raises(InvalidInput, match="tool_mode"):
        msagent.load_policy("gpt", model="m", base_url="http://127.0.0.1:9/v1", tool_mode="xml")


def test_segment_swaps_the_policy_by_name(server, segmenter, phantom, completion):
    server.add(completion(None, BOX)).add(completion(None, STOP))
    result = msagent.segment(phantom[0], "bright ellipse", backbone=segmenter, policy="gpt",
                             ground_truth=phantom[1],
                             policy_options={"model": "fake-model", "base_url": server.url})
    assert result.trajectory.meta["policy"] == "gpt" and result.iou > 0.9


def test_listing_plugins_imports_no_openai():
    code = ("import sys, msagent; assert 'gpt' in msagent.list_policies(); "
            "print([m for m in ('openai', 'torch', 'httpx') if m in sys.modules])")
    env = {**os.environ, "MSAGENT_LOAD_PLUGINS": "gpt"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_errors_name_no_credentials_of_the_endpoint(phantom):
    from msagent_gpt.policy import GPTPolicy, redact_url

    assert redact_url("http://user:SECRETPW@127.0.0.1:9/v1?key=abc") == "http://127.0.0.1:9/v1"
    policy = GPTPolicy("m", base_url="http://user:SECRETPW@127.0.0.1:9/v1", max_retries=0, timeout=2)
    episode = msagent.Episode("x", phantom[0], "ellipse", 5)
    with pytest.raises(msagent.errors.PolicyError) as caught:
        policy.act(episode)
    assert "SECRETPW" not in str(caught.value) and "127.0.0.1:9/v1" in str(caught.value)
