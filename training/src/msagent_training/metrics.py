"""What msagent adds to every GRPO training step's metrics (verl's V1 trainer logs these
only from validation, or not at all): the reward breakdown and how the episodes went.

- ``reward/<key>/{mean,min,max}`` for score, format, quality, penalty, bonus, turns, iou, dice,
  from each trajectory's ``extra_fields["reward_extra_info"]`` (where verl's reward loop puts
  :func:`msagent_training.reward.compute_score`'s dict);
- ``reward/groups_with_variance``: the fraction of GRPO groups (rollouts of one prompt) whose
  scores differ — only those give non-zero advantages;
- ``episode/*``: the share of replies that made a valid tool call, replies per episode, the
  share of episodes with more than one reply, segmenter calls, the final IoU — from the
  record our agent loop and tools keep (:mod:`msagent_training.episode`).

:mod:`msagent_training.trainer` computes them in trainer mode ``msagent_sync``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .episode import CALLS, INVALID, IOUS, SCORES
from .reward import METRIC_KEYS

PREFIX = "reward"


def reward_metrics(extra_infos: Iterable[Mapping[str, Any] | None]) -> dict[str, float]:
    """``reward/<key>/{mean,min,max}`` over the trajectories' ``reward_extra_info`` dicts
    (missing dicts and keys are skipped; no values, no metric)."""
    infos = [info for info in extra_infos if isinstance(info, Mapping)]
    metrics: dict[str, float] = {}
    for key in METRIC_KEYS:
        values = np.array([float(info[key]) for info in infos if info.get(key) is not None])
        if values.size:
            metrics.update({f"{PREFIX}/{key}/mean": float(values.mean()),
                            f"{PREFIX}/{key}/min": float(values.min()),
                            f"{PREFIX}/{key}/max": float(values.max())})
    return metrics


def group_metrics(uids: Sequence[Any], scores: Sequence[float | None]) -> dict[str, float]:
    """``reward/groups_with_variance`` and ``reward/groups``: GRPO groups are the rollouts
    that share a ``uid``; a group whose scores are all equal gets zero advantages."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for uid, score in zip(uids, scores, strict=True):
        if score is not None:
            groups[uid].append(float(score))
    if not groups:
        return {}
    varied = sum(1 for values in groups.values() if len(values) > 1 and np.ptp(values) > 0)
    return {f"{PREFIX}/groups": float(len(groups)),
            f"{PREFIX}/groups_with_variance": varied / len(groups)}


def episode_metrics(records: Iterable[Mapping[str, Any] | None]) -> dict[str, float]:
    """``episode/*`` over the trajectories' ``extra_fields`` (see the module docstring)."""
    episodes = [r for r in records if isinstance(r, Mapping) and r.get(CALLS) is not None]
    if not episodes:
        return {}
    calls = [list(r[CALLS]) for r in episodes]
    replies = np.array([len(c) for c in calls], dtype=float)
    valid = sum(1 for c in calls for kind in c if kind != INVALID)
    segmenter_calls = np.array([len(r.get(SCORES) or []) for r in episodes], dtype=float)
    final_iou = np.array([float((r.get(IOUS) or [0.0])[-1]) for r in episodes])
    return {
        "episode/valid_call_rate": valid / max(1.0, float(replies.sum())),
        "episode/with_valid_call": float(np.mean([any(k != INVALID for k in c) for c in calls])),
        "episode/replies/mean": float(replies.mean()),
        "episode/replies/max": float(replies.max()),
        "episode/multi_turn": float(np.mean(replies > 1)),
        "episode/segmenter_calls": float(segmenter_calls.sum()),
        "episode/final_iou/mean": float(final_iou.mean()),
    }


def reward_extra_info(extra_fields: Any) -> Mapping[str, Any] | None:
    """The reward's breakdown dict kept in a trajectory's ``extra_fields``."""
    return extra_fields.get("reward_extra_info") if isinstance(extra_fields, Mapping) else None


_STEP_LINE = re.compile(r"step:(\d+) - (.*)$", re.MULTILINE)
_NUMBER = re.compile(r"[-+0-9.eE]+(?=\)?$)")  # 0.5, np.float64(0.5), np.int32(2)


def console_steps(log: str) -> dict[int, dict[str, float]]:
    """Every step's metrics from verl's console logger (``step:N - key:value - ...`` lines)."""
    steps: dict[int, dict[str, float]] = {}
    for number, body in _STEP_LINE.findall(log):
        values: dict[str, float] = {}
        for item in body.split(" - "):
            key, _, value = item.rpartition(":")
            match = _NUMBER.search(value.strip())
            if key and match:
                try:
                    values[key.strip()] = float(match.group(0))
                except ValueError:
                    continue
        steps[int(number)] = values
    return steps
