"""The command lines of the CPU SFT and GRPO runs (the tests' fixtures and
``training/scripts/grpo_curve.py`` run exactly these).

Both run unmodified verl on msagent's CPU platform (:data:`ENV` sets ``VERL_PLATFORM=cpu``):
SFT through ``python -m msagent_training.sft`` under torchrun (configs/sft_cpu.yaml), GRPO
through ``python -m msagent_training.grpo`` (configs/grpo_cpu.yaml, LiteMedSAM tools at 256 px).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ENV = {"VERL_PLATFORM": "cpu", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
       "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}


def sft_command(model: Path, data: Path, out: Path, steps: int, *overrides: str) -> list[str]:
    """``steps`` SFT steps of ``model`` on ``data/sft.parquet`` into ``out/ckpt``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            "--nproc-per-node=1", "-m", "msagent_training.sft", f"--config-path={CONFIGS}",
            "--config-name=sft_cpu", f"data.train_files={data / 'sft.parquet'}",
            "data.train_batch_size=2", f"model.path={model}",
            f"trainer.default_local_dir={out / 'ckpt'}", f"trainer.total_training_steps={steps}",
            f"hydra.run.dir={out / 'hydra'}", *overrides]


def grpo_command(model: Path, data: Path, out: Path, steps: int, rollouts: int,
                 *overrides: str) -> list[str]:
    """``steps`` GRPO steps from ``model`` on ``data/rl.parquet`` (``rollouts`` per prompt)
    into ``out/ckpt``, dumping every step's rollouts into ``out/rollouts``."""
    return [sys.executable, "-m", "msagent_training.grpo", f"--config-path={CONFIGS}",
            "--config-name=grpo_cpu", f"data.train_files={data / 'rl.parquet'}",
            f"data.val_files={data / 'rl.parquet'}", f"actor_rollout_ref.model.path={model}",
            f"actor_rollout_ref.rollout.multi_turn.tool_config_path={CONFIGS}/tools/litemedsam_cpu.yaml",
            f"actor_rollout_ref.rollout.agent.agent_loop_config_path={CONFIGS}/agent_loop.yaml",
            f"actor_rollout_ref.rollout.n={rollouts}", f"trainer.total_training_steps={steps}",
            f"trainer.default_local_dir={out / 'ckpt'}", f"trainer.rollout_data_dir={out / 'rollouts'}",
            f"hydra.run.dir={out / 'hydra'}", *overrides]


@attrs.frozen
class RunResult:
    """What :func:`run` saw: exit status (None when killed at the time limit), log, seconds."""

    returncode: int | None
    log: str
    seconds: float


def run(command: list[str], log_path: Path, *, cwd: Path, timeout: float) -> RunResult:
    """Run ``command`` with :data:`ENV`, its output into ``log_path``; at ``timeout`` seconds
    kill its whole process group (torchrun's trainer and Ray's processes outlive a killed
    parent otherwise) and report ``returncode=None``."""
    start = time.monotonic()
    with open(log_path, "w") as sink:
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **ENV}, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
    return RunResult(code, Path(log_path).read_text(errors="replace"), time.monotonic() - start)
