"""The actor worker and resource pool of msagent's trainer mode: verl's, with three changes.

- :class:`MSAgentWorker` is verl's ``ActorRolloutRefWorker`` that registers the ``hf`` rollout
  engine in its process (:mod:`msagent_training.hf_rollout`) and, on the CPU platform
  (``VERL_PLATFORM=cpu``), opens a plain ``gloo`` process group before verl's initializer runs:
  verl asks torch for ``cpu:gloo,cpu:gloo`` (verl/utils/distributed.py:86, from
  engine_workers.py:89), which torch refuses ("Duplicate device type cpu"); verl skips its own
  call when a group exists. Its inner training worker guards the 3-D position ids
  (:mod:`msagent_training.position_ids`) on GPUs too.
- :class:`CPUResourcePoolManager` counts CPUs where verl counts only GPUs/NPUs
  (single_controller/ray/base.py:226) and asks one CPU per worker process — by construction,
  where verl's bundle ``{"CPU": 3}`` becomes ``{"CPU": 1}`` only because the platform's
  resource name is also ``CPU`` (base.py:146-150). No fake GPUs.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import ray
from verl.single_controller.ray.base import RayResourcePool, ResourcePoolManager
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from . import cpu_platform, hf_rollout
from .position_ids import normalize_position_ids

log = logging.getLogger(__name__)


def open_gloo_group() -> None:
    """The default process group over gloo, from verl's worker environment (idempotent)."""
    import torch.distributed

    if torch.distributed.is_initialized():
        return
    torch.distributed.init_process_group(
        backend="gloo", rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)), timeout=timedelta(minutes=30),
        init_method=os.environ.get("DIST_INIT_METHOD"))


class GuardedTrainingWorker(TrainingWorker):
    """verl's TrainingWorker whose batches get canonical 3-D position ids first (verl #7899)."""

    def train_mini_batch(self, data):
        normalize_position_ids(data)
        return super().train_mini_batch(data)

    def infer_batch(self, data):
        normalize_position_ids(data)
        return super().infer_batch(data)


class MSAgentWorker(ActorRolloutRefWorker):
    """verl's actor/rollout/ref worker (see the module docstring)."""

    actor_worker_cls = GuardedTrainingWorker
    ref_worker_cls = GuardedTrainingWorker

    def __init__(self, config, role: str, *args: Any, **kwargs: Any) -> None:
        hf_rollout.register()
        if cpu_platform.enabled():
            import torch

            cpu_platform.register_engines()
            open_gloo_group()
            torch.set_num_threads(os.cpu_count() or 1)  # Ray sets one thread per granted CPU
        super().__init__(config, role, *args, **kwargs)


class CPUResourcePoolManager(ResourcePoolManager):
    """Resource pools of one CPU per worker process, checked against the cluster's CPUs."""

    def create_resource_pool(self) -> None:
        for name, process_on_nodes in self.resource_pool_spec.items():
            self.resource_pool_dict[name] = RayResourcePool(
                process_on_nodes=process_on_nodes, use_gpu=True, max_colocate_count=1,
                name_prefix=name)
        self._check_resource_available()

    def _check_resource_available(self) -> None:
        available = sum(node.get("CPU", 0) for node in
                        ray._private.state.available_resources_per_node().values())
        required = self.get_n_gpus()
        if available < required:
            raise ValueError(f"the CPU trainer needs {required} CPU(s) for its worker processes "
                             f"(trainer.n_gpus_per_node x trainer.nnodes) but Ray has {available:g} "
                             "free; lower trainer.n_gpus_per_node or raise ray_kwargs.ray_init.num_cpus")


def use_msagent_workers(trainer) -> None:
    """Point a verl trainer's worker roles at :class:`MSAgentWorker` and, on the CPU platform,
    its resource pools at :class:`CPUResourcePoolManager` (call after ``_init_resource_pool_mgr``)."""
    for role, worker in list(trainer.role_worker_mapping.items()):
        original = getattr(worker, "__ray_metadata__", None)
        cls = original.modified_class if original is not None else worker
        if isinstance(cls, type) and issubclass(cls, ActorRolloutRefWorker):
            trainer.role_worker_mapping[role] = ray.remote(MSAgentWorker)
    if cpu_platform.enabled():
        manager = trainer.resource_pool_manager
        trainer.resource_pool_manager = CPUResourcePoolManager(
            resource_pool_spec=manager.resource_pool_spec, mapping=manager.mapping)
