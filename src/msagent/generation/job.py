"""``generate()``: datasets × backbone → a resumable, sharded trajectory set.

The job's identity (sources, split, limit, backbone and its options, generator and its
resolved options, shard size, threads, overlays, and a fingerprint of the case list) is the
manifest. A rerun with the same arguments finds the manifest, skips the committed shards and
computes the rest, so an interrupted run (even by SIGKILL) ends with exactly the files of an
uninterrupted one. ``threads`` (torch intra-op threads per segmenter) is part of the identity
because floating-point results depend on it; local and Ray runs with the same ``threads``
give identical files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from msagent._version import __version__
from msagent.backbones.segmenter import Segmenter
from msagent.datasets import Dataset, concat, open_dataset
from msagent.errors import InvalidInput
from msagent.generation.base import TrajectoryGenerator
from msagent.generation.records import MANIFEST, shard_paths
from msagent.generation.shards import (
    ShardWorker,
    commit,
    remove_stale_temporaries,
    shard_path,
    torch_threads,
)
from msagent.io.atomic import atomic_write, parquet_is_complete, read_json_file
from msagent.plugins.loading import instance_of, name_of

log = logging.getLogger(__name__)
FORMAT = "msagent-trajectories/1"


@attrs.frozen
class GenerateSummary:
    """The outcome of :func:`generate`."""

    out: Path
    cases: int
    shards: int
    shards_written: int
    trajectories: int
    kept: int


def generate(sources: Sequence[str | os.PathLike] | str | os.PathLike | Dataset,
             out: str | os.PathLike, *, backbone: str | Segmenter = "litemedsam",
             backbone_options: Mapping[str, Any] | None = None,
             generator: str | TrajectoryGenerator = "hybrid",
             generator_options: Mapping[str, Any] | None = None, split: str | None = None,
             limit: int | None = None, shard_size: int = 16, threads: int | None = 1,
             overlays: bool = True, ray: str | bool | None = None, workers: int | None = None,
             progress: bool = True) -> GenerateSummary:
    """Generate trajectories for every case of ``sources`` (dataset paths, see
    :func:`msagent.datasets.open_dataset`, or a :class:`~msagent.datasets.Dataset`) into
    the folder ``out`` (layout: :mod:`msagent.generation.records`), resuming a previous run.

    ``backbone``/``generator``: registered names (with options) or instances (local runs).
    ``ray``: None runs here; True/"" starts a local Ray cluster; an address joins one; either
    way ``workers`` Ray actors (default: CPUs // threads) each hold one segmenter.
    """
    out = Path(out)
    if shard_size < 1:
        raise InvalidInput(f"shard_size must be at least 1, got {shard_size}")
    dataset = _dataset(sources, split, limit)
    gen = instance_of("trajectory_generator", generator, generator_options)
    gen.check_backbone(backbone)  # before the manifest: a name is checked without loading it
    manifest = make_manifest(sources, dataset, backbone, backbone_options, gen, generator,
                             split, limit, shard_size, threads, overlays)
    _claim(out, manifest)
    starts = range(0, len(dataset), shard_size)
    todo = [i for i, _ in enumerate(starts) if not _shard_done(out, i)]
    done_cases = len(dataset) - sum(len(_refs(dataset, i, shard_size)) for i in todo)
    bar = _progress(len(dataset), done_cases, progress)
    try:
        if ray is None or ray is False:
            _run_local(out, dataset, todo, shard_size, backbone, backbone_options, gen,
                       manifest, bar)
        else:
            from msagent.generation.ray_runner import run_on_ray

            address = None if ray is True or ray in ("", "local") else str(ray)
            shards = [(i, i * shard_size, _refs(dataset, i, shard_size)) for i in todo]
            for result in run_on_ray(shards, manifest, gen, address=address, workers=workers,
                                     threads=threads):
                commit(out, result)
                bar.update(result.cases)
    finally:
        bar.close()
    return summarize(out, written=len(todo))


def _shard_done(out: Path, index: int) -> bool:
    """A shard is done when its Parquet file reads back whole; a torn or empty one (damaged
    outside msagent: a full disk, a copy cut short) is removed and computed again."""
    path = shard_path(out, index)
    if not path.is_file():
        return False
    if parquet_is_complete(path):
        return True
    log.warning("shard %s is damaged (it does not read back whole); computing it again", path)
    path.unlink()
    return False


def _dataset(sources, split, limit) -> Dataset:
    if isinstance(sources, Dataset):
        dataset = sources
    else:
        paths = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
        if not paths:
            raise InvalidInput("generate needs at least one dataset path")
        dataset = concat(open_dataset(p, split=split) for p in paths)
    return dataset[:limit] if limit is not None else dataset


def _refs(dataset: Dataset, index: int, shard_size: int):
    return dataset.refs[index * shard_size:(index + 1) * shard_size]


def make_manifest(sources, dataset, backbone, backbone_options, gen, generator, split, limit,
                  shard_size, threads, overlays) -> dict[str, Any]:
    """The job's identity, as written to ``manifest.json``."""
    if isinstance(sources, Dataset):
        source_list = [f"dataset:{sources.name}"]
    else:
        paths = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
        source_list = [str(Path(p).resolve()) for p in paths]
    backbone_name = name_of(backbone)
    generator_name = name_of(generator if isinstance(generator, str) else gen)
    return {
        "format": FORMAT, "sources": source_list, "split": split, "limit": limit,
        "backbone": backbone_name, "backbone_options": dict(backbone_options or {}),
        "generator": generator_name, "generator_options": gen.options(),
        "shard_size": shard_size, "threads": threads, "overlays": overlays,
        "num_cases": len(dataset), "num_shards": -(-len(dataset) // shard_size),
        "cases_sha256": dataset.fingerprint(), "msagent_version": __version__,
    }


def _claim(out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest of a new job, or check that ``out`` holds the same job."""
    path = out / MANIFEST
    text = json.dumps(manifest, indent=1, sort_keys=True)
    if path.is_file():
        previous = read_json_file(path, "generation manifest",
                                  f"delete {out} to start over, or restore {path}")
        differ = sorted(k for k in set(previous) | set(manifest)
                        if k != "msagent_version" and previous.get(k) != manifest.get(k))
        if differ:
            raise InvalidInput(f"{out} holds a different generation job (it differs in "
                               f"{', '.join(differ)}); use another --out, or delete {out} to "
                               "start over")
        removed = remove_stale_temporaries(out)
        if removed:
            log.info("removed %d temporary file(s) of an interrupted run in %s", removed, out)
        return
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out} exists and is not a trajectory set (no {MANIFEST}); "
                           "choose an empty or new folder")
    atomic_write(path, text.encode())


def _run_local(out, dataset, todo, shard_size, backbone, backbone_options, gen, manifest, bar) -> None:
    if not todo:
        return
    segmenter = instance_of("segmenter", backbone, backbone_options)
    gen.check_backbone(segmenter)
    worker = ShardWorker(segmenter, gen, manifest["overlays"], manifest["backbone"],
                         manifest["generator"])
    with torch_threads(manifest["threads"]):
        for index in todo:
            result = worker.run(index, index * shard_size, _refs(dataset, index, shard_size))
            commit(out, result)
            bar.update(result.cases)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="case", desc="generate", disable=not enabled,
                dynamic_ncols=True)


def summarize(out: str | os.PathLike, written: int = 0) -> GenerateSummary:
    """Counts of a trajectory set on disk."""
    import pyarrow.parquet as pq

    out = Path(out)
    manifest = read_json_file(out / MANIFEST, "generation manifest",
                              f"delete {out} and generate again")
    trajectories = kept = 0
    for path in shard_paths(out):
        column = pq.read_table(path, columns=["kept"]).column("kept").to_pylist()
        trajectories += len(column)
        kept += sum(bool(v) for v in column)
    return GenerateSummary(out, manifest["num_cases"], manifest["num_shards"], written,
                           trajectories, kept)
