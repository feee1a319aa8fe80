"""The verl tools against the real LiteMedSAM: state across verl's per-call lifecycle,
coordinates, overlay observations, and masks identical to msagent's own agent loop."""

from __future__ import annotations

import asyncio
import json

import msagent
import numpy as np
import pytest
from msagent import protocol

from msagent_training.data import tools_kwargs
from msagent_training.episode import DICES, EPISODES, IOUS, SCORES
from msagent_training.testing import ScriptedPolicy, agent_data
from msagent_training.tools import AddBboxTool, AddPointTool, StopActionTool

CONFIG = {"type": "native", "backbone": "litemedsam", "backbone_options": {"device": "cpu"},
          "placement": "local"}


def make_tools(**overrides):
    config = {**CONFIG, **overrides}
    return {tool.name: tool for tool in (AddBboxTool(config, None), AddPointTool(config, None),
                                         StopActionTool(config, None))}


async def call(tools, name, arguments, kwargs, data):
    """One call the way verl's ToolAgentLoop._call_tool makes it: create, execute, release."""
    tool = tools[name]
    instance_id, _ = await tool.create(create_kwargs=kwargs[name]["create_kwargs"])
    try:
        return await tool.execute(instance_id, arguments, agent_data=data)
    finally:
        await tool.release(instance_id)


def run_tools(tools, case, replies, request_id):
    data = agent_data(request_id)
    kwargs = tools_kwargs(case)

    async def episode():
        results = []
        for reply in replies:
            action = protocol.parse_action(reply)
            results.append(await call(tools, action.kind, dict(action.arguments), kwargs, data))
        return results

    return asyncio.run(episode()), data


@pytest.mark.parametrize("prompt_mode", ["accumulate", "latest"])
def test_tool_masks_equal_the_core_agent(segmenter, cases, script, prompt_mode):
    case = cases[0]
    tools = make_tools(prompt_mode=prompt_mode)
    results, data = run_tools(tools, case, script, f"parity-{prompt_mode}")
    trajectory = msagent.Agent(ScriptedPolicy(script), segmenter, max_turns=5,
                               prompt_mode=prompt_mode).run(case.image, case.target,
                                                            case.ground_truth)
    executed = trajectory.executed_steps
    assert [s.action.kind for s in trajectory.steps] == [protocol.parse_action(r).kind
                                                        for r in script]
    assert len(executed) == 3
    for (response, _, info), step in zip(results[:3], executed, strict=True):
        expected = protocol.policy_image(case.image, step.mask)
        assert response.image[0].size == (512, 512)
        assert np.array_equal(np.asarray(response.image[0]), np.asarray(expected))
        assert info["iou"] == pytest.approx(step.iou, abs=0)
        assert info["dice"] == pytest.approx(step.dice, abs=0)
    # the per-step record the reward reads, mirrored into extra_fields
    assert data.extra_fields[IOUS] == [s.iou for s in executed]
    assert data.extra_fields[DICES] == [s.dice for s in executed]
    assert data.extra_fields[SCORES] == pytest.approx([s.score for s in executed])
    stop_response, _, stop_info = results[3]
    assert stop_response.image is None and stop_info == {"stopped": True, "turns": 3}
    EPISODES.pop(f"parity-{prompt_mode}")


def test_state_survives_create_execute_release(cases, script):
    case = cases[1]
    tools = make_tools()
    results, _ = run_tools(tools, case, script[:2], "lifecycle")
    state = EPISODES.get("lifecycle")
    assert state is not None and state.case_id == case.id and state.target == case.target
    assert not tools["add_bbox"]._create_kwargs and not tools["add_point"]._create_kwargs
    height, width = case.image.shape[:2]
    # 0–999 → pixel: floor(v·size/1000), both prompts kept (accumulate), previous logits carried
    assert state.prompts.box.as_tuple() == (180 * width // 1000, 150 * height // 1000,
                                            820 * width // 1000, 860 * height // 1000)
    assert [(p.x, p.y, p.positive) for p in state.prompts.points] == [
        (500 * width // 1000, 500 * height // 1000, True)]
    assert state.prediction.low_res_logits.shape == (256, 256)
    assert len(state.ious) == 2 and state.image.shape == case.image.shape
    assert np.array_equal(state.ground_truth, case.ground_truth)
    EPISODES.pop("lifecycle")


def test_episodes_do_not_share_state(cases, script):
    tools = make_tools()
    data_a, data_b = agent_data("ep-a"), agent_data("ep-b")
    kwargs_a, kwargs_b = tools_kwargs(cases[0]), tools_kwargs(cases[2])
    box = protocol.parse_action(script[0]).arguments

    async def both():
        return await asyncio.gather(call(tools, "add_bbox", dict(box), kwargs_a, data_a),
                                    call(tools, "add_bbox", dict(box), kwargs_b, data_b))

    asyncio.run(both())
    assert EPISODES.get("ep-a").case_id == cases[0].id
    assert EPISODES.get("ep-b").case_id == cases[2].id
    assert len(data_a.extra_fields[IOUS]) == len(data_b.extra_fields[IOUS]) == 1
    EPISODES.pop("ep-a"), EPISODES.pop("ep-b")


def test_invalid_arguments_leave_the_state_alone(cases):
    tools = make_tools()
    kwargs, data = tools_kwargs(cases[0]), agent_data("bad-args")

    async def go():
        return await call(tools, "add_point", {"point_2d": [1, 2, 3], "point_type": "positive"},
                          kwargs, data)

    response, reward, info = asyncio.run(go())
    assert response.image is None and "point_2d" in response.text and reward == 0.0
    assert EPISODES.get("bad-args") is None and not data.extra_fields


def test_tool_config_is_checked():
    with pytest.raises(msagent.errors.InvalidInput, match="multiple of 32"):
        AddBboxTool({**CONFIG, "policy_image_size": 500}, None)
    with pytest.raises(msagent.errors.InvalidInput, match="prompt_mode"):
        AddBboxTool({**CONFIG, "prompt_mode": "all"}, None)
    from verl.tools.schemas import OpenAIFunctionToolSchema

    wrong = OpenAIFunctionToolSchema.model_validate(protocol.TOOL_SCHEMAS[1])
    with pytest.raises(msagent.errors.InvalidInput, match="add_point"):
        AddBboxTool(CONFIG, wrong)


def test_schemas_come_from_the_protocol():
    # verl's schema model keeps a subset of JSON Schema; the model never sees it (the full
    # schemas are inside SYSTEM_PROMPT), but names, descriptions and arguments must agree
    tools = make_tools()
    for schema in protocol.TOOL_SCHEMAS:
        function = schema["function"]
        dumped = tools[function["name"]].tool_schema.model_dump(exclude_none=True)["function"]
        assert dumped["description"] == function["description"]
        assert dumped["parameters"]["required"] == function["parameters"]["required"]
        assert set(dumped["parameters"]["properties"]) == set(function["parameters"]["properties"])
        assert json.dumps(schema) in protocol.SYSTEM_PROMPT


class _Remote:
    """``actor.method.remote(...)`` for a plain object, awaitable like a Ray ObjectRef."""

    def __init__(self, method):
        self.method = method

    def remote(self, *args):
        return asyncio.to_thread(self.method, *args)


def test_shared_actor_encodes_each_image_once_and_recovers_from_eviction(cases, segmenter):
    from msagent.types import Prompts

    from msagent_training.backends import ActorClient, SegmenterActor

    actor = SegmenterActor("litemedsam", {"device": "cpu"}, cache=1)
    client = ActorClient(type("Handle", (), {name: _Remote(getattr(actor, name)) for name in
                                             ("encode", "decode")})(), False)
    box = protocol.action_to_prompt(protocol.parse_action(
        '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [100, 100, 900, 900]}}'
        '</tool_call>'), cases[0].image.shape[:2])

    async def go():
        keys = await asyncio.gather(*(client.encode(cases[0].image) for _ in range(4)))  # 4 rollouts
        await client.encode(cases[1].image)  # evicts cases[0] from the actor's table
        return keys, await client.decode(keys[0], cases[0].image, Prompts(box=box), None, False)

    keys, prediction = asyncio.run(go())
    assert len(set(keys)) == 1
    assert actor.cache_info()["misses"] == 2  # one encode per distinct image
    local = segmenter.decode(segmenter.encode(cases[0].image), Prompts(box=box), None,
                             multimask=False)
    assert np.array_equal(prediction.mask, local.mask)
    assert np.allclose(prediction.low_res_logits, local.low_res_logits)
