"""Shared fixtures: the real LiteMedSAM on CPU, phantom cases, expert trajectories, a tiny
Qwen3-VL model directory (real tokenizer and processor, no weights), scripted policies."""

from __future__ import annotations

import os
import re

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")


from msagent_training.testing import IMAGE_SIZE, SCRIPT, SFT_STEPS


@pytest.fixture(scope="session")
def segmenter():
    import msagent

    return msagent.load_backbone("litemedsam", device="cpu")


@pytest.fixture(scope="session")
def cases():
    from msagent_training.smoke_data import phantom_cases

    return phantom_cases(3)


@pytest.fixture(scope="session")
def expert_runs(cases, segmenter):
    from msagent_training.smoke_data import expert_trajectories

    return expert_trajectories(cases, segmenter, max_turns=3)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from msagent_training.tiny import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3vl"), weights=False)


@pytest.fixture(scope="session")
def tiny_processor(tiny_model_dir):
    from verl.utils.tokenizer import hf_processor, hf_tokenizer

    return hf_tokenizer(str(tiny_model_dir)), hf_processor(str(tiny_model_dir))


@pytest.fixture(scope="session")
def parquet_dir(tmp_path_factory, cases, expert_runs):
    from msagent_training.data import write_rl_parquet, write_sft_parquet

    out = tmp_path_factory.mktemp("parquet")
    write_rl_parquet(cases, out / "rl.parquet", progress=False)
    write_sft_parquet(expert_runs, out / "sft.parquet", progress=False)
    return out


@pytest.fixture()
def script():
    return SCRIPT


LOSS = re.compile(r"step:(\d+) - .*?train/loss:([0-9.eE+-]+)")


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory):
    from msagent_training.smoke_data import write_smoke_data
    from msagent_training.tiny import build_tiny_qwen3_vl

    root = tmp_path_factory.mktemp("sft-cpu")
    model = build_tiny_qwen3_vl(root / "model", seed=0)
    data = write_smoke_data(str(root / "data"), cases=2, max_turns=2, policy_image_size=IMAGE_SIZE)
    from msagent_training.cpu_runs import run, sft_command

    result = run(sft_command(model, data, root, SFT_STEPS), root / "sft.log", cwd=root, timeout=3600)
    assert result.returncode == 0, result.log[-6000:]
    losses = {int(step): float(loss) for step, loss in LOSS.findall(result.log)}
    print(f"\nCPU SFT: {SFT_STEPS} steps in {result.seconds:.0f} s; loss per step: "
          + ", ".join(f"{losses[s]:.3f}" for s in sorted(losses)))
    return root, model, data, [losses[s] for s in sorted(losses)]


