"""CPU cost of the ``sam3`` backbone with random weights: one encode (the shared ViT and the
tracker's neck), one tracker decode (a box), one concept proposal (detector neck, text encoder,
detector) and one propagation step per slice, on the reduced test configuration and, with
``--full``, on the full default configuration (≈ 860 M parameters, ≈ 3.5 GB in float32).

    tox exec -e py311 -- python benchmarks/bench_backbone_sam3.py [--full] [--repeat N]

Reports CPU seconds (process time: all threads together) and wall seconds. Needs
open-clip-torch (the tokenizer's BPE merges). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import msagent
from msagent.backbones import BBox, Prompts, Seed, SliceStack
from msagent.testing import make_phantom, make_tube


def timed(fn, repeat: int):
    cpu, wall, out = [], [], None
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return float(np.median(cpu)), float(np.median(wall)), out


def bench(checkpoint: Path, repeat: int, label: str) -> None:
    seg = msagent.load_backbone("sam3", checkpoint=str(checkpoint), device="cpu", threshold=0.0)
    image, _ = make_phantom(height=200, width=300, center=(90, 170), radii=(45, 70))
    images = []
    for i in range(repeat):
        copy = image.copy()
        copy[0, 0] = i  # a new image each time: no cache hit
        images.append(copy)
    it = iter(images)
    cpu, wall, embedding = timed(lambda: seg.encode(next(it)), repeat)
    print(f"{label}: encode   {cpu:7.2f} CPU-s  {wall:7.2f} s")
    cpu, wall, _ = timed(lambda: seg.decode(embedding, Prompts(box=BBox(120, 50, 220, 130))),
                         repeat)
    print(f"{label}: decode   {cpu:7.2f} CPU-s  {wall:7.2f} s")
    texts = iter([f"bright ellipse {i}" for i in range(repeat)])  # no text-cache hit
    cpu, wall, _ = timed(lambda: seg.propose(embedding, next(texts)), repeat)
    print(f"{label}: propose  {cpu:7.2f} CPU-s  {wall:7.2f} s")
    volume, mask = make_tube(count=6, size=(40, 80))
    stack = SliceStack(np.clip(volume, 0, 255).astype(np.uint8))
    propagator = seg.native_propagator(stack)
    propagator.add_seed(3, Seed(mask=mask[3]))
    for index in range(stack.count):  # encode first: time the tracking alone
        propagator.frame_features(index)
    cpu, wall, _ = timed(propagator.propagate, 1)
    steps = propagator.decodes
    print(f"{label}: track    {cpu / steps:7.2f} CPU-s  {wall / steps:7.2f} s per slice "
          f"({steps} steps, encodes excluded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="also the full configuration")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from msagent_sam3.tiny import random_model, save_checkpoint
    from transformers import Sam3VideoConfig
    from transformers.utils import logging

    logging.set_verbosity_error()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as folder:
        bench(save_checkpoint(Path(folder) / "tiny"), args.repeat, "reduced (224 px)")
    if args.full:
        with tempfile.TemporaryDirectory() as folder:
            model = random_model(Sam3VideoConfig())
            path = save_checkpoint(Path(folder) / "full", model)
            del model
            bench(path, max(1, args.repeat - 2), "full (1008 px)")


if __name__ == "__main__":
    main()
