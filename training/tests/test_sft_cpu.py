"""Real SFT steps (``SFT_STEPS``) through verl's SFTTrainer on the CPU platform
(configs/sft_cpu.yaml): the loss falls clearly on a fixed small batch, the weights change, the
saved Hugging Face checkpoint loads into msagent's ``qwen`` policy and runs an episode with
LiteMedSAM, and, sampled at temperature 1, it makes a valid tool call in some first replies and
not in others — what the GRPO test starts from.

The tiny random Qwen3-VL has the real vocabulary (151,936 rows), so a step is dominated by
the logits; the batch is two expert trajectories at 256 px policy images (64 tokens each),
one step per epoch, so every step sees the same batch. About 5½ minutes on a quiet 2-core
machine.
"""

from __future__ import annotations

import numpy as np

from msagent_training.testing import IMAGE_SIZE, SFT_STEPS


def test_loss_falls_clearly(sft_run):
    _, _, _, losses = sft_run
    assert len(losses) == SFT_STEPS
    assert losses[-1] < 0.8 * losses[0], losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 1.0, losses


def test_weights_change(sft_run):
    from safetensors.torch import load_file

    root, model, _, _ = sft_run
    before = load_file(model / "model.safetensors")
    after = load_file(root / "ckpt" / f"global_step_{SFT_STEPS}" / "huggingface" / "model.safetensors")
    assert set(before) == set(after)
    changed = {name: (after[name].float() != before[name].float()).float().mean().item()
               for name in before}
    assert sum(changed.values()) / len(changed) > 0.5, changed
    unchanged = [name for name, fraction in changed.items() if fraction == 0]
    assert unchanged == [], unchanged  # every tensor got gradient steps


def test_checkpoint_runs_an_episode_in_the_qwen_policy(sft_run, cases, segmenter):
    import msagent

    root, _, _, _ = sft_run
    path = root / "ckpt" / f"global_step_{SFT_STEPS}" / "huggingface"
    policy = msagent.load_policy("qwen", model=str(path), device="cpu", dtype="float32",
                                 max_new_tokens=24, image_size=IMAGE_SIZE)
    case = cases[0]
    trajectory = msagent.Agent(policy, segmenter, max_turns=2).run(case.image, case.target,
                                                                   case.ground_truth)
    assert trajectory.steps and all(isinstance(step.raw_text, str) for step in trajectory.steps)
    assert trajectory.stop_reason is not None


def test_sampled_replies_are_sometimes_valid(sft_run):
    from msagent_training.probe import valid_call_rate

    root, _, data, _ = sft_run
    result = valid_call_rate(root / "ckpt" / f"global_step_{SFT_STEPS}" / "huggingface",
                             data / "rl.parquet", samples=8, temperature=1.0, seed=0)
    print(f"\nvalid-call rate at T=1 after {SFT_STEPS} SFT steps: {result.rate:.3f} "
          f"({result.mixed_prompts} of {len(result.kinds)} prompts mixed)")
    assert 0.0 < result.rate < 1.0, result.kinds
