"""Driving an :class:`~msagent.evaluation.runner.Evaluation`: progress, concurrency, outputs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from msagent.errors import InvalidInput
from msagent.evaluation.config import EvalConfig, methods_from
from msagent.evaluation.records import CaseRecord, write_tables
from msagent.evaluation.runner import Evaluation
from msagent.evaluation.summary import summarize
from msagent.io.atomic import atomic_write

log = logging.getLogger(__name__)


def evaluate(cases: Iterable[Any], out_dir: str | Path, *, backbones: Sequence[Any],
             policies: Sequence[Any] = (), protocols: Sequence[str] = (),
             config: EvalConfig | None = None, backbone_options: Mapping[str, Any] | None = None,
             policy_options: Mapping[str, Any] | None = None, concurrency: int = 1,
             limit: int | None = None, retry_errors: bool = True, report: bool = True,
             ray_address: str | None = None, progress: bool = True, total: int | None = None,
             save_masks: bool = True) -> dict[str, Any]:
    """Evaluate ``backbones`` × (``policies`` as agents + click ``protocols``) on ``cases``.

    ``cases``: an iterable of :class:`msagent.Case` (ground truth required; ``meta`` may carry
    ``dataset``, ``modality``, ``label`` and ``spacing``) or of lazy items with ``.id`` and
    ``.load()``. ``backbones``/``policies``: registered names or instances. ``protocols``:
    "noc", "cvpr". Results go to ``out_dir`` (resumable; see :mod:`msagent.evaluation`).
    Returns the summary (also written to ``summary.json``).
    """
    cases = getattr(cases, "refs", cases)  # a msagent.datasets.Dataset: load lazily, per case
    methods = methods_from(policies, protocols, policy_options)
    job = Evaluation(out_dir, list(backbones), methods, config or EvalConfig(),
                     dict(backbone_options or {}), concurrency=max(1, int(concurrency)),
                     retry_errors=retry_errors, save_masks=save_masks)
    if ray_address is not None:
        from msagent.evaluation.distributed import run_on_ray

        run_on_ray(job, cases, ray_address, limit=limit, progress=progress, total=total)
    else:
        job.prepare()
        units = job.units(cases, limit)
        bar = _progress_bar(job, cases, limit, total, progress)
        try:
            if job.concurrency > 1:
                asyncio.run(_run_async(job, units, bar))
            else:
                for case, backbone, method in units:
                    _advance(bar, job.store_result(job.run_unit(case, backbone, method)))
        finally:
            bar.close()
    return finish(out_dir, report=report)


async def _run_async(job: Evaluation, units, bar) -> None:
    limit = asyncio.Semaphore(job.concurrency)
    pending: set[asyncio.Task] = set()

    async def one(case, backbone, method) -> None:
        try:
            record, outcome = await job.acompute(case, backbone, method)
            result = await asyncio.to_thread(job.package, case, record, outcome)
            # files and the fsync'ed record off the loop: other episodes' replies go on meanwhile
            _advance(bar, await asyncio.to_thread(job.store_result, result))
        finally:
            limit.release()

    for case, backbone, method in units:
        await limit.acquire()
        task = asyncio.create_task(one(case, backbone, method))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


def _progress_bar(job: Evaluation, cases: Any, limit: int | None, total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    if total is None and hasattr(cases, "__len__"):
        total = len(cases)
    if total is not None and limit is not None:
        total = min(total, limit)
    units = None if total is None else total * len(job.backbones) * len(job.methods)
    if units is not None:
        units = max(0, units - len(job.record_store().done(job.retry_errors)))
    return tqdm(total=units, desc="msagent eval", unit="run", disable=not enabled, dynamic_ncols=True)


def _advance(bar, record: CaseRecord) -> None:
    bar.update(1)
    if record.ok and record.dice is not None:
        bar.set_postfix_str(f"{record.backbone}/{record.method} {record.case_id}: Dice {record.dice:.3f}",
                            refresh=False)


def finish(out_dir: str | Path, report: bool = True) -> dict[str, Any]:
    """Write results.csv/.parquet, summary.json and (``report``) plots and report.html from
    the records in ``out_dir``; returns the summary."""
    from msagent.evaluation.records import RecordStore

    out_dir = Path(out_dir)
    if not (out_dir / "records.jsonl").exists():
        raise InvalidInput(f"{out_dir} has no records.jsonl: run an evaluation into it first")
    records = RecordStore(out_dir / "records.jsonl").records()
    write_tables(records, out_dir)
    summary = summarize(records)
    atomic_write(out_dir / "summary.json", json.dumps(summary, indent=1, default=float).encode())
    if report:
        from msagent.evaluation.report import write_report

        try:
            write_report(records, summary, out_dir)
        except ImportError as exc:
            log.warning("no plots/report: %s (pip install '.[plot]' in a msagent clone)", exc)
    return summary
