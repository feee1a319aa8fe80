"""Shared fixtures: the real LiteMedSAM on CPU, phantom cases, expert trajectories, a tiny
Qwen3-VL model directory (real tokenizer and processor, no weights), scripted policies."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")


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


class ScriptedPolicy:
    """Replies with fixed texts in order (built lazily to avoid importing msagent here)."""

    def __new__(cls, replies):
        import msagent

        class _Scripted(msagent.Policy):
            name = "scripted"

            def __init__(self, replies):
                self.replies = list(replies)
                self.turn = 0

            def act(self, episode):
                reply = self.replies[min(self.turn, len(self.replies) - 1)]
                self.turn += 1
                return msagent.Reply(reply)

        return _Scripted(replies)


def agent_data(request_id: str):
    """The parts of verl's AgentData the tools read."""
    return SimpleNamespace(request_id=request_id, extra_fields={})


#: a fixed episode in the 0–999 frame: box, positive click, negative click, stop
_CALL = '{}\n<tool_call>\n{{"name": "{}", "arguments": {}}}\n</tool_call>'
SCRIPT = tuple(_CALL.format(text, name, args) for text, name, args in (
    ("Box the ellipse.", "add_bbox", '{"bbox_2d": [180, 150, 820, 860]}'),
    ("Grow it.", "add_point", '{"point_2d": [500, 500], "point_type": "positive"}'),
    ("Trim the corner.", "add_point", '{"point_2d": [20, 30], "point_type": "negative"}'),
    ("Done.", "stop_action", "{}"),
))


@pytest.fixture()
def script():
    return SCRIPT


def png_array(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


SFT_STEPS = 60  # enough for valid calls in some sampled replies, not all (probe.py)
IMAGE_SIZE = 256
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


