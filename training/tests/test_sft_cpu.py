"""Ten real SFT steps through verl's SFTTrainer on the CPU platform (configs/sft_cpu.yaml):
the loss falls clearly on a fixed small batch, the weights change, and the saved Hugging Face
checkpoint loads into msagent's ``qwen`` policy and runs an episode with LiteMedSAM.

The tiny random Qwen3-VL has the real vocabulary (151,936 rows), so a step is dominated by
the logits; the batch is two expert trajectories at 256 px policy images (64 tokens each),
one step per epoch, so every step sees the same batch. About 2–3 minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STEPS = 10
IMAGE_SIZE = 256
LOSS = re.compile(r"step:(\d+) - .*?train/loss:([0-9.eE+-]+)")


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    from msagent_training.smoke_data import write_smoke_data
    from msagent_training.tiny import build_tiny_qwen3_vl

    root = tmp_path_factory.mktemp("sft-cpu")
    model = build_tiny_qwen3_vl(root / "model", seed=0)
    data = write_smoke_data(str(root / "data"), cases=2, max_turns=2, policy_image_size=IMAGE_SIZE)
    env = {**os.environ, "VERL_PLATFORM": "cpu", "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
               "--nproc-per-node=1", "-m", "msagent_training.sft",
               f"--config-path={CONFIGS}", "--config-name=sft_cpu",
               f"data.train_files={data / 'sft.parquet'}", "data.train_batch_size=2",
               f"model.path={model}", f"trainer.default_local_dir={root / 'ckpt'}",
               f"trainer.total_training_steps={STEPS}", "hydra.run.dir=" + str(root / "hydra")]
    start = time.monotonic()
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                            timeout=900)
    seconds = time.monotonic() - start
    log = result.stdout + result.stderr
    (root / "sft.log").write_text(log)
    assert result.returncode == 0, log[-6000:]
    losses = {int(step): float(loss) for step, loss in LOSS.findall(log)}
    print(f"\nCPU SFT: {STEPS} steps in {seconds:.0f} s; loss per step: "
          + ", ".join(f"{losses[s]:.3f}" for s in sorted(losses)))
    return root, model, data, [losses[s] for s in sorted(losses)]


def test_loss_falls_clearly(sft_run):
    _, _, _, losses = sft_run
    assert len(losses) == STEPS
    assert losses[-1] < 0.8 * losses[0], losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 1.0, losses


def test_weights_change(sft_run):
    from safetensors.torch import load_file

    root, model, _, _ = sft_run
    before = load_file(model / "model.safetensors")
    after = load_file(root / "ckpt" / f"global_step_{STEPS}" / "huggingface" / "model.safetensors")
    assert set(before) == set(after)
    changed = {name: (after[name].float() != before[name].float()).float().mean().item()
               for name in before}
    assert sum(changed.values()) / len(changed) > 0.5, changed
    unchanged = [name for name, fraction in changed.items() if fraction == 0]
    assert unchanged == [], unchanged  # every tensor got gradient steps


def test_checkpoint_runs_an_episode_in_the_qwen_policy(sft_run, cases, segmenter):
    import msagent

    root, _, _, _ = sft_run
    path = root / "ckpt" / f"global_step_{STEPS}" / "huggingface"
    policy = msagent.load_policy("qwen", model=str(path), device="cpu", dtype="float32",
                                 max_new_tokens=24, image_size=IMAGE_SIZE)
    case = cases[0]
    trajectory = msagent.Agent(policy, segmenter, max_turns=2).run(case.image, case.target,
                                                                   case.ground_truth)
    assert trajectory.steps and all(isinstance(step.raw_text, str) for step in trajectory.steps)
    assert trajectory.stop_reason is not None
