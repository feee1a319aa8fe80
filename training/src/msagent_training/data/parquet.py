"""Parquet files for verl, with fixed schemas (Parquet turns nested dicts into structs and
fills missing keys with null, so every row must have the same shape).

Writes go to ``<path>.partial`` in row groups and are renamed into place at the end, so an
interrupted build never leaves a truncated file under the final name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from msagent.errors import InvalidInput
from msagent.types import Case, Trajectory
from tqdm import tqdm

from .rows import rl_row, rl_schema, sft_row, sft_schema

log = logging.getLogger(__name__)
ROW_GROUP = 128


def write_rows(rows: Iterable[dict[str, Any]], path: str | os.PathLike, schema) -> int:
    """Write ``rows`` to ``path`` atomically; return the number written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count, batch = 0, []
    with pq.ParquetWriter(partial, schema) as writer:
        for row in rows:
            batch.append(row)
            if len(batch) >= ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count, batch = count + len(batch), []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    if count == 0:
        partial.unlink()
        raise InvalidInput(f"no rows to write to {path}")
    os.replace(partial, path)
    log.info("wrote %d rows to %s", count, path)
    return count


def rl_rows(cases: Iterable[Case], *, policy_image_size: int = 512, data_source: str = "msagent",
            skipped: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """RL rows for ``cases``; cases without a non-empty ground truth are skipped (their ids go
    to ``skipped``)."""
    for index, case in enumerate(cases):
        try:
            yield rl_row(case, index, policy_image_size=policy_image_size, data_source=data_source)
        except InvalidInput as exc:
            log.warning("skipping %s: %s", case.id, exc)
            if skipped is not None:
                skipped.append(case.id)


def write_rl_parquet(cases: Iterable[Case], path: str | os.PathLike, *, policy_image_size: int = 512,
                     data_source: str = "msagent", progress: bool = True) -> int:
    """Write the RL parquet for ``cases`` (see :func:`msagent_training.data.rows.rl_row`)."""
    cases = tqdm(cases, desc="RL rows", unit="case", disable=not progress)
    return write_rows(rl_rows(cases, policy_image_size=policy_image_size, data_source=data_source),
                      path, rl_schema())


def write_sft_parquet(items: Iterable[tuple[Any, Trajectory]], path: str | os.PathLike, *,
                      policy_image_size: int = 512, data_source: str = "msagent",
                      progress: bool = True) -> int:
    """Write the SFT parquet for ``(original image, trajectory)`` pairs."""
    items = tqdm(items, desc="SFT rows", unit="trajectory", disable=not progress)
    rows = (sft_row(image, trajectory, policy_image_size=policy_image_size, data_source=data_source)
            for image, trajectory in items)
    return write_rows(rows, path, sft_schema())
