"""Running generation shards on Ray (``pip install 'msagent[ray]'``).

Each Ray actor loads one segmenter (``threads`` CPUs, torch set to as many intra-op threads)
and the generator, then processes whole shards; the driver commits the results as they
arrive, so the files are the same as a local run's. Without an address a local cluster is
started (and shut down afterwards); with one, the cluster's workers must see the dataset
paths (a shared file system).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from msagent.errors import InvalidInput
from msagent.generation.shards import ShardResult, ShardWorker, torch_threads

log = logging.getLogger(__name__)
IN_FLIGHT_PER_WORKER = 2


class _RayShardWorker:
    """The actor body: one segmenter and one generator per Ray worker process."""

    def __init__(self, manifest: dict[str, Any], generator, threads: int | None) -> None:
        from msagent.plugins.loading import instance_of

        segmenter = instance_of("segmenter", manifest["backbone"], manifest["backbone_options"])
        generator.check_backbone(segmenter)
        self.threads = threads
        self.worker = ShardWorker(segmenter, generator, manifest["overlays"],
                                  manifest["backbone"], manifest["generator"])

    def ready(self) -> bool:
        return True

    def cpu_seconds(self) -> float:
        """CPU time of this worker process so far (for utilisation measurements)."""
        return time.process_time()

    def run(self, index: int, start: int, refs: Sequence) -> ShardResult:
        with torch_threads(self.threads):
            return self.worker.run(index, start, refs)


def _init(address: str | None, cpus: int) -> bool:
    """Connect to (or start) Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith("MSAGENT_")}
    options = {"include_dashboard": False, "log_to_driver": False,
               "runtime_env": {"env_vars": env} if env else None}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=cpus, **options)
    return True


def start_workers(manifest: dict[str, Any], generator, *, address: str | None = None,
                  workers: int | None = None, threads: int | None = 1,
                  at_most: int | None = None) -> tuple[list, bool]:
    """Start ``workers`` actors (default: the cluster's CPUs // threads, and no more than
    ``at_most``) and wait until each has loaded its segmenter. Returns (actors, whether Ray
    was started here)."""
    import ray

    per_worker = max(1, int(threads or 1))
    if workers is not None and workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}")
    local_cpus = workers * per_worker if workers else (os.cpu_count() or 1)
    started = _init(address, local_cpus)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // per_worker)
    workers = min(workers, at_most) if at_most else workers
    remote = ray.remote(num_cpus=per_worker)(_RayShardWorker)
    actors = [remote.remote(manifest, generator, threads) for _ in range(workers)]
    ray.get([actor.ready.remote() for actor in actors])
    log.info("started %d Ray worker(s), %d CPU(s) each", workers, per_worker)
    return actors, started


def stop_workers(actors: list, started: bool) -> None:
    import ray

    for actor in actors:
        ray.kill(actor)
    if started:
        ray.shutdown()


def run_shards(actors: list, shards: Sequence[tuple[int, int, Sequence]]) -> Iterator[ShardResult]:
    """Run (index, start, refs) shards on the actors, yielding results as they finish."""
    import ray

    queue = list(shards)
    pending: dict[Any, Any] = {}

    def submit(actor) -> None:
        if queue:
            index, start, refs = queue.pop(0)
            pending[actor.run.remote(index, start, list(refs))] = actor

    for actor in actors:
        for _ in range(IN_FLIGHT_PER_WORKER):
            submit(actor)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        actor = pending.pop(done[0])
        result = ray.get(done[0])
        submit(actor)
        yield result


def run_on_ray(shards: Sequence[tuple[int, int, Sequence]], manifest: dict[str, Any], generator,
               *, address: str | None = None, workers: int | None = None,
               threads: int | None = 1) -> Iterator[ShardResult]:
    """Start workers, run ``shards`` on them, stop them (and a Ray started here)."""
    if not shards:
        return
    actors, started = start_workers(manifest, generator, address=address, workers=workers,
                                    threads=threads, at_most=len(shards))
    try:
        yield from run_shards(actors, shards)
    finally:
        stop_workers(actors, started)
