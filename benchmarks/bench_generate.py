"""Hybrid trajectory generation throughput with LiteMedSAM on CPU (real weights, MNI152 slices).

Reports:
1. a local run with one torch thread: trajectories per minute (wall) and per CPU-minute of
   the process (= per core; steadier on a shared machine);
2. Ray with 1 and with 2 local workers (one segmenter per worker, one thread each), timed
   after the workers have loaded their models: trajectories per minute and the speed-up
   (goal ≥ 1.7× on 2 cores), with the workers' CPU utilisation and CPU seconds per
   trajectory — on a shared machine, utilisation below 100% means the workers waited for a
   core, and equal CPU seconds per trajectory mean that Ray itself added no work.
The cases are axial MNI152 slices (117×99) with "brain", "white matter" and "gray matter".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import msagent
from msagent.datasets import make_mni152_dataset, open_dataset
from msagent.generation import HybridGenerator, generate
from msagent.generation.job import make_manifest
from msagent.generation.ray_runner import run_shards, start_workers, stop_workers

OPTIONS = {"seed": 0}  # the generator's documented defaults
SHARD = 3  # one MNI slice (3 targets, one image) per shard: each image is encoded by one worker


def local_run(dataset, tmp: Path) -> tuple[float, float, int]:
    """(wall s, process CPU s, trajectories) of a one-thread local run, model preloaded."""
    segmenter = msagent.load_backbone("litemedsam", device="cpu")
    wall, cpu = time.perf_counter(), time.process_time()
    summary = generate(dataset, tmp / "local", backbone=segmenter, generator_options=OPTIONS,
                       shard_size=SHARD, threads=1, overlays=True, progress=False)
    return time.perf_counter() - wall, time.process_time() - cpu, summary.trajectories


def ray_run(dataset, workers: int) -> tuple[float, int, float]:
    """(wall s, trajectories, CPU utilisation of the workers) on ``workers`` local Ray
    workers, timed after start-up. Utilisation = workers' CPU time / (workers × wall): near 1
    when each worker had a core to itself."""
    import ray

    generator = HybridGenerator(**OPTIONS)
    manifest = make_manifest(dataset, dataset, "litemedsam", {"device": "cpu"}, generator, "hybrid",
                             None, None, SHARD, 1, True)
    shards = [(i, i * SHARD, dataset.refs[i * SHARD:(i + 1) * SHARD])
              for i in range(-(-len(dataset) // SHARD))]
    actors, started = start_workers(manifest, generator, workers=workers, threads=1)
    try:
        cpu = sum(ray.get([a.cpu_seconds.remote() for a in actors]))
        wall = time.perf_counter()
        count = sum(len(result.rows) for result in run_shards(actors, shards))
        wall = time.perf_counter() - wall
        cpu = sum(ray.get([a.cpu_seconds.remote() for a in actors])) - cpu
        return wall, count, cpu / (workers * wall)
    finally:
        stop_workers(actors, started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=6, help="MNI152 slices (3 cases each)")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("MSAGENT_LOAD_PLUGINS", "litemedsam")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slices = tuple(range(25, 25 + 5 * args.slices, 5))
        dataset = open_dataset(make_mni152_dataset(tmp / "mni", slices=slices))
        print(f"{len(dataset)} cases; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        wall, cpu, count = local_run(dataset, tmp)
        print(f"local, 1 thread: {count} trajectories in {wall:.1f} s wall / {cpu:.1f} s CPU -> "
              f"{60 * count / wall:.1f} per minute, {60 * count / cpu:.1f} per CPU-minute (per core)")
        if args.skip_ray:
            return
        rates = {}
        for workers in (1, 2):
            wall, count, used = ray_run(dataset, workers)
            rates[workers] = 60 * count / wall
            print(f"ray, {workers} worker(s): {count} trajectories in {wall:.1f} s -> "
                  f"{rates[workers]:.1f} per minute; workers' CPU utilisation {used:.0%}, "
                  f"{used * workers * wall / count:.2f} CPU-s per trajectory")
        print(f"ray speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x (goal >= 1.7x)")


if __name__ == "__main__":
    main()
