"""A CPU platform for unmodified verl: SFT (and verl's trainer code) on laptops and in CI.

verl 0.9.1 resolves its device through ``verl.plugin.platform.PlatformRegistry`` and picks a
training engine through ``verl.workers.engine.EngineRegistry``; both are extension points, and
verl imports every ``verl.plugins`` entry point when ``import verl`` runs (in every process:
torchrun ranks, Ray workers). This module is msagent-training's entry point. It registers

- platform ``cpu`` (:class:`PlatformCPU`): device ``cpu``; ``current_device()`` answers
  ``"cpu"`` (verl moves tensors with ``.to(get_device_id())``, and an int would mean CUDA);
  ``gloo`` collectives; no-op seeding/caches/profiling; Ray resource ``CPU``;
- verl's FSDP language-model engine for device ``cpu`` (verl registers it for cuda/npu only;
  the same class runs unchanged on CPU with fsdp2 and gloo).

Both happen only when ``VERL_PLATFORM=cpu`` is set — never by auto-detection, so GPU nodes
are untouched. A CPU run also needs: fp32 (``engine.model_dtype: fp32`` and
``engine.mixed_precision.param_dtype: fp32``), ``engine.strategy: fsdp2``, sdpa attention
(``model.override_config.attn_implementation: sdpa``) and ``trainer.device: cpu`` —
``configs/sft_cpu.yaml`` sets them::

    VERL_PLATFORM=cpu torchrun --standalone --nproc-per-node=1 -m verl.trainer.sft_trainer \\
        --config-path=training/configs --config-name=sft_cpu data.train_files=... model.path=...
"""

from __future__ import annotations

import contextlib
import logging
import os
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

log = logging.getLogger(__name__)

NAME = "cpu"
ENV = "VERL_PLATFORM"


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _device_module() -> ModuleType:
    """``torch.cpu`` with the ``torch.cuda``-style calls verl makes (memory stats, caches,
    seeding, streams) answered as no-ops or zeros."""
    module = ModuleType("msagent_training.cpu_platform.device")
    for name in dir(torch.cpu):
        if not name.startswith("__"):
            setattr(module, name, getattr(torch.cpu, name))
    zero = lambda *args, **kwargs: 0  # noqa: E731
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated",
                 "max_memory_reserved"):
        setattr(module, name, zero)
    for name in ("empty_cache", "reset_peak_memory_stats", "manual_seed", "manual_seed_all",
                 "set_device", "synchronize", "ipc_collect"):
        setattr(module, name, _noop)
    module.mem_get_info = lambda *args, **kwargs: (0, 0)
    module.get_device_name = lambda *args, **kwargs: "CPU"  # verl's flops counter asks
    module.is_available = lambda: True
    module.device_count = lambda: 1
    module.current_device = lambda: NAME
    module.get_rng_state = torch.get_rng_state
    module.set_rng_state = torch.set_rng_state
    module.memory = SimpleNamespace(_set_allocator_settings=_noop)
    return module


class PlatformCPU(PlatformBase):
    """verl's platform interface on the CPU (see the module docstring)."""

    def __init__(self) -> None:
        self._module = _device_module()

    @property
    def device_name(self) -> str:
        return NAME

    @property
    def vendor_name(self) -> str:
        return NAME

    @property
    def device_module(self) -> ModuleType:
        return self._module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # chosen only by VERL_PLATFORM=cpu, never auto-detected

    def current_device(self) -> str:  # type: ignore[override]
        return NAME

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "MSAGENT_CPU_VISIBLE_DEVICES"  # no such devices: never set

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def enabled() -> bool:
    """True when this process runs verl on the CPU platform (``VERL_PLATFORM=cpu``)."""
    return os.environ.get(ENV, "").strip().lower() == NAME


def register_engines() -> None:
    """Register verl's FSDP language-model engine for device ``cpu`` (idempotent)."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    backends = EngineRegistry._engines.get("language_model", {})
    missing = [b for b in ("fsdp", "fsdp2") if NAME not in backends.get(b, {})]
    if missing:
        EngineRegistry.register(model_type="language_model", backend=missing,
                                device=NAME)(FSDPEngineWithLMHead)


def register() -> None:
    """The ``verl.plugins`` entry point: register the platform always (harmless: it is never
    auto-detected) and, under ``VERL_PLATFORM=cpu``, the engines too."""
    PlatformRegistry.register(platform=NAME)(PlatformCPU)
    if enabled():
        register_engines()


register()
