"""IMIS-Net backbone cost on CPU with random weights in the official layout (no download).

Reports wall time and process CPU time (the latter is steadier on a shared machine):
1. one image encode (ViT-B at 1024 px);
2. one decode (box; box + click + previous logits; with a text prompt), and the one-off
   CLIP text embedding;
3. decode_batch of 4 same-structure prompt sets vs 4 single decodes;
4. the decode-only cost of a 5-turn episode (box, then 4 clicks with accumulated prompts and
   fed-back logits) relative to one encode.
"""

from __future__ import annotations

import argparse
import statistics
import string
import tempfile
import time
from pathlib import Path

import torch

import msagent
from msagent.testing import make_phantom
from msagent.types import BBox, Point, Prompts


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall s, CPU s) of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for char in string.ascii_lowercase + ".":
        vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": 49406, "<|endoftext|>": 49407})
    return CLIPTokenizer(vocab=vocab, merges=[])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="encodes to time (median)")
    args = parser.parse_args()
    from msagent_imisnet.model import build_imisnet

    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "IMISNet-B.pth"
        torch.manual_seed(0)
        torch.save(build_imisnet().state_dict(), path)
        load_wall, load_cpu = timed(lambda: msagent.load_backbone(
            "imisnet", checkpoint=str(path), device="cpu", tokenizer=tiny_tokenizer()), 1)
        seg = msagent.load_backbone("imisnet", checkpoint=str(path), device="cpu",
                                     tokenizer=tiny_tokenizer())
    print(f"build + strict load of 527 tensors: {load_wall:.2f} s wall ({load_cpu:.2f} s CPU)")
    image, _ = make_phantom(height=384, width=512, center=(190, 260), radii=(90, 140))
    encode = timed(lambda: seg.encode_image(image), args.repeats)
    emb = seg.encode(image)
    box = Prompts(box=BBox(110, 90, 410, 290))
    first = seg.decode(emb, box)
    refine = box.add(Point(260, 190))
    text_once = timed(lambda: seg.model.embed_text(torch.tensor([[49406] + [5] * 10 + [49407]])), 3)
    cases = {"box": lambda: seg.decode(emb, box),
             "box + click + logits": lambda: seg.decode(emb, refine, first.low_res_logits),
             "box + text (cached)": lambda: seg.decode(emb, box, text="liver")}
    print(f"encode 1 image: {encode[0]:.2f} s wall ({encode[1]:.2f} s CPU)")
    decode = {}
    for name, fn in cases.items():
        decode[name] = timed(fn, 7)
        print(f"decode {name}: {decode[name][0] * 1000:.0f} ms wall "
              f"({decode[name][1] * 1000:.0f} ms CPU)")
    print(f"CLIP text embedding (once per target): {text_once[0] * 1000:.0f} ms wall")
    boxes = [Prompts(box=BBox(110 + 10 * i, 90, 410, 290)) for i in range(4)]
    batch = timed(lambda: seg.decode_batch(emb, boxes), 3)
    singles = timed(lambda: [seg.decode(emb, p) for p in boxes], 3)
    print(f"decode_batch of 4: {batch[0]:.2f} s vs 4 single decodes {singles[0]:.2f} s "
          f"-> {singles[0] / batch[0]:.2f}x")

    def five_turns():
        prompts, logits = box, None
        for turn in range(5):
            if turn:
                prompts = prompts.add(Point(180 + 40 * turn, 150 + 20 * turn, turn % 2 == 1))
            logits = seg.decode(emb, prompts, logits, text="liver").low_res_logits

    turns = timed(five_turns, 3)
    print(f"5-turn decode-only: {turns[0]:.2f} s wall ({turns[1]:.2f} s CPU) = "
          f"{turns[0] / encode[0]:.2f}x one encode wall ({turns[1] / encode[1]:.2f}x CPU)")


if __name__ == "__main__":
    main()
