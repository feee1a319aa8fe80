"""The reward breakdown in every GRPO training step's metrics (verl's V1 trainer).

verl 0.9.1's V1 trainer logs ``compute_score``'s extra keys only from validation; per training
step its ``_compute_metrics`` reads a fixed list of fields (trainer/ppo/v1/trainer_base.py:1868).
Its extension points allow more without changing verl: trainers register by name
(``register_trainer``, trainer_base.py:1999; chosen by ``trainer.v1.trainer_mode``), and
``run_ppo`` takes the TaskRunner class (main_ppo.py:34). This module registers trainer mode
``msagent_sync`` — verl's ``sync`` trainer whose step metrics also carry
``reward/<key>/{mean,min,max}`` for score, format, quality, penalty, bonus, turns, iou, dice,
read from each trajectory's ``extra_fields["reward_extra_info"]`` (where verl's reward loop puts
them) in TransferQueue. ``python -m msagent_training.grpo`` imports it in the TaskRunner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .reward import METRIC_KEYS

MODE = "msagent_sync"
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


def _extra_infos(extra_fields: Iterable[Any]) -> list[Mapping[str, Any] | None]:
    return [fields.get("reward_extra_info") if isinstance(fields, Mapping) else None
            for fields in extra_fields]


def register() -> type:
    """Register (once) and return the ``msagent_sync`` trainer class."""
    import transfer_queue as tq
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    if MODE in TRAINER_REGISTRY:
        return TRAINER_REGISTRY[MODE]

    @register_trainer(MODE)
    class MSAgentTrainerSync(PPOTrainerSync):
        """verl's sync trainer; each step's metrics also hold the reward breakdown."""

        def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
            super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                   select_fields=["extra_fields"])
            extra_fields = data.pop("extra_fields").tolist()
            kept = [fields for fields, tag in zip(extra_fields, batch.tags, strict=True)
                    if not tag.get("is_padding", False)]
            metrics.update(reward_metrics(_extra_infos(kept)))

    return MSAgentTrainerSync
