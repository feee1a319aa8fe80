"""``msagent`` agent loop: verl's ToolAgentLoop, presenting observations the checkpoint's way.

The one documented form (the released MedSAM-Agent checkpoint's, and
:func:`msagent.protocol.build_messages`'s, so a model trained here runs in msagent's inference
unchanged):

- system = :data:`msagent.protocol.SYSTEM_PROMPT` (tool schemas inside the text; nothing is
  passed as the chat template's ``tools=``);
- user = [image, ``first_user_text(target)``] (from the dataset row);
- per turn: the assistant's text (generated tokens, loss on), then after every executed
  ``add_bbox``/``add_point`` a USER message [overlay, :data:`FOLLOW_UP_TEXT`] (context tokens,
  no loss). The tool's own text never reaches the model. ``stop_action`` ends the episode.

Differences from the base ToolAgentLoop (otherwise unchanged: continuous-token merging,
turn/length limits, verl's tool lifecycle): replies are parsed by
:func:`msagent.protocol.parse_action` (first call only, legacy names and unquoted keys
tolerated), the observation is a user message instead of a tool message, the episode ends on
``stop_action`` or a failed call (no retries in RL), and each turn's call kind is recorded in
``extra_fields["msagent_calls"]`` for the reward. Register it with a YAML list in
``actor_rollout_ref.rollout.agent.agent_loop_config_path`` (configs/agent_loop.yaml).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import uuid4

from msagent import protocol
from msagent.errors import PolicyOutputError
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.tool_agent_loop import AgentData, AgentState, ToolAgentLoop
from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.utils.ray_utils import get_event_loop

from .episode import CALLS, EPISODES, call_kind, record

log = logging.getLogger(__name__)
STOP = "stop_action"


@ToolParser.register("msagent")
class ProtocolToolParser(ToolParser):
    """verl ToolParser backed by :func:`msagent.protocol.parse_action` (at most one call)."""

    async def extract_tool_calls(self, responses_ids: list[int], tools=None
                                 ) -> tuple[str, list[FunctionCall]]:
        text = await get_event_loop().run_in_executor(
            None, lambda: self.tokenizer.decode(responses_ids, skip_special_tokens=True))
        try:
            action = protocol.parse_action(text)
        except PolicyOutputError as exc:
            log.debug("no valid tool call: %s", exc)
            return text, []
        content = text.split("<tool_call>", 1)[0].strip()
        return content, [FunctionCall(name=action.kind, arguments=json.dumps(dict(action.arguments)))]


class MSAgentLoop(ToolAgentLoop):
    """ToolAgentLoop with the checkpoint's conversation form (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool_parser = ProtocolToolParser(self.tokenizer)
        self.tool_parser_name = "msagent"
        self.tool_schemas = []  # the schemas are part of SYSTEM_PROMPT, never the template's tools=
        self.episode_key: str | None = None

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        try:
            output = await super().run(sampling_params, **kwargs)
        finally:
            if self.episode_key is not None:
                EPISODES.pop(self.episode_key)
        record(output.extra_fields)
        return output

    async def _handle_pending_state(self, agent_data: AgentData, sampling_params: dict[str, Any]
                                    ) -> AgentState:
        # The episode store's key, one per trajectory and our own: verl's request id is not
        # unique (with rollout.full_determinism every trajectory is "det-0").
        self.episode_key = agent_data.msagent_episode = uuid4().hex
        return await super()._handle_pending_state(agent_data, sampling_params)

    async def _handle_generating_state(self, agent_data: AgentData, sampling_params: dict[str, Any],
                                       ignore_termination: bool = False) -> AgentState:
        state = await super()._handle_generating_state(agent_data, sampling_params,
                                                       ignore_termination)
        if state == AgentState.PROCESSING_TOOLS:
            kind = agent_data.tool_calls[0].name
        else:  # no call, or a turn/length limit hit before parsing: still record what was said
            kind = call_kind(self.tokenizer.decode(agent_data.response_ids, skip_special_tokens=True))
        record(agent_data.extra_fields)[CALLS].append(kind)
        return state

    async def _handle_processing_tools_state(self, agent_data: AgentData) -> AgentState:
        call = agent_data.tool_calls[0]
        previous = list(agent_data.messages)
        response, reward, _ = await self._call_tool(call, agent_data.tools_kwargs, agent_data)
        if reward is not None:
            agent_data.tool_rewards.append(reward)
        if call.name == STOP:
            return AgentState.TERMINATED
        if not response.image:
            log.warning("%s failed, ending the episode: %s", call.name, response.text)
            return AgentState.TERMINATED
        overlay = response.image[0]
        self._assert_mm_supported(True)
        agent_data.messages.append(protocol.user_message(overlay, protocol.FOLLOW_UP_TEXT))
        merge, response_mask, logprobs = await self.ct_merge_context_msg(
            previous, agent_data.messages, agent_data.prompt_ids, agent_data.response_mask,
            agent_data.response_logprobs or None, tools=None)
        if len(response_mask) >= self.response_length:
            return AgentState.TERMINATED
        agent_data.prompt_ids = merge.token_ids
        agent_data.response_mask = response_mask
        if agent_data.response_logprobs:
            agent_data.response_logprobs = logprobs or []
        if agent_data.image_data is None:
            agent_data.image_data = []
        agent_data.image_data.append(overlay)
        agent_data.user_turns += 1
        return AgentState.GENERATING
