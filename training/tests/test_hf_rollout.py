"""Rollout engine ``hf`` in verl's registries, and the bad configurations it refuses with a
message that names the fix — before Ray starts where possible, and never as a hang."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

from msagent_training import grpo, hf_rollout
from msagent_training.hf_rollout import RolloutConfigError, check_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def cpu_config(*overrides, model="/nonexistent/model"):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("grpo_cpu", overrides=[f"actor_rollout_ref.model.path={model}", *overrides])


def test_the_engine_resolves_through_verls_registries():
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import RolloutReplica, get_rollout_replica_class

    hf_rollout.register()
    hf_rollout.register()  # idempotent
    replica = get_rollout_replica_class("hf")
    assert issubclass(replica, RolloutReplica) and replica.__name__ == "HFReplica"
    assert get_rollout_class("hf", "async") is hf_rollout.HFServerAdapter


@pytest.mark.parametrize("key", ["tensor_model_parallel_size", "data_parallel_size",
                                 "pipeline_model_parallel_size"])
def test_parallelism_is_refused_with_the_fix(key):
    with pytest.raises(RolloutConfigError, match=f"actor_rollout_ref.rollout.{key}=1"):
        check_config({key: 2})
    check_config({key: 1})


@pytest.mark.parametrize("setting, message", [({"ignore_eos": True}, "ignore_eos=false"),
                                              ({"logprobs_mode": "raw_logprobs"}, "processed_logprobs")])
def test_settings_the_engine_cannot_honour_are_refused(setting, message):
    with pytest.raises(RolloutConfigError, match=message):
        check_config(setting)


def test_disaggregation_is_refused():
    with pytest.raises(RolloutConfigError, match="disaggregation.enabled=false"):
        check_config({"disaggregation": {"enabled": True}})


def test_the_cpu_recipe_passes_preflight(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    grpo.preflight(cpu_config(model=str(tmp_path)))


@pytest.mark.parametrize("overrides, message", [
    (("actor_rollout_ref.rollout.tensor_model_parallel_size=2",), "tensor_model_parallel_size=1"),
    (("actor_rollout_ref.rollout.name=vllm",), "rollout.name=hf"),
    (("trainer.device=cuda",), "trainer.device=cpu"),
])
def test_preflight_names_the_fix(tmp_path, monkeypatch, overrides, message):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    with pytest.raises(ValueError, match=message):
        grpo.preflight(cpu_config(*overrides, model=str(tmp_path)))


def test_preflight_refuses_a_missing_model_folder(monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    with pytest.raises(ValueError, match="does not exist"):
        grpo.preflight(cpu_config(model="/nonexistent/model"))


def test_preflight_refuses_the_cpu_device_without_the_platform(tmp_path, monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    with pytest.raises(grpo.ConfigError, match="VERL_PLATFORM=cpu"):
        grpo.preflight(cpu_config(model=str(tmp_path)))


def test_the_command_fails_fast_with_the_message(tmp_path):
    env = {**os.environ, "VERL_PLATFORM": "cpu", "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "msagent_training.grpo", f"--config-path={CONFIGS}",
         "--config-name=grpo_cpu", f"actor_rollout_ref.model.path={tmp_path}",
         "actor_rollout_ref.rollout.tensor_model_parallel_size=2", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert "tensor_model_parallel_size=1" in result.stderr


class RecordingServer:
    def __init__(self):
        self.calls = []
        self.update_weights = SimpleNamespace(remote=self._update)

    async def _update(self, tensors, global_steps):
        self.calls.append((tensors, global_steps))
        return {"tensors": len(tensors)}


def adapter():
    instance = hf_rollout.HFServerAdapter.__new__(hf_rollout.HFServerAdapter)
    instance.replica_rank = 0
    instance._server = RecordingServer()
    return instance


def test_the_adapter_drains_the_weights_and_sends_copies():
    weight = torch.ones(3)
    drained = []

    def weights():
        for name, tensor in (("a", weight), ("b", torch.zeros(2))):
            drained.append(name)
            yield name, tensor

    instance = adapter()
    asyncio.run(instance.update_weights(weights(), global_steps=4))
    (tensors, steps), = instance._server.calls
    assert drained == ["a", "b"] and steps == 4 and set(tensors) == {"a", "b"}
    weight.add_(1)
    assert torch.equal(tensors["a"], torch.ones(3))  # a copy, not the actor's live tensor


@pytest.mark.parametrize("kwargs, message", [({"wire_format": "delta_flush"}, "full weights"),
                                             ({"peft_config": object()}, "lora.merge=true")])
def test_the_adapter_refuses_what_it_cannot_apply(kwargs, message):
    with pytest.raises(RolloutConfigError, match=message):
        asyncio.run(adapter().update_weights(iter(()), **kwargs))


def test_a_server_that_cannot_load_surfaces_its_error_through_ray(tmp_path):
    import ray

    config = cpu_config(model=str(tmp_path / "missing"))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(hf_rollout.HFRolloutActor).options(num_cpus=0).remote(
            config=config.actor_rollout_ref.rollout,
            model_config=config.actor_rollout_ref.model,
            replica_rank=0)
        with pytest.raises(Exception, match="does not exist"):
            ray.get(actor.ready.remote(), timeout=120)
    finally:
        ray.shutdown()
