"""KV reuse in the qwen policy: tokens prefilled per episode and wall time per turn.

Runs the same 5-turn episode with ``reuse_kv=True`` and ``reuse_kv=False`` and reports, for
each, the tokens prefilled over the episode divided by the final context length (goal with
reuse: ≤ 1.2), and the prefill / total wall time of every turn. The model answers freely
(greedy); each of its replies is then recorded as accepted with a scripted action and mask,
so every turn adds an overlay image as in a real episode.

By default a tiny random-weight Qwen3-VL checkpoint (real tokenizer, real 512×512 image
tokens) is built in a temporary directory; ``--model`` points at a real checkpoint instead.

    python plugins/msagent-qwen/benchmarks/bench_qwen_kv.py [--family qwen2_5_vl]
        [--model DIR] [--device cuda] [--turns 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import msagent
from msagent import protocol
from msagent.policies.base import Episode
from msagent.types import Action, Step


def phantom(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - size / 2) / (size / 4)) ** 2 + ((xx - size / 2) / (size / 3)) ** 2 <= 1
    gray = np.where(mask, 190, 50).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2), mask


def run_episode(policy, turns: int, episode_id: str) -> list[dict]:
    image, mask = phantom()
    episode = Episode(episode_id, image, "bright ellipse", turns)
    usages = []
    for turn in range(turns):
        cpu = time.process_time()  # CPU seconds of this process: robust to other jobs' load
        reply = policy.act(episode)
        usages.append({**reply.usage, "cpu_s": time.process_time() - cpu})
        kind = "add_bbox" if turn == 0 else "add_point"
        args = {"bbox_2d": [200, 200, 800, 800]} if turn == 0 else \
            {"point_2d": [500, 300 + 40 * turn], "point_type": "positive"}
        step_mask = mask.copy()
        step_mask[: 10 * turn] = False
        episode.steps.append(Step(turn, reply.text, Action(kind, args), mask=step_mask, score=1.0))
    policy.end_episode(episode)
    final = usages[-1]["context_tokens"] + usages[-1]["completion_tokens"]
    for usage in usages:
        usage["final_context"] = final
    return usages


def summarize(usages: list[dict]) -> dict:
    prefilled = sum(u["prompt_tokens"] for u in usages)
    final = usages[-1]["final_context"]
    return {"prefilled_tokens": prefilled, "final_context_tokens": final,
            "prefill_ratio": prefilled / final,
            "prefill_s_per_turn": [round(u["prefill_s"], 4) for u in usages],
            "latency_s_per_turn": [round(u["latency_s"], 4) for u in usages],
            "cpu_s_per_turn": [round(u["cpu_s"], 4) for u in usages],
            "prompt_tokens_per_turn": [u["prompt_tokens"] for u in usages],
            "episode_s": sum(u["latency_s"] for u in usages)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="qwen3_vl", choices=("qwen3_vl", "qwen2_5_vl"))
    parser.add_argument("--model", help="a checkpoint directory (default: a tiny random one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="episodes per setting (best kept)")
    parser.add_argument("--hidden", type=int, default=64, help="tiny model: LLM hidden size")
    parser.add_argument("--layers", type=int, default=2, help="tiny model: LLM layers")
    parser.add_argument("--vision-hidden", type=int, default=32, help="tiny model: vision width")
    parser.add_argument("--vision-depth", type=int, default=2, help="tiny model: vision blocks")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from msagent_qwen import tiny

            model = str(tiny.save_tiny_checkpoint(
                Path(tmp) / args.family, args.family, hidden=args.hidden, layers=args.layers,
                vision_hidden=args.vision_hidden, vision_depth=args.vision_depth))
        results = {}
        for reuse in (True, False):
            policy = msagent.load_policy("qwen", model=model, device=args.device, dtype=args.dtype,
                                         reuse_kv=reuse, max_new_tokens=args.max_new_tokens)
            run_episode(policy, 1, "warmup")
            runs = [summarize(run_episode(policy, args.turns, f"bench{i}"))
                    for i in range(args.repeats)]
            results["reuse" if reuse else "no_reuse"] = min(runs, key=lambda r: r["episode_s"])
    import torch

    report = {"torch_threads": torch.get_num_threads(), "family": args.family,
              "model": args.model or f"tiny random (hidden {args.hidden}, {args.layers} layers, "
                                      f"vision {args.vision_hidden}x{args.vision_depth})",
              "device": args.device, "turns": args.turns, "image_size": protocol.POLICY_IMAGE_SIZE, **results}
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return report


def print_report(report: dict) -> None:
    print(f"{report['family']} ({report['model']}) on {report['device']}, {report['turns']} turns")
    for name in ("reuse", "no_reuse"):
        r = report[name]
        print(f"  {name:<9} prefilled {r['prefilled_tokens']:>6} / final context "
              f"{r['final_context_tokens']:>5} = {r['prefill_ratio']:.2f}; episode {r['episode_s']:.2f} s")
        print(f"            prompt tokens per turn {r['prompt_tokens_per_turn']}")
        print(f"            prefill s per turn     {r['prefill_s_per_turn']}")
        print(f"            turn s                 {r['latency_s_per_turn']}")
        print(f"            turn CPU s             {r['cpu_s_per_turn']}")


if __name__ == "__main__":
    main()
