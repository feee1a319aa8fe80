"""``python -m msagent_training.grpo``: verl's ``main_ppo`` with msagent's trainer mode and the
``hf`` rollout engine registered, and the configuration checked before Ray starts.

The same as ``python -m verl.trainer.main_ppo`` (config checks, Ray, the V1 TaskRunner) except
that the TaskRunner — the Ray actor that builds the trainer — first registers trainer mode
``msagent_sync`` (:mod:`msagent_training.trainer`) and rollout engine ``hf``
(:mod:`msagent_training.hf_rollout`). ``run_ppo`` takes the TaskRunner class for exactly this
(verl/trainer/main_ppo.py:34). ``training/scripts/grpo.sh`` launches it; on the CPU::

    VERL_PLATFORM=cpu python -m msagent_training.grpo --config-path=training/configs \\
        --config-name=grpo_cpu data.train_files=rl.parquet actor_rollout_ref.model.path=SFT_DIR
"""

from __future__ import annotations

import hydra
import ray
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo

from . import cpu_platform


class ConfigError(ValueError):
    """A GRPO configuration that cannot run; the message names the fix."""


@ray.remote
class TaskRunner(TaskRunnerV1.__ray_metadata__.modified_class):
    """verl's V1 TaskRunner, with msagent's trainer mode and rollout engine in its process."""

    def run(self, config):
        from .hf_rollout import register as register_rollout
        from .trainer import register as register_trainer

        register_trainer()
        register_rollout()
        return super().run(config)


def preflight(config) -> None:
    """Refuse, before Ray starts, what would otherwise fail minutes later inside an actor."""
    from .hf_rollout import check_config, check_model_path

    rollout = config.actor_rollout_ref.rollout
    check_model_path(str(config.actor_rollout_ref.model.path))
    if rollout.name == "hf":
        check_config(rollout)
    if cpu_platform.enabled():
        if config.trainer.get("device", "cuda") != cpu_platform.NAME:
            raise ConfigError("VERL_PLATFORM=cpu needs trainer.device=cpu (configs/grpo_cpu.yaml sets it)")
        if rollout.name != "hf":
            raise ConfigError(f"rollout.name={rollout.name} needs a GPU; on the CPU use rollout.name=hf")
    elif config.trainer.get("device") == cpu_platform.NAME:
        raise ConfigError("trainer.device=cpu needs VERL_PLATFORM=cpu in the environment")


@hydra.main(config_path=None, config_name="grpo", version_base=None)
def main(config) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    preflight(config)
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config),
                    use_critic=need_critic(config))
    run_ppo(config, task_runner_class=TaskRunner)


if __name__ == "__main__":
    main()
