"""The export jobs: a trajectory set (or a dataset) to training files, part by part.

Output is written part by part (one part per trajectory-set shard, or ``part_size`` dataset
cases), each atomically; a rerun skips the parts already written (a damaged part is written
again), so an interrupted export resumes. ``export.json`` records the settings; a rerun with
other settings into the same folder is refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from msagent import render
from msagent.backbones.segmenter import image_key
from msagent.errors import InvalidInput
from msagent.export import llamafactory, upstream, verl
from msagent.export.conversation import check_size
from msagent.generation.records import read_manifest, read_shard, shard_paths
from msagent.io.atomic import atomic_write, parquet_bytes, parquet_is_complete, read_json_file

FORMATS = ("verl-sft", "llamafactory", "verl-rl")
MANIFEST = "export.json"

log = logging.getLogger(__name__)


@attrs.frozen
class ExportSummary:
    out: Path
    format: str
    parts: int
    parts_written: int
    rows: int


def export_trajectories(source: str | os.PathLike, out: str | os.PathLike, format: str = "verl-sft", *,
                        image_size: int = render.POLICY_IMAGE_SIZE, tool_format: str = "inline",
                        include_dropped: bool = False, name: str = llamafactory.DEFAULT_NAME,
                        agent_name: str | None = None, layout: str = "msagent",
                        progress: bool = True) -> ExportSummary:
    """Export the trajectory set ``source`` (from ``msagent generate``) to ``out``.

    SFT formats take the kept trajectories (``include_dropped`` adds the others);
    ``verl-rl`` takes one row per case with a non-empty ground truth, in msagent's layout or
    (``layout="upstream"``) upstream MedSAM-Agent's."""
    if format not in FORMATS:
        raise InvalidInput(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    _check_layout(layout, format, agent_name)
    if tool_format not in verl.TOOL_FORMATS:
        raise InvalidInput(f"tool_format must be one of {verl.TOOL_FORMATS}, got {tool_format!r}")
    check_size(image_size)
    source, out = Path(source), Path(out)
    shards = shard_paths(source)
    origin = read_manifest(source) or {}
    settings = {"format": format, "source": str(source.resolve()),
                "source_cases_sha256": origin.get("cases_sha256"),
                "source_generator_options": origin.get("generator_options"),
                "image_size": image_size, "tool_format": tool_format,
                "include_dropped": include_dropped, "name": name, "agent_name": agent_name,
                **_layout_setting(layout)}
    folder = out / name if format == "llamafactory" else out
    suffix = ".json" if format == "llamafactory" else ".parquet"
    parts = []
    for shard in shards:
        def make(shard=shard):
            records = read_shard(shard, source, kept_only=not include_dropped and format != "verl-rl")
            return _convert(records, format, out, settings)
        parts.append((folder / f"{shard.stem}{suffix}", make))
    summary = _run_parts(out, settings, parts, format, progress)
    if format == "llamafactory":
        llamafactory.write_dataset_info(out, name)
    return summary


def export_rl_prompts(dataset, out: str | os.PathLike, *, image_size: int = render.POLICY_IMAGE_SIZE,
                      part_size: int = 256, agent_name: str | None = None, layout: str = "msagent",
                      progress: bool = True) -> ExportSummary:
    """verl RL prompts straight from a :class:`~msagent.datasets.Dataset` (cases with an
    empty ground truth are skipped), in msagent's or upstream's ``layout``."""
    check_size(image_size)
    _check_layout(layout, "verl-rl", agent_name)
    out = Path(out)
    settings = {"format": "verl-rl", "source": f"dataset:{dataset.name}",
                "source_cases_sha256": dataset.fingerprint(), "image_size": image_size,
                "agent_name": agent_name, "part_size": part_size, **_layout_setting(layout)}
    parts = []
    for number, start in enumerate(range(0, len(dataset), part_size)):
        def make(start=start):
            rows = []
            for offset, ref in enumerate(dataset.refs[start:start + part_size]):
                case = ref.load()
                if case.ground_truth is None or not case.ground_truth.any():
                    continue
                rows.append(_rl_row(
                    settings, index=start + offset, case_id=case.id, target=case.target,
                    image=case.image, ground_truth=case.ground_truth, meta=case.meta,
                    image_sha256=lambda case=case: image_key(case.image),
                    data_source=_data_source(case.meta.get("dataset"))))
            return rows, {}
        parts.append((out / f"part-{number:05d}.parquet", make))
    return _run_parts(out, settings, parts, "verl-rl", progress)


def _data_source(dataset: Any) -> str:
    return f"msagent/{dataset}" if dataset else "msagent"


def _check_layout(layout: str, format: str, agent_name: str | None) -> None:
    if layout not in upstream.LAYOUTS:
        raise InvalidInput(f"layout must be one of {', '.join(upstream.LAYOUTS)}, got {layout!r}")
    if layout == "upstream" and format != "verl-rl":
        raise InvalidInput("--layout upstream applies to --format verl-rl only")
    if layout == "upstream" and agent_name:
        raise InvalidInput("--layout upstream has no agent_name column (upstream's dataset "
                           "sets its own agent loop); drop --agent-name")


def _layout_setting(layout: str) -> dict[str, str]:
    # absent for msagent's layout, so that exports made before the option resume unchanged
    return {"layout": layout} if layout != "msagent" else {}


def _rl_row(settings: dict, *, image_sha256: Callable[[], str], **fields: Any) -> dict[str, Any]:
    if settings.get("layout") == "upstream":
        return upstream.rl_row(**fields)
    return verl.rl_row(**fields, image_sha256=image_sha256(), size=settings["image_size"],
                       agent_name=settings["agent_name"])


def _convert(records: Iterable, format: str, out: Path, settings: dict) -> tuple[list, dict]:
    rows: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    for record in records:
        row = record.row
        if format == "verl-rl":
            if row["case_id"] in seen or row["drop_reason"] == "empty_ground_truth":
                continue
            seen.add(row["case_id"])
            meta = {k: row[k] for k in ("dataset", "modality", "class", "split")}
            rows.append(_rl_row(
                settings, index=row["case_index"], case_id=row["case_id"], target=row["target"],
                image=record.image(), ground_truth=record.ground_truth(), meta=meta,
                image_sha256=partial(row.__getitem__, "image_sha256"),
                data_source=_data_source(row["dataset"])))
        elif format == "verl-sft":
            rows.append(verl.sft_row(record.trajectory, record.image(), key=record.key,
                                     data_source=_data_source(row["dataset"]),
                                     size=settings["image_size"], tool_format=settings["tool_format"]))
        else:
            entry, images = llamafactory.record(record.trajectory, record.image(), out,
                                                key=record.key, size=settings["image_size"])
            rows.append(entry)
            files.update(images)
    return rows, files


def _claim(out: Path, settings: dict) -> None:
    path = out / MANIFEST
    if path.is_file():
        previous = read_json_file(path, "export manifest", f"delete {out} to export again")
        differ = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if differ:
            raise InvalidInput(f"{out} holds an export with other settings ({', '.join(differ)}); "
                               "use another --out or delete it")
        return
    atomic_write(path, json.dumps(settings, indent=1, sort_keys=True).encode())


def _run_parts(out: Path, settings: dict, parts: Sequence[tuple[Path, Callable]], format: str,
               progress: bool) -> ExportSummary:
    from tqdm import tqdm

    _claim(out, settings)
    todo = [(path, make) for path, make in parts if not _part_done(path)]
    written = 0
    for path, make in tqdm(todo, desc=f"export {format}", unit="part", disable=not progress):
        rows, files = make()
        for rel, data in sorted(files.items()):
            if not (out / rel).is_file():
                atomic_write(out / rel, data)
        _write_part(path, rows, format, settings)
        written += 1
    return ExportSummary(out, format, len(parts), written, sum(_count(p) for p, _ in parts))


def _write_part(path: Path, rows: list, format: str, settings: dict) -> None:
    if format == "llamafactory":
        llamafactory.write_part(path, rows)
    elif format == "verl-sft":
        atomic_write(path, parquet_bytes(rows, verl.sft_schema(settings["tool_format"])))
    elif settings.get("layout") == "upstream":
        atomic_write(path, parquet_bytes(rows, upstream.rl_schema()))
    else:
        atomic_write(path, parquet_bytes(rows, verl.rl_schema(bool(settings.get("agent_name")))))


def _part_done(path: Path) -> bool:
    """A part is done when it reads back whole; a damaged one is written again."""
    if not path.is_file():
        return False
    if path.suffix == ".json":
        try:
            whole = isinstance(json.loads(path.read_bytes()), list)
        except (ValueError, RecursionError):
            whole = False
    else:
        whole = parquet_is_complete(path)
    if not whole:
        log.warning("export part %s is damaged (it does not read back whole); writing it again", path)
        path.unlink()
    return whole


def _count(path: Path) -> int:
    if not path.is_file():
        return 0
    if path.suffix == ".json":
        return len(json.loads(path.read_text()))
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
