"""Does GRPO learn? N steps of CPU GRPO from an SFT checkpoint on a fixed prompt set, one row per
step: mean reward and its breakdown, valid-call rate, final IoU, replies per episode, groups
with reward variance, step time.

    VERL_PLATFORM=cpu python training/scripts/grpo_curve.py OUT [--steps 20] [--sft-steps 60]
        [--sft MODEL_DIR --data DATA_DIR] [--rollouts 4] [--lr 1e-4]

Without ``--sft`` it builds the tiny Qwen3-VL, phantom data (LiteMedSAM expert trajectories,
256 px) and runs the CPU SFT first (configs/sft_cpu.yaml), as the CI fixture does. It writes
``OUT/curve.json`` (every step's metrics), ``OUT/curve.md`` (the table) and, when matplotlib is
installed, ``OUT/curve.png``; the run's logs stay in ``OUT``. Each step sees only 2 prompts x
4 rollouts, so the per-step numbers are noisy: the valid-call rate of 32 sampled first replies
per prompt (:mod:`msagent_training.probe`) before and after GRPO is the low-noise view, also in
``curve.md``. A benchmark, not a test: it
asserts nothing. ``--plot-only OUT`` redraws the figure from ``curve.json`` (in any environment
with matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

COLUMNS = (  # (metric, header)
    ("reward/score/mean", "reward"), ("reward/format/mean", "format"),
    ("reward/quality/mean", "quality"), ("reward/penalty/mean", "penalty"),
    ("reward/bonus/mean", "bonus"), ("episode/valid_call_rate", "valid calls"),
    ("episode/final_iou/mean", "final IoU"), ("episode/replies/mean", "replies"),
    ("reward/groups_with_variance", "groups w/ variance"), ("actor/grad_norm", "grad norm"),
    ("timing_s/step", "step s"),
)


def run(command: list[str], log: Path, cwd: Path) -> str:
    from msagent_training import cpu_runs

    print("$", " ".join(command[:6]), "...", flush=True)
    result = cpu_runs.run(command, log, cwd=cwd, timeout=6 * 3600)
    if result.returncode != 0:
        sys.exit(f"{command[2]} failed ({result.returncode}); see {log}:\n{result.log[-3000:]}")
    print(f"  done in {result.seconds:.0f} s ({log})", flush=True)
    return result.log


def prepare(out: Path, sft_steps: int) -> tuple[Path, Path]:
    """The tiny model, phantom data and a CPU SFT checkpoint (what the CI fixture builds)."""
    from msagent_training.cpu_runs import sft_command
    from msagent_training.smoke_data import write_smoke_data
    from msagent_training.tiny import build_tiny_qwen3_vl

    model = build_tiny_qwen3_vl(out / "model", seed=0)
    data = write_smoke_data(str(out / "data"), cases=2, max_turns=2, policy_image_size=256)
    run(sft_command(model, data, out / "sft", sft_steps), out / "sft.log", out)
    return out / "sft" / "ckpt" / f"global_step_{sft_steps}" / "huggingface", data


def grpo(out: Path, model: Path, data: Path, steps: int, rollouts: int, lr: float) -> str:
    from msagent_training.cpu_runs import grpo_command

    return run(grpo_command(model, data, out / "grpo", steps, rollouts,
                            f"actor_rollout_ref.actor.optim.lr={lr}", f"trainer.save_freq={steps}"),
               out / "grpo.log", out)


def probe(model: Path, data: Path, samples: int) -> dict:
    """The valid-call rate of ``samples`` sampled first replies per prompt (a low-noise view of
    what the per-step rewards, 8 trajectories each, show noisily)."""
    from msagent_training.probe import valid_call_rate

    result = valid_call_rate(model, data / "rl.parquet", samples=samples, seed=1)
    return {"rate": result.rate, "per_prompt": [sum(k != "invalid" for k in row) / len(row)
                                                for row in result.kinds]}


def table(steps: dict[int, dict[str, float]]) -> str:
    lines = ["| step | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---:|" + "---:|" * len(COLUMNS)]
    for number, values in sorted(steps.items()):
        cells = [f"{values[k]:.3f}" if k in values else "–" for k, _ in COLUMNS]
        lines.append(f"| {number} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = {int(k): v for k, v in json.loads((out / "curve.json").read_text())["steps"].items()}
    x = sorted(steps)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("reward/score/mean", "mean reward"), ("episode/valid_call_rate", "valid calls"),
                       ("episode/final_iou/mean", "final IoU")):
        axes[0].plot(x, [steps[s].get(key, float("nan")) for s in x], marker="o", label=label)
    axes[0].set_xlabel("GRPO step")
    axes[0].legend()
    axes[0].set_title("tiny Qwen3-VL + LiteMedSAM, CPU")
    axes[1].plot(x, [steps[s].get("episode/replies/mean", float("nan")) for s in x], marker="o",
                 label="replies per episode")
    axes[1].plot(x, [steps[s].get("reward/groups_with_variance", float("nan")) for s in x],
                 marker="o", label="groups with reward variance")
    axes[1].set_xlabel("GRPO step")
    axes[1].legend()
    figure.tight_layout()
    path = out / "curve.png"
    figure.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--sft", type=Path, help="an SFT Hugging Face checkpoint (skip the SFT run)")
    parser.add_argument("--data", type=Path, help="the folder with rl.parquet (with --sft)")
    parser.add_argument("--rollouts", type=int, default=4, help="rollouts per prompt (group size)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--probe-samples", type=int, default=32,
                        help="sampled first replies per prompt, before and after GRPO")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.plot_only:
        print(plot(out))
        return 0
    if os.environ.get("VERL_PLATFORM") != "cpu":
        sys.exit("run with VERL_PLATFORM=cpu (the CPU platform of msagent_training)")
    if (args.sft is None) != (args.data is None):
        sys.exit("--sft and --data go together")
    out.mkdir(parents=True, exist_ok=True)
    from msagent_training.metrics import console_steps

    model, data = (args.sft.resolve(), args.data.resolve()) if args.sft else prepare(out, args.sft_steps)
    steps = console_steps(grpo(out, model, data, args.steps, args.rollouts, args.lr))
    final = out / "grpo" / "ckpt" / f"global_step_{args.steps}" / "actor" / "huggingface"
    probes = {name: probe(path, data, args.probe_samples)
              for name, path in (("before", model), ("after", final))}
    (out / "curve.json").write_text(json.dumps({"settings": vars(args) | {"out": str(out),
                                                "sft": str(model), "data": str(data)},
                                                "steps": steps, "probe": probes}, indent=1, default=str))
    summary = (f"\nValid first replies at temperature 1 ({args.probe_samples} samples per prompt): "
               f"{probes['before']['rate']:.3f} before GRPO, {probes['after']['rate']:.3f} after.\n")
    (out / "curve.md").write_text(table(steps) + summary)
    print(table(steps) + summary)
    try:
        print(plot(out))
    except ImportError:
        print("matplotlib is not installed here: redraw with --plot-only OUT where it is")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
