"""``python -m msagent_training.sft``: verl's multi-turn SFT trainer, also on the CPU platform.

verl's ``verl.trainer.sft_trainer.main`` is ``auto_set_device`` + ``run_sft``, and ``run_sft``
opens the process group with the backend string ``cpu:gloo,{device}:{backend}``
(verl/utils/distributed.py:63), which torch rejects when the device is the CPU ("Duplicate
device type cpu"). This entry point is ``run_sft`` with that one call replaced: under
``VERL_PLATFORM=cpu`` it opens a plain ``gloo`` group, otherwise it calls verl's own
initializer. Everything else — config, dataset, engine, checkpoints — is verl's
``SFTTrainer``, unmodified. Launch it like verl's (torchrun, ``--config-path``/``--config-name``,
Hydra overrides); ``training/scripts/sft.sh`` picks it when ``VERL_PLATFORM=cpu``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import hydra

from . import cpu_platform


def init_process_group(timeout_second: int = 36000) -> tuple[int, int, int]:
    """(local_rank, rank, world_size) after opening the default process group."""
    if not cpu_platform.enabled():
        from verl.utils.distributed import initialize_global_process_group

        return initialize_global_process_group(timeout_second)
    import torch.distributed

    torch.distributed.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_second),
                                         init_method=os.environ.get("DIST_INIT_METHOD"))
    return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def run_sft(config) -> None:
    """verl's ``run_sft`` (verl/trainer/sft_trainer.py) with :func:`init_process_group`."""
    from verl.trainer.sft_trainer import SFTTrainer
    from verl.utils.distributed import destroy_global_process_group

    init_process_group()
    SFTTrainer(config=config).fit()
    destroy_global_process_group()


@hydra.main(config_path=None, config_name="sft_cpu", version_base=None)
def main(config) -> None:
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    run_sft(config)


if __name__ == "__main__":
    main()
