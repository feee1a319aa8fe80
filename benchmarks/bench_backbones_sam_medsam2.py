"""Encode/decode cost of the ``sam``, ``sam2`` and ``medsam2`` backbones (random weights).

For each backbone the real architecture is built with random weights, saved in the official
checkpoint layout and loaded through ``msagent.load_backbone``; a phantom at the model's
native input size is encoded (uncached) and decoded. Printed per backbone: encode seconds,
one decode (box) in milliseconds, a 5-turn episode's decode-only time (box, then four
accumulated clicks, each fed the previous logits) and that episode's cost relative to one
encode — by wall clock and by this process's CPU time (steadier on a shared machine).

    python benchmarks/bench_backbones_sam_medsam2.py                # all, CPU
    python benchmarks/bench_backbones_sam_medsam2.py --backbones sam2,medsam2-512 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import msagent
from msagent.testing import make_phantom
from msagent.types import BBox, Point, Prompts

BACKBONES = ("sam", "sam2", "medsam2", "medsam2-512")


def random_checkpoint(backbone: str, folder: Path) -> tuple[str, dict, int]:
    """(registered name, load options, native input size) with a random-weight checkpoint."""
    torch.manual_seed(0)
    if backbone == "sam":
        from segment_anything import sam_model_registry

        path = folder / "sam_vit_b.pth"
        torch.save(sam_model_registry["vit_b"]().state_dict(), path)
        return "sam", {"checkpoint": path}, 1024
    from msagent_medsam2.model import build_model, medsam2_config

    size = 512 if backbone == "medsam2-512" else 1024
    path = folder / f"{backbone}.pt"
    torch.save({"model": build_model(medsam2_config(size)).state_dict()}, path)
    if backbone == "sam2":
        return "sam2", {"checkpoint": path}, size
    return "medsam2", {"checkpoint": path, "image_size": size}, size


def episode(size: int) -> list[Prompts]:
    """Box, then four clicks, accumulated as the agent sends them."""
    lo, hi = size // 4, 3 * size // 4
    prompts = [Prompts(box=BBox(lo, lo, hi, hi))]
    clicks = [Point(size // 2, size // 2), Point(lo + 5, lo + 5, False), Point(hi - 10, size // 2),
              Point(size // 2, hi - 10, False)]
    for click in clicks:
        prompts.append(prompts[-1].add(click))
    return prompts


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(backbone: str, device: str, repeats: int, folder: Path) -> dict[str, float]:
    name, options, size = random_checkpoint(backbone, folder)
    seg = msagent.load_backbone(name, device=device, **options)
    image = make_phantom(size, size, center=(size // 2, size // 2), radii=(size // 5, size // 4))[0]
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None

    def encode():
        seg.clear_cache()
        seg.encode(image)
        sync()

    def run_episode():
        logits = None
        for prompts in episode(size):
            logits = seg.decode(embedding, prompts, logits).low_res_logits
        sync()

    encodes = [timed(encode) for _ in range(repeats)]
    embedding = seg.encode(image)
    box = Prompts(box=BBox(size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    seg.decode(embedding, box)  # warm-up
    decodes = [timed(lambda: seg.decode(embedding, box)) for _ in range(max(3, repeats))]
    episodes = [timed(run_episode) for _ in range(max(3, repeats))]
    median = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
    return {"size": size, "encode_s": median(encodes, 0), "encode_cpu_s": median(encodes, 1),
            "decode_ms": 1e3 * median(decodes, 0), "episode_ms": 1e3 * median(episodes, 0),
            "ratio": median(episodes, 0) / median(encodes, 0),
            "ratio_cpu": median(episodes, 1) / median(encodes, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES),
                        help=f"comma-separated subset of {', '.join(BACKBONES)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="encodes per backbone (median)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads")
    print(f"{'backbone':<12} {'input':>6} {'encode s':>9} {'encode cpu-s':>13} {'decode ms':>10} "
          f"{'5-turn decode ms':>17} {'5-turn/encode':>14} {'(cpu time)':>11}")
    with tempfile.TemporaryDirectory() as folder:
        for backbone in args.backbones.split(","):
            r = bench(backbone.strip(), args.device, args.repeats, Path(folder))
            print(f"{backbone:<12} {r['size']:>6} {r['encode_s']:>9.2f} {r['encode_cpu_s']:>13.2f} "
                  f"{r['decode_ms']:>10.1f} {r['episode_ms']:>17.1f} {r['ratio']:>14.3f} "
                  f"{r['ratio_cpu']:>11.3f}", flush=True)


if __name__ == "__main__":
    main()
