"""Rollout engine ``hf`` for unmodified verl: :class:`~msagent_training.hf_server.HFGenerationServer`
as a Ray actor, a rollout replica and a server adapter.

verl 0.9.1 resolves a rollout by name in two registries, both open to outside code:

- the *replica* (TaskRunner process: ``LLMServerManager``) from ``RolloutReplicaRegistry``
  (verl/workers/rollout/replica.py:312): :class:`HFReplica` starts one :class:`HFRolloutActor`
  per replica, on the node of its first worker, named ``hf_server_<replica>`` — the handle the
  agent loop's load balancer calls ``generate`` on;
- the *server adapter* (each actor worker: ``ActorRolloutRefWorker.init_model``) from the module
  dict ``_ROLLOUT_REGISTRY`` (verl/workers/rollout/base.py:89; verl has no register function):
  :class:`HFServerAdapter` forwards the actor's weights to its replica's server on every sync.

:func:`register` fills both; ``python -m msagent_training.grpo`` calls it in the TaskRunner and
the trainer's worker (:class:`msagent_training.cpu_trainer.MSAgentWorker`) in each worker.
Select it with ``actor_rollout_ref.rollout.name=hf`` (configs/grpo_cpu.yaml). Hybrid mode only
(the actor and the rollout share the workers, as in the paper's recipe), one process per replica
(tensor/data/pipeline parallel sizes 1).

On one CUDA GPU without vLLM/sglang the same engine runs on the GPU: the server sees the
worker's GPU (its ``CUDA_VISIBLE_DEVICES``) and generates there in the rollout dtype.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray

from .hf_server import HFGenerationServer

log = logging.getLogger(__name__)

NAME = "hf"
ADAPTER = f"{__name__}.HFServerAdapter"


class RolloutConfigError(ValueError):
    """A rollout configuration the ``hf`` engine cannot run; the message names the fix."""


def check_config(config: Any) -> None:
    """Refuse what the ``hf`` engine does not do, before any process starts."""
    sizes = {key: int(_get(config, key, 1) or 1) for key in
             ("tensor_model_parallel_size", "data_parallel_size", "pipeline_model_parallel_size")}
    wide = {key: size for key, size in sizes.items() if size != 1}
    if wide:
        raise RolloutConfigError(
            f"rollout.name=hf serves one model per process and cannot shard it: {wide}; set "
            + " ".join(f"actor_rollout_ref.rollout.{key}=1" for key in wide)
            + " (or use rollout.name=vllm/sglang on GPUs)")
    if _get(config, "ignore_eos", False):
        raise RolloutConfigError("rollout.name=hf always stops at EOS; set "
                                 "actor_rollout_ref.rollout.ignore_eos=false")
    mode = _get(config, "logprobs_mode", "processed_logprobs")
    if mode not in (None, "processed_logprobs"):
        raise RolloutConfigError(f"rollout.name=hf reports processed log-probs only, not {mode}; set "
                                 "actor_rollout_ref.rollout.logprobs_mode=processed_logprobs")
    disaggregation = _get(config, "disaggregation", None)
    if disaggregation is not None and _get(disaggregation, "enabled", False):
        raise RolloutConfigError("rollout.name=hf has no prefill/decode disaggregation; set "
                                 "actor_rollout_ref.rollout.disaggregation.enabled=false")


def is_local_path(path: str) -> bool:
    """A filesystem path, not a Hugging Face Hub id such as ``Qwen/Qwen3-VL-8B-Instruct``."""
    return str(path).startswith(("/", "./", "../", "~"))


def check_model_path(path: str) -> None:
    """A local model path must be a folder here (a Hub id is resolved by verl's download)."""
    if is_local_path(path) and not os.path.isdir(os.path.expanduser(str(path))):
        raise RolloutConfigError(f"actor_rollout_ref.model.path={path} does not exist; point it at a "
                                 "Hugging Face model folder (e.g. the SFT run's global_step_N/huggingface)")


def server_name(replica_rank: int) -> str:
    """The Ray actor name of a replica's server (the adapter finds it by this name)."""
    return f"{NAME}_server_{replica_rank}"


def _get(config: Any, key: str, default: Any) -> Any:
    """``key`` of a dict, a DictConfig or a verl config dataclass (which all have ``get``)."""
    return config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)


def _torch_dtype(name: str):
    import torch

    aliases = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16",
               "float": "float32"}
    dtype = getattr(torch, aliases.get(str(name), str(name)), None)
    if not isinstance(dtype, torch.dtype):
        raise RolloutConfigError(f"actor_rollout_ref.rollout.dtype={name!r} is not a torch dtype "
                                 "(float32, bfloat16, float16)")
    return dtype


def load_model(model_config, dtype_name: str, device: str):
    """The rollout's copy of the policy, from the actor's model path (later syncs overwrite it)."""
    import transformers

    path = model_config.local_path
    check_model_path(path)
    override = dict(_get(model_config, "override_config", {}) or {})
    attn = override.get("attn_implementation", "sdpa")
    trust = bool(_get(model_config, "trust_remote_code", False))
    options = dict(dtype=_torch_dtype(dtype_name), attn_implementation=attn, trust_remote_code=trust)
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust)
    image_text = type(config) in transformers.AutoModelForImageTextToText._model_mapping
    auto = transformers.AutoModelForImageTextToText if image_text else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(path, **options)
    return model.to(device).eval()


class HFRolloutActor:
    """The Ray actor around :class:`HFGenerationServer`: generation runs in a thread, so the
    actor keeps answering verl's life-cycle calls while a request is being served."""

    def __init__(self, config, model_config, replica_rank: int) -> None:
        import torch
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        from . import cpu_platform

        check_model_path(str(_get(model_config, "path", "")))
        if cpu_platform.enabled():  # Ray gives a 0-CPU actor one OpenMP thread
            torch.set_num_threads(os.cpu_count() or 1)
        if not isinstance(model_config, HFModelConfig):
            model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        device = "cuda" if torch.cuda.is_available() and not cpu_platform.enabled() else "cpu"
        custom = dict(_get(config, "custom", None) or {})
        model = load_model(model_config, _get(config, "dtype", "float32"), device)
        self.server = HFGenerationServer(
            model, model_config.get_processor(), prompt_length=config.prompt_length,
            response_length=config.response_length, max_model_len=_get(config, "max_model_len", None),
            seed=_get(config, "seed", None) if _get(config, "full_determinism", False) else None,
            weights_digest_log=bool(custom.get("weights_digest", False)))
        self.replica_rank = replica_rank
        self.device = device
        self.threads = torch.get_num_threads()
        log.info("hf rollout server %d: %s on %s", replica_rank, type(model).__name__, device)

    def ready(self) -> dict[str, Any]:
        return {"replica_rank": self.replica_rank, "device": self.device,
                "model": type(self.server.model).__name__, "threads": self.threads}

    async def generate(self, request_id: str, prompt_ids: list[int], sampling_params: dict[str, Any],
                       image_data: list[Any] | None = None, video_data: Any = None, **kwargs: Any):
        return await asyncio.to_thread(self.server.generate, prompt_ids, sampling_params,
                                       image_data=image_data, video_data=video_data,
                                       mm_processor_kwargs=kwargs.get("mm_processor_kwargs"),
                                       audio_data=kwargs.get("audio_data"))

    async def update_weights(self, named_tensors: dict, global_steps: int | None = None) -> dict:
        return await asyncio.to_thread(self.server.update_weights, named_tensors, global_steps)

    async def abort_all_requests(self, reject_request: bool = False) -> dict[str, Any]:
        return self.server.abort_all_requests(reject_request)

    async def resume_generation(self) -> None:
        self.server.resume_generation()

    # The weights and the (absent) KV cache stay where they are: nothing to free or restore.
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


def _replica_class():
    from verl.workers.rollout.replica import RolloutMode, RolloutReplica

    class HFReplica(RolloutReplica):
        """One :class:`HFRolloutActor` per replica, beside the replica's (single) worker."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            check_config(self.config)

        async def launch_servers(self) -> None:
            if self.name_suffix:
                raise RolloutConfigError("rollout.name=hf serves the policy only (no reward or "
                                         "teacher model replicas)")
            if self.rollout_mode != RolloutMode.HYBRID:
                raise RolloutConfigError(f"rollout.name=hf runs in hybrid mode only (the actor's "
                                         f"workers), not {self.rollout_mode}; set "
                                         "actor_rollout_ref.hybrid_engine=true")
            node_id, devices = await self.workers[0].__ray_call__.remote(_placement)
            env = {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1",
                   "CUDA_VISIBLE_DEVICES": ",".join(devices)} if devices else {}
            name = server_name(self.replica_rank)
            actor = ray.remote(HFRolloutActor).options(
                name=name, num_cpus=0, max_concurrency=self.max_concurrency,
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                    node_id=node_id, soft=False),
                runtime_env={"env_vars": env},
            ).remote(config=self.config, model_config=self.model_config,
                     replica_rank=self.replica_rank)
            await actor.ready.remote()  # a failed load surfaces here, with its traceback
            self.servers = [actor]
            self._server_handle = actor
            self._server_address = name

    return HFReplica


def _placement(worker) -> tuple[str, list[str]]:
    context = ray.get_runtime_context()
    return context.get_node_id(), [str(i) for i in context.get_accelerator_ids().get("GPU", [])]


def _adapter_base():
    from verl.workers.rollout.base import BaseRollout

    return BaseRollout


class HFServerAdapter(_adapter_base()):
    """The ``hf`` rollout inside an actor worker: hands the actor's weights to its server.

    ``update_weights`` drains the weight generator (gathering FSDP shards is a collective every
    rank joins) and sends the full tensors to its replica's server in one Ray call: one worker
    per replica, so every rank serves its own. The server never releases memory, so
    ``resume``/``release`` do nothing.
    """

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        check_config(config)
        rank = int(os.environ.get("RANK", 0))
        self.replica_rank = rank if replica_rank == -1 else replica_rank
        self._server = None

    def _handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors",
                             global_steps: int | None = None, peft_config: Any = None,
                             **kwargs: Any) -> None:
        if wire_format != "named_tensors":
            raise RolloutConfigError(f"rollout.name=hf takes full weights, not {wire_format!r}; "
                                     "leave actor_rollout_ref.rollout.checkpoint_engine.backend "
                                     "at naive")
        if peft_config is not None:
            raise RolloutConfigError("rollout.name=hf serves merged weights only: set "
                                     "actor_rollout_ref.model.lora.merge=true for LoRA")
        tensors = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        report = await self._handle().update_weights.remote(tensors, global_steps)
        log.info("hf rollout %d: %d tensors synced (step %s)", self.replica_rank,
                 report["tensors"], global_steps)


def register() -> None:
    """Make ``actor_rollout_ref.rollout.name=hf`` resolvable in this process (idempotent)."""
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    if NAME not in RolloutReplicaRegistry._registry:
        replica = _replica_class()
        RolloutReplicaRegistry.register(NAME, lambda: replica)
    base._ROLLOUT_REGISTRY.setdefault((NAME, "async"), ADAPTER)
