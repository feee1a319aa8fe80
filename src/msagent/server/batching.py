"""Micro-batching of decodes: requests for the same image that arrive within a few
milliseconds run as one :meth:`msagent.Segmenter.decode_batch` call.

The first request for an (image, multimask) pair opens a batch and schedules it to run
``window`` seconds later (or at once when it reaches ``max_batch``); later requests for the
same pair join it. A batch runs in the decode thread pool, so the event loop never blocks.
If the batched call fails, its requests are decoded one by one, so one bad request cannot
fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

import attrs
import numpy as np

from ..segmenter import Embedding, Segmenter
from ..types import MaskPrediction, Prompts

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class _Request:
    prompts: Prompts
    prev_logits: np.ndarray | None
    future: asyncio.Future


@attrs.define(eq=False)
class _Batch:
    embedding: Embedding
    multimask: bool
    requests: list[_Request] = attrs.field(factory=list)
    closed: bool = False


class DecodeBatcher:
    """Collects concurrent decodes per image; ``window <= 0`` or ``max_batch == 1`` decodes each
    request on its own (still off the event loop)."""

    def __init__(self, segmenter: Segmenter, executor: Executor, *, window: float, max_batch: int,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.segmenter = segmenter
        self.executor = executor
        self.window = window
        self.max_batch = max_batch
        self.on_batch = on_batch or (lambda size, seconds: None)
        self._open: dict[tuple[str, bool], _Batch] = {}
        self._tasks: set[asyncio.Task] = set()

    async def decode(self, embedding: Embedding, prompts: Prompts, prev_logits: np.ndarray | None,
                     multimask: bool) -> MaskPrediction:
        loop = asyncio.get_running_loop()
        if self.window <= 0 or self.max_batch <= 1:
            return (await self._execute(loop, _Batch(embedding, multimask, [
                _Request(prompts, prev_logits, loop.create_future())])))[0]
        key = (embedding.key, multimask)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(embedding, multimask)
            loop.call_later(self.window, self._close, key, batch)
        request = _Request(prompts, prev_logits, loop.create_future())
        batch.requests.append(request)
        if len(batch.requests) >= self.max_batch:
            self._close(key, batch)
        return await request.future

    def _close(self, key: tuple[str, bool], batch: _Batch) -> None:
        if self._open.get(key) is batch:
            del self._open[key]
        if batch.closed:
            return
        batch.closed = True
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        live = [r for r in batch.requests if not r.future.done()]
        if not live:
            return
        batch.requests = live
        try:
            predictions = await self._execute(asyncio.get_running_loop(), batch)
        except Exception as exc:  # delivered to every waiter
            for request in live:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        for request, prediction in zip(live, predictions):
            if request.future.done():
                continue
            if isinstance(prediction, _Failed):
                request.future.set_exception(prediction.error)
            else:
                request.future.set_result(prediction)

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> list:
        """Run the batch in the pool. A batch of one raises its own error; in a larger one a
        failing request gets its error and the others their masks."""
        started = time.perf_counter()
        try:
            return await loop.run_in_executor(self.executor, self._decode_all, batch)
        finally:
            self.on_batch(len(batch.requests), time.perf_counter() - started)

    def _decode_all(self, batch: _Batch) -> list:
        prompts = [r.prompts for r in batch.requests]
        prev = [r.prev_logits for r in batch.requests]
        if len(prompts) == 1:
            return self.segmenter.decode_batch(batch.embedding, prompts, prev,
                                               multimask=batch.multimask)
        try:
            return self.segmenter.decode_batch(batch.embedding, prompts, prev,
                                               multimask=batch.multimask)
        except Exception:
            log.debug("batched decode of %d failed; decoding one by one", len(prompts), exc_info=True)
        results = []
        for request in batch.requests:
            try:
                results.append(self.segmenter.decode(batch.embedding, request.prompts,
                                                     request.prev_logits, multimask=batch.multimask))
            except Exception as exc:
                results.append(_Failed(exc))
        return results


@attrs.frozen
class _Failed:
    error: BaseException
