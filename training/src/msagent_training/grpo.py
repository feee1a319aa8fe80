"""``python -m msagent_training.grpo``: verl's ``main_ppo`` with the reward breakdown logged at
every training step.

The same as ``python -m verl.trainer.main_ppo`` (config checks, Ray, the V1 TaskRunner) except
that the TaskRunner — the Ray actor that builds the trainer — first registers trainer mode
``msagent_sync`` (:mod:`msagent_training.metrics`), which ``configs/recipe/grpo.yaml`` selects
with ``trainer.v1.trainer_mode: msagent_sync``. ``run_ppo`` takes the TaskRunner class for
exactly this (verl/trainer/main_ppo.py:34). ``training/scripts/grpo.sh`` launches it.
"""

from __future__ import annotations

import hydra
import ray
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo


@ray.remote
class TaskRunner(TaskRunnerV1.__ray_metadata__.modified_class):
    """verl's V1 TaskRunner, with msagent's trainer mode registered in its process."""

    def run(self, config):
        from .metrics import register

        register()
        return super().run(config)


@hydra.main(config_path=None, config_name="grpo", version_base=None)
def main(config) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config),
                    use_critic=need_critic(config))
    run_ppo(config, task_runner_class=TaskRunner)


if __name__ == "__main__":
    main()
