"""``compute_score`` for verl's ``reward.custom_reward_function``: the MedSAM-Agent reward.

The numbers come from :meth:`msagent.MedSAMReward.from_values` — the core's own formula —
fed with what the tools and the agent loop recorded in ``extra_fields`` (verl merges them into
``extra_info``): ``msagent_calls`` (each assistant turn's call kind), ``msagent_ious`` and
``msagent_dices`` (after each executed add_* call). Without ``msagent_calls`` (another agent
loop), the calls are parsed from the response text with msagent's parser.

Config: ``reward.custom_reward_function.path=pkg://msagent_training.reward``,
``name=compute_score``; ``reward_kwargs`` may override any :class:`MedSAMReward` weight.
Returns a dict with the same keys for every sample: score, format, quality, penalty, bonus,
turns, iou, dice. verl's reward loop keeps them per trajectory (``reward_extra_info``); verl's
V1 trainer logs them from validation only (``val-aux/<data_source>/<key>/mean@1``, every
``test_freq: 10`` steps in the recipe), and the recipe's trainer mode ``msagent_sync``
(:mod:`msagent_training.metrics`) adds ``reward/<key>/{mean,min,max}`` to every training step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from msagent.errors import InvalidInput
from msagent.reward import MedSAMReward

from .episode import CALLS, DICES, INVALID, IOUS, SCORES, call_kind

METRIC_KEYS = ("score", "format", "quality", "penalty", "bonus", "turns", "iou", "dice")
_WEIGHTS = {f.name for f in attrs.fields(MedSAMReward)}
_CALL_BLOCK = re.compile(r"<tool_call>.*?(?:</tool_call>|$)", re.DOTALL)


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
    """The reward and its breakdown for one trajectory (verl's reward-function signature).

    ``ground_truth`` is not read: the tools scored every mask against the case's mask when
    they made it. Keyword arguments named like :class:`MedSAMReward` fields set its weights.
    """
    info = extra_info or {}
    reward = MedSAMReward(**{k: float(v) for k, v in kwargs.items() if k in _WEIGHTS})
    calls = [c for c in recorded_calls(info, solution_str) if c != INVALID]
    ious, dices = _floats(info.get(IOUS)), _floats(info.get(DICES))
    scores = info.get(SCORES)
    if len(ious) != len(dices) or (scores is not None and len(scores) != len(ious)):
        raise InvalidInput(f"{len(_floats(scores))} masks were made but {len(ious)} IoU values "
                           "recorded: the dataset rows need create_kwargs['ground_truth'] "
                           "(python -m msagent_training.data rl ... writes it)")
    breakdown = reward.from_values(
        has_interaction=any(c != "stop_action" for c in calls),
        ends_with_stop=bool(calls) and calls[-1] == "stop_action",
        ious=ious, dices=dices)
    values = breakdown.as_dict()
    return {key: float(values[key]) for key in METRIC_KEYS}


def recorded_calls(info: Mapping[str, Any], solution_str: str) -> list[str]:
    """Each assistant turn's call kind: from the agent loop's record, else parsed from text."""
    calls = info.get(CALLS)
    if calls is not None:
        return [str(c) for c in calls]
    return [call_kind(block) for block in _CALL_BLOCK.findall(solution_str or "")]


def trajectory_extra_info(trajectory) -> dict[str, list]:
    """The ``extra_fields`` record our agent loop would leave for a :class:`msagent.Trajectory`
    (every reply's call kind; IoU/Dice/score of each executed step)."""
    executed = trajectory.executed_steps
    return {
        CALLS: [s.action.kind if s.action is not None else INVALID for s in trajectory.steps],
        IOUS: [s.iou for s in executed],
        DICES: [s.dice for s in executed],
        SCORES: [s.score for s in executed],
    }


def _floats(values: Sequence[Any] | None) -> list[float]:
    return [] if values is None else [float(v) for v in values]
