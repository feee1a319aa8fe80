"""Trainer mode ``msagent_sync``: verl's sync GRPO trainer with msagent's workers and metrics.

verl 0.9.1's V1 trainers register by name (``register_trainer``,
trainer/ppo/v1/trainer_base.py:1999; chosen by ``trainer.v1.trainer_mode``) and ``run_ppo``
takes the TaskRunner class that builds them (main_ppo.py:34), so nothing in verl is changed.
``python -m msagent_training.grpo`` registers this mode in its TaskRunner. It is verl's
``sync`` trainer, plus:

- workers: :func:`msagent_training.cpu_trainer.use_msagent_workers` (the ``hf`` rollout engine,
  the CPU process group and resource pools under ``VERL_PLATFORM=cpu``, the position-id guard);
- metrics: :mod:`msagent_training.metrics` on every training step.
"""

from __future__ import annotations

from .metrics import episode_metrics, group_metrics, reward_extra_info, reward_metrics

MODE = "msagent_sync"


def register() -> type:
    """Register (once) and return the ``msagent_sync`` trainer class."""
    import transfer_queue as tq
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from .cpu_trainer import use_msagent_workers

    if MODE in TRAINER_REGISTRY:
        return TRAINER_REGISTRY[MODE]

    @register_trainer(MODE)
    class MSAgentTrainerSync(PPOTrainerSync):
        """verl's sync trainer (see the module docstring)."""

        def _init_resource_pool_mgr(self):
            super()._init_resource_pool_mgr()
            use_msagent_workers(self)

        def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
            super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                   select_fields=["extra_fields", "uid"])
            kept = [not tag.get("is_padding", False) for tag in batch.tags]
            extra_fields = [f for f, k in zip(data.pop("extra_fields").tolist(), kept, strict=True) if k]
            uids = [u for u, k in zip(data.pop("uid").tolist(), kept, strict=True) if k]
            infos = [reward_extra_info(fields) for fields in extra_fields]
            metrics.update(reward_metrics(infos))
            metrics.update(group_metrics(uids, [None if i is None else i.get("score") for i in infos]))
            metrics.update(episode_metrics(extra_fields))

    return MSAgentTrainerSync
