"""Micro-batching of decodes: requests for the same image run as one
:meth:`msagent.Segmenter.decode_batch` call.

The first request for an (image, multimask) pair opens a batch; later ones join it. The batch
closes ``window`` seconds later, or when it holds ``max_batch`` requests — but not before the
previous batch for that image has finished and a decode worker is free, so under load the
requests that queue up become one large batch rather than a queue of small ones (N sessions on
one image converge to batches of N). Batches run in the decode thread pool (never on the event
loop), at most ``workers`` at a time. If a batched call fails, its requests are decoded one by
one, so one bad request cannot fail the others.

Batching pays off on GPUs; on CPUs a batch costs at least as much as its decodes one by one and
runs on one worker, so ``msagent serve`` leaves it off there (see ``ServerConfig``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import attrs
import numpy as np

from msagent.backbones.segmenter import Embedding, Segmenter
from msagent.types import MaskPrediction, Prompts

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class _Request:
    prompts: Prompts
    prev_logits: np.ndarray | None
    future: asyncio.Future
    text: str | None = None


@attrs.define(eq=False)
class _Batch:
    embedding: Embedding
    multimask: bool
    requests: list[_Request] = attrs.field(factory=list)
    closed: bool = False


@attrs.frozen
class _Failed:
    error: BaseException


class DecodeBatcher:
    """Collects concurrent decodes per image. ``window <= 0`` or ``max_batch == 1`` decodes
    each request on its own (still off the event loop, at most ``workers`` at a time)."""

    def __init__(self, segmenter: Segmenter, executor: Executor, *, window: float, max_batch: int,
                 workers: int, on_batch: Callable[[int, float], None] | None = None) -> None:
        self.segmenter = segmenter
        self.executor = executor
        self.window = window
        self.max_batch = max_batch
        self.workers = workers
        self.on_batch = on_batch or (lambda size, seconds: None)
        self._open: dict[tuple[str, bool], _Batch] = {}
        self._running: dict[tuple[str, bool], asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._slots: asyncio.Semaphore | None = None

    @property
    def batching(self) -> bool:
        return self.window > 0 and self.max_batch > 1

    async def decode(self, embedding: Embedding, prompts: Prompts, prev_logits: np.ndarray | None,
                     multimask: bool, text: str | None = None) -> MaskPrediction:
        """Decode one request; ``text`` only for backbones with ``accepts_text``."""
        request = _Request(prompts, prev_logits, asyncio.get_running_loop().create_future(), text)
        if not self.batching:
            self._start(_Batch(embedding, multimask, [request], closed=True))
            return await request.future
        key = (embedding.key, multimask)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(embedding, multimask)
            self._start(batch, key)
        batch.requests.append(request)
        if len(batch.requests) >= self.max_batch:
            self._close(key, batch)
        return await request.future

    def _start(self, batch: _Batch, key: tuple[str, bool] | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._drain(batch, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close(self, key: tuple[str, bool], batch: _Batch) -> None:
        if self._open.get(key) is batch:
            del self._open[key]
        batch.closed = True

    async def _drain(self, batch: _Batch, key: tuple[str, bool] | None) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        if key is None:  # unbatched
            async with self._slots:
                await self._run(batch)
            return
        if not batch.closed:
            await asyncio.sleep(self.window)  # let concurrent requests join
        while (running := self._running.get(key)) is not None:  # the batch keeps growing
            await asyncio.wait([running])
        done = self._running[key] = asyncio.get_running_loop().create_future()
        try:
            async with self._slots:
                self._close(key, batch)
                await self._run(batch)
        finally:
            del self._running[key]
            done.set_result(None)

    async def _run(self, batch: _Batch) -> None:
        batch.requests = [r for r in batch.requests if not r.future.done()]  # drop timed-out ones
        if not batch.requests:
            return
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._decode_all, batch)
        except Exception as exc:  # delivered to every waiter
            results = [_Failed(exc)] * len(batch.requests)
        finally:
            self.on_batch(len(batch.requests), time.perf_counter() - started)
        for request, result in zip(batch.requests, results):
            if request.future.done():
                continue
            if isinstance(result, _Failed):
                request.future.set_exception(result.error)
            else:
                request.future.set_result(result)

    def _decode_all(self, batch: _Batch) -> list:
        """The whole batch in one call; if that fails (and it held several), one by one."""
        prompts = [r.prompts for r in batch.requests]
        prev = [r.prev_logits for r in batch.requests]
        texts = [r.text for r in batch.requests]
        extra: dict[str, Any] = {"text": texts} if any(t is not None for t in texts) else {}
        try:
            return self.segmenter.decode_batch(batch.embedding, prompts, prev,
                                               multimask=batch.multimask, **extra)
        except Exception:
            if len(prompts) == 1:
                raise
            log.debug("batched decode of %d failed; decoding one by one", len(prompts), exc_info=True)
        results: list[MaskPrediction | _Failed] = []
        for request in batch.requests:
            extra = {} if request.text is None else {"text": request.text}
            try:
                results.append(self.segmenter.decode(batch.embedding, request.prompts,
                                                     request.prev_logits, multimask=batch.multimask,
                                                     **extra))
            except Exception as exc:
                results.append(_Failed(exc))
        return results
