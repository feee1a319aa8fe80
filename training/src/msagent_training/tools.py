"""verl tools ``add_bbox``, ``add_point`` and ``stop_action`` on msagent's protocol and segmenters.

The same code path as inference (:class:`msagent.Agent`): arguments are validated by
:func:`msagent.protocol.parse_action`, mapped to pixels by
:func:`msagent.protocol.action_to_prompt` (v → floor(v·size/1000), clamped), accumulated
(or latest-only) exactly as the agent does, decoded with the previous turn's 256×256 logits,
and the observation is :func:`msagent.render.policy_image` — the checkpoint's overlay at
``policy_image_size`` (512, a multiple of 32, so SFT and RL count the same image tokens).

Tool YAML ``config`` keys (beside verl's ``type: native``): ``backbone``,
``backbone_options``, ``placement`` (``local`` | ``ray_actor``), ``actor_options``,
``actor_cache`` (see :mod:`msagent_training.backends`), ``prompt_mode`` (``accumulate`` |
``latest``, as :class:`msagent.Agent`), ``multimask`` (null: the backbone's default),
``policy_image_size``.

``create_kwargs`` (from the dataset's ``extra_info.tools_kwargs``): ``case_id``, ``target``
(the text, for backbones that accept it), ``image``
(PNG bytes of the original image, a path or an array) and ``ground_truth`` (PNG bytes of the
mask, nonzero = foreground; optional, needed for the reward's IoU/Dice).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import uuid4

from msagent import metrics, protocol
from msagent.agent import episode
from msagent.agent.episode import PROMPT_MODES
from msagent.backbones.segmenter import Embedding
from msagent.errors import InvalidInput, PolicyOutputError
from msagent.types import Action
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from .backends import BackendConfig, get_client
from .episode import DICES, EPISODES, IOUS, SCORES, ToolEpisode, decode_image, decode_mask, record

log = logging.getLogger(__name__)
_SCHEMAS = {schema["function"]["name"]: schema for schema in protocol.TOOL_SCHEMAS}


def episode_id(agent_data: Any, instance_id: str, kwargs: dict) -> str:
    """The trajectory key: the ``msagent_episode`` our agent loop puts on verl's AgentData (one
    per trajectory), else ``agent_data.request_id`` (another loop; not unique under
    ``full_determinism``), else ``request_id=``/the instance id."""
    if agent_data is not None:
        return getattr(agent_data, "msagent_episode", None) or agent_data.request_id
    return kwargs.get("request_id") or instance_id


class MSAgentTool(BaseTool):
    """Shared lifecycle: the per-trajectory state is looked up (or built from create_kwargs)
    on every ``execute``; ``create``/``release`` only track the call's create_kwargs."""

    tool_name = ""

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None):
        schema = tool_schema or OpenAIFunctionToolSchema.model_validate(_SCHEMAS[self.tool_name])
        super().__init__(config, schema)
        if self.name != self.tool_name:
            raise InvalidInput(f"{type(self).__name__} implements {self.tool_name!r} but its "
                               f"tool_schema names {self.name!r}; fix function.name in the YAML")
        self.backend = BackendConfig.from_tool_config(config)
        self.prompt_mode = config.get("prompt_mode", "accumulate")
        if self.prompt_mode not in PROMPT_MODES:
            raise InvalidInput(f"prompt_mode must be one of {PROMPT_MODES}, got {self.prompt_mode!r}")
        self.multimask = config.get("multimask")
        self.image_size = int(config.get("policy_image_size", protocol.POLICY_IMAGE_SIZE))
        if self.image_size <= 0 or self.image_size % 32:
            raise InvalidInput(f"policy_image_size must be a positive multiple of 32 (Qwen-VL's "
                               f"patch × merge), got {self.image_size}")
        self._create_kwargs: dict[str, dict] = {}

    async def create(self, instance_id: str | None = None, **kwargs) -> tuple[str, ToolResponse]:
        instance_id = instance_id or uuid4().hex
        self._create_kwargs[instance_id] = dict(kwargs.get("create_kwargs") or {})
        return instance_id, ToolResponse()

    async def release(self, instance_id: str, **kwargs) -> None:
        self._create_kwargs.pop(instance_id, None)

    async def episode(self, instance_id: str, key: str) -> ToolEpisode:
        """The trajectory's state, built from this call's create_kwargs on its first add_* call."""
        state = EPISODES.get(key)
        if state is not None:
            return state
        create_kwargs = self._create_kwargs.get(instance_id, {})
        if create_kwargs.get("image") is None:
            raise InvalidInput(f"{self.name}: create_kwargs has no 'image'; build the dataset with "
                               "`python -m msagent_training.data rl ...` (it fills tools_kwargs)")
        return EPISODES.put(key, ToolEpisode(
            case_id=str(create_kwargs.get("case_id") or ""),
            target=str(create_kwargs.get("target") or ""),
            image=decode_image(create_kwargs["image"]),
            ground_truth=decode_mask(create_kwargs.get("ground_truth"))))


class SegmentingTool(MSAgentTool):
    """``add_bbox`` / ``add_point``: decode on the episode state, answer with the overlay."""

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs
                      ) -> tuple[ToolResponse, float, dict]:
        agent_data = kwargs.get("agent_data")
        try:  # the inference parser's rules; malformed arguments touch no episode state
            action = parse_call(self.name, parameters)
        except PolicyOutputError as exc:
            return ToolResponse(text=f"Error: {exc}"), 0.0, {"error": str(exc)}
        state = await self.episode(instance_id, episode_id(agent_data, instance_id, kwargs))
        try:
            protocol.check_prompt(action, state.image_size)  # a box of zero pixel width/height
        except PolicyOutputError as exc:
            return ToolResponse(text=f"Error: {exc}"), 0.0, {"error": str(exc)}
        async with state.lock:
            result = await self._step(state, action)
        if agent_data is not None:
            mirror(agent_data.extra_fields, state)
        return result

    async def _step(self, state: ToolEpisode, action: Action) -> tuple[ToolResponse, float, dict]:
        client = await get_client(self.backend)
        if state.handle is None:  # the episode's first add_* call: encode once
            state.handle = await client.encode(state.image)
            state.core = episode.start(Embedding(state.handle, state.image_size, ""),
                                       prompt_mode=self.prompt_mode)
        prompt = protocol.action_to_prompt(action, state.image_size)
        request = state.core.request(prompt)  # msagent's one episode rule
        multimask = client.multimask_default if self.multimask is None else bool(self.multimask)
        prediction = await client.decode(state.handle, state.image, request.prompts,
                                         request.prev_logits, multimask, state.target)
        state.core = state.core.after(prompt, prediction)
        state.scores.append(float(prediction.score))
        info: dict[str, Any] = {"score": float(prediction.score), "turn": len(state.scores)}
        if state.ground_truth is not None:
            state.ious.append(metrics.iou(prediction.mask, state.ground_truth))
            state.dices.append(metrics.dice(prediction.mask, state.ground_truth))
            info.update(iou=state.ious[-1], dice=state.dices[-1])
        overlay = protocol.policy_image(state.image, prediction.mask, self.image_size)
        return ToolResponse(image=[overlay], text=f"{self.name}: mask updated (turn "
                                                  f"{len(state.scores)})"), 0.0, info


class AddBboxTool(SegmentingTool):
    tool_name = "add_bbox"


class AddPointTool(SegmentingTool):
    tool_name = "add_point"


class StopActionTool(MSAgentTool):
    """``stop_action``: changes nothing; the agent loop ends the episode after it."""

    tool_name = "stop_action"

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs
                      ) -> tuple[ToolResponse, float, dict]:
        agent_data = kwargs.get("agent_data")
        state = EPISODES.get(episode_id(agent_data, instance_id, kwargs))
        turns = 0 if state is None else len(state.scores)
        text = "stopped without a mask" if turns == 0 else f"stopped after {turns} actions"
        return ToolResponse(text=text), 0.0, {"stopped": True, "turns": turns}


def parse_call(name: str, parameters: Any, image_size: tuple[int, int] | None = None) -> Action:
    """Validate a call's arguments with the inference parser's rules (same errors)."""
    action = protocol.validate_call(name, parameters, image_size)
    if action.kind != name:
        raise PolicyOutputError(f"{name} cannot execute a {action.kind} call")
    return action


def mirror(extra_fields: dict[str, Any], state: ToolEpisode) -> None:
    """Copy the per-step metrics the reward needs into ``agent_data.extra_fields``."""
    record(extra_fields)
    extra_fields[IOUS] = list(state.ious)
    extra_fields[DICES] = list(state.dices)
    extra_fields[SCORES] = list(state.scores)
