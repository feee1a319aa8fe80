"""Two real GRPO steps through unmodified verl on the CPU (``python -m msagent_training.grpo``,
configs/grpo_cpu.yaml), from the CPU SFT run's checkpoint (the ``sft_run`` fixture).

Everything is read from the run's own log and files: multi-turn episodes under Ray whose tool
calls ran LiteMedSAM; msagent's reward and its breakdown in every step's metrics, varying within
a group; non-zero advantages and gradients; the rollout engine's log-probs against the actor's;
the actor's weights changed, and after the last sync the ``hf`` server's weights (SHA-256 it
logs) equal the saved Hugging Face checkpoint's; that checkpoint drives the ``qwen`` policy.
About 3 minutes on a quiet 2-core machine: Ray's start-up, then ~1 minute a step, most of it
the actor's full-vocabulary logits.
"""

from __future__ import annotations

import json
import re

import pytest

from msagent_training.cpu_runs import grpo_command, run
from msagent_training.metrics import console_steps
from msagent_training.testing import IMAGE_SIZE, SFT_STEPS

STEPS = 2
ROLLOUTS = 4  # per prompt: one GRPO group
DIGEST = re.compile(r"hf rollout weights updated: step=(\S+) tensors=\d+ sha256=([0-9a-f]{64})")
BREAKDOWN = ("score", "format", "quality", "penalty", "bonus", "turns", "iou", "dice")


@pytest.fixture(scope="module")
def grpo_run(sft_run):
    root, _, data, _ = sft_run
    sft_model = root / "ckpt" / f"global_step_{SFT_STEPS}" / "huggingface"
    out = root / "grpo"
    command = grpo_command(sft_model, data, out, STEPS, ROLLOUTS,
                           "actor_rollout_ref.rollout.custom.weights_digest=true")
    result = run(command, root / "grpo.log", cwd=root, timeout=2400)
    log, seconds = result.log, result.seconds
    assert result.returncode == 0, log[-8000:]
    steps = console_steps(log)
    keys = ("reward/score/mean", "reward/groups_with_variance", "critic/advantages/max",
            "actor/grad_norm", "episode/valid_call_rate", "episode/segmenter_calls",
            "episode/replies/max", "training/rollout_probs_diff_max", "timing_s/step")
    print(f"\nCPU GRPO: {STEPS} steps in {seconds:.0f} s")
    for number, values in sorted(steps.items()):
        print(f"  step {number}: " + ", ".join(f"{k}={values.get(k, float('nan')):.4g}" for k in keys))
    return out, sft_model, log, steps


def test_every_step_ran_and_logged_msagents_reward(grpo_run):
    _, _, _, steps = grpo_run
    assert sorted(steps) == list(range(1, STEPS + 1))
    for values in steps.values():
        for key in BREAKDOWN:
            assert {f"reward/{key}/mean", f"reward/{key}/min", f"reward/{key}/max"} <= set(values)
        # the reward verl trained on is msagent's score
        assert values["critic/score/mean"] == pytest.approx(values["reward/score/mean"], abs=1e-6)


def test_multi_turn_episodes_ran_litemedsam_under_ray(grpo_run):
    out, _, _, steps = grpo_run
    assert sum(v["episode/segmenter_calls"] for v in steps.values()) > 0
    assert max(v["episode/replies/max"] for v in steps.values()) > 1
    dumped = [json.loads(line) for path in sorted((out / "rollouts").glob("*.jsonl"))
              for line in path.read_text().splitlines()]
    assert len(dumped) == STEPS * 2 * ROLLOUTS  # train_batch_size 2 prompts x n rollouts
    assert any("<tool_call>" in row["output"] for row in dumped)


def test_rewards_vary_within_a_group_and_the_actor_learns_from_them(grpo_run):
    _, _, _, steps = grpo_run
    assert max(v["reward/groups_with_variance"] for v in steps.values()) > 0
    assert any(v["critic/advantages/max"] > 0 or v["critic/advantages/min"] < 0 for v in steps.values())
    assert any(v["actor/grad_norm"] > 0 for v in steps.values())


def test_rollout_log_probs_agree_with_the_actors(grpo_run):
    _, _, _, steps = grpo_run
    # verl compares the engine's log-probs of every response token with the actor's own
    for values in steps.values():
        assert values["rollout_corr/log_ppl_abs_diff"] < 1e-3  # log-perplexity, per sequence
        assert values["training/rollout_actor_probs_pearson_corr"] > 0.999
        assert values["training/rollout_probs_diff_max"] < 1e-2


def test_weights_changed_and_the_server_holds_the_saved_checkpoint(grpo_run):
    import torch
    import transformers
    from safetensors.torch import load_file

    from msagent_training.hf_server import weights_digest

    out, sft_model, log, _ = grpo_run
    saved = out / "ckpt" / f"global_step_{STEPS}" / "actor" / "huggingface"
    before, after = load_file(sft_model / "model.safetensors"), load_file(saved / "model.safetensors")
    assert set(before) == set(after)
    assert any(not torch.equal(before[name].float(), after[name].float()) for name in before)
    syncs = DIGEST.findall(log)
    assert [step for step, _ in syncs][-1] == str(STEPS)  # the sync after the last step
    model = transformers.AutoModelForImageTextToText.from_pretrained(saved, dtype=torch.float32)
    assert syncs[-1][1] == weights_digest(model.state_dict().items())


def test_the_grpo_checkpoint_runs_an_episode_in_the_qwen_policy(grpo_run, cases, segmenter):
    import msagent

    out, _, _, _ = grpo_run
    path = out / "ckpt" / f"global_step_{STEPS}" / "actor" / "huggingface"
    policy = msagent.load_policy("qwen", model=str(path), device="cpu", dtype="float32",
                                 max_new_tokens=48, image_size=IMAGE_SIZE)
    case = cases[0]
    trajectory = msagent.Agent(policy, segmenter, max_turns=2).run(case.image, case.target,
                                                                   case.ground_truth)
    assert trajectory.steps and trajectory.stop_reason is not None
