"""How often a policy checkpoint makes a valid tool call on the first turn of RL prompts.

GRPO learns only from groups whose rewards differ, and msagent's reward is 0 for every invalid
reply: a policy that never (or always) makes a valid call on a prompt gives that group zero
advantages. :func:`valid_call_rate` samples first replies the way the rollout does — the RL
rows' own conversation, verl's chat-template rendering, the ``hf`` engine's sampler
(:class:`~msagent_training.hf_server.HFGenerationServer`) — and parses them with msagent's
protocol. ``python -m msagent_training.probe MODEL RL.parquet`` prints the rate.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import attrs

from .episode import INVALID, call_kind


@attrs.frozen
class ProbeResult:
    """``valid[i][j]``: whether sample j of prompt i made a valid call; ``kinds`` likewise."""

    kinds: tuple[tuple[str, ...], ...]
    replies: tuple[tuple[str, ...], ...]

    @property
    def rate(self) -> float:
        flat = [k for row in self.kinds for k in row]
        return sum(k != INVALID for k in flat) / max(1, len(flat))

    @property
    def mixed_prompts(self) -> int:
        """Prompts with both valid and invalid samples (GRPO groups with reward variance)."""
        return sum(1 for row in self.kinds if len({k == INVALID for k in row}) == 2)


def chat_messages(prompt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """verl's RLHFDataset form of a row's messages: ``<image>`` placeholders become image parts."""
    messages = []
    for message in prompt:
        content = message["content"]
        if isinstance(content, str) and "<image>" in content:
            parts: list[dict[str, Any]] = []
            for i, text in enumerate(content.split("<image>")):
                if i:
                    parts.append({"type": "image"})
                if text:
                    parts.append({"type": "text", "text": text})
            content = parts
        messages.append({"role": message["role"], "content": content})
    return messages


def first_turn_inputs(row: dict[str, Any], processor) -> tuple[list[int], list[Any]]:
    """(prompt ids with expanded image-pad runs, images) of an RL row's first turn."""
    from PIL import Image

    images = [Image.open(io.BytesIO(image["bytes"])).convert("RGB") for image in row["images"]]
    text = processor.apply_chat_template(chat_messages(row["prompt"]), add_generation_prompt=True,
                                         tokenize=False)
    ids = processor(text=[text], images=images or None, return_tensors="pt")["input_ids"][0]
    return ids.tolist(), images


def valid_call_rate(model_dir: str | Path, rl_parquet: str | Path, *, samples: int = 8,
                    temperature: float = 1.0, max_tokens: int = 128, seed: int = 0,
                    max_prompts: int | None = None) -> ProbeResult:
    """Sample ``samples`` first replies per RL prompt at ``temperature`` (CPU, fp32)."""
    import pyarrow.parquet as pq
    import torch
    import transformers

    from .hf_rollout import check_model_path
    from .hf_server import HFGenerationServer

    check_model_path(str(model_dir))
    if not Path(rl_parquet).is_file():
        raise FileNotFoundError(f"{rl_parquet} is not a file; write one with `python -m "
                                "msagent_training.smoke_data` or `msagent export --format verl-rl`")
    rows = pq.read_table(str(rl_parquet)).to_pylist()[:max_prompts]
    processor = transformers.AutoProcessor.from_pretrained(str(model_dir))
    model = transformers.AutoModelForImageTextToText.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa").eval()
    server = HFGenerationServer(model, processor, prompt_length=4096, response_length=max_tokens)
    tokenizer = processor.tokenizer
    params = {"temperature": temperature, "top_p": 1.0, "top_k": -1, "logprobs": False}
    torch.manual_seed(seed)
    kinds, replies = [], []
    for row in rows:
        ids, images = first_turn_inputs(row, processor)
        texts = [tokenizer.decode(server.generate(ids, params, image_data=images).token_ids,
                                  skip_special_tokens=True) for _ in range(samples)]
        replies.append(tuple(texts))
        kinds.append(tuple(call_kind(text) for text in texts))
    return ProbeResult(kinds=tuple(kinds), replies=tuple(replies))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msagent_training.probe",
                                     description="Valid-call rate of sampled first replies.")
    parser.add_argument("model_dir")
    parser.add_argument("rl_parquet")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = valid_call_rate(args.model_dir, args.rl_parquet, samples=args.samples,
                             temperature=args.temperature, seed=args.seed)
    print(json.dumps({"rate": result.rate, "mixed_prompts": result.mixed_prompts,
                      "kinds": result.kinds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
