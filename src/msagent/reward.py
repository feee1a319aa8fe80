"""Trajectory rewards: the abstract Reward and the MedSAM-Agent process reward.

R = w_f·F + w_q·clip(Q, 0, 1) with Q = w_iou·IoU_T + w_dice·Dice_T − P + B, where, only when
more than one mask-producing call was made, P = w_reg·(max_t IoU_t − IoU_T) + c·T and
B = w_prog·Σ_{t≥2} max(0, IoU_t − IoU_{t−1}). F is 1 when the trajectory has an add_* call
and its last call is stop_action, 0.5 when one of the two holds, 0 otherwise. Defaults are
the paper's (and the upstream ``compute_score``'s).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import cast

import attrs

from msagent.types import Trajectory


@attrs.frozen
class RewardBreakdown:
    """The reward and its parts, so training can log them as metrics."""

    score: float
    format: float
    quality: float
    penalty: float
    bonus: float
    turns: int
    iou: float
    dice: float

    def as_dict(self) -> dict[str, float]:
        return attrs.asdict(self)


class Reward(ABC):
    """Scores a finished trajectory whose steps carry IoU/Dice (i.e. run with ground truth)."""

    name: str = ""

    @abstractmethod
    def score(self, trajectory: Trajectory) -> RewardBreakdown:
        """The reward of ``trajectory`` with its breakdown."""


@attrs.define
class MedSAMReward(Reward):
    """The MedSAM-Agent process reward (format, quality, regression/step penalty, progress bonus)."""

    format_weight: float = 0.2
    quality_weight: float = 0.8
    iou_weight: float = 0.5
    dice_weight: float = 0.5
    regression_weight: float = 1.0
    step_cost: float = 0.01
    progress_weight: float = 0.1

    def score(self, trajectory: Trajectory) -> RewardBreakdown:
        calls = [s.action.kind for s in trajectory.steps if s.action is not None]
        executed = trajectory.executed_steps
        if any(s.iou is None or s.dice is None for s in executed):
            raise ValueError("the reward needs IoU/Dice on every executed step: run the episode "
                             "with ground_truth=")
        initial = trajectory.initial
        if initial is not None and (initial.iou is None or initial.dice is None):
            raise ValueError("the reward needs the initial mask's IoU/Dice: run the episode "
                             "with ground_truth=")
        return self.from_values(
            has_interaction=any(kind != "stop_action" for kind in calls),
            ends_with_stop=bool(calls) and calls[-1] == "stop_action",
            # checked above: every executed step (and the initial mask) has its IoU and Dice
            ious=cast(list[float], [s.iou for s in executed]),
            dices=cast(list[float], [s.dice for s in executed]),
            initial=None if initial is None else cast(tuple[float, float], (initial.iou, initial.dice)),
        )

    def from_values(self, *, has_interaction: bool, ends_with_stop: bool,
                    ious: Sequence[float], dices: Sequence[float],
                    initial: tuple[float, float] | None = None) -> RewardBreakdown:
        """The reward from recorded per-call IoU/Dice (what the training tools log).

        ``initial`` (IoU, Dice) is the mask a refining episode started from, turn 0: it counts
        in the regression term (ending below the best mask so far, the initial one included,
        is penalised) and in the progress bonus (its first step counts the gain over the
        initial mask), and it is the final mask when no call executed; the step cost counts
        the calls only. Without it the reward is upstream's exactly.
        """
        fmt = (float(has_interaction) + float(ends_with_stop)) / 2.0
        calls = len(ious)
        if initial is not None:
            ious, dices = [initial[0], *ious], [initial[1], *dices]
        turns = len(ious)
        final_iou = float(ious[-1]) if ious else 0.0
        final_dice = float(dices[-1]) if dices else 0.0
        penalty = bonus = 0.0
        if turns > 1:
            penalty = self.regression_weight * (max(ious) - final_iou) + self.step_cost * calls
            bonus = self.progress_weight * sum(max(0.0, b - a) for a, b in zip(ious, ious[1:]))
        base = self.iou_weight * final_iou + self.dice_weight * final_dice
        quality = min(1.0, max(0.0, base - penalty + bonus))
        return RewardBreakdown(
            score=self.format_weight * fmt + self.quality_weight * quality,
            format=fmt, quality=quality, penalty=penalty, bonus=bonus, turns=calls,
            iou=final_iou, dice=final_dice,
        )
