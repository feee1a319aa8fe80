"""The server's use of one Segmenter: stored images, shared encodes, batched decodes.

- Images are stored by content hash (:func:`msagent.backbones.segmenter.image_key` of the decoded
  H×W×3 uint8 array), so a client can refer to an image it uploaded before.
- Encodes go through the segmenter's embedding cache; concurrent first requests for one
  image wait for a single encode (here, without holding a worker thread each).
- Decodes go through the :class:`~msagent.server.batching.DecodeBatcher`.
- Volume work (a 3-D session's slice encodes and decodes) goes through :meth:`Engine.work`:
  the same pools, the same timeout, the same metrics; a propagation's driving thread runs in
  :attr:`Engine.volume_pool` (``config.max_propagations`` threads), so it only ever holds one
  encode or decode worker at a time and 2-D requests queue behind at most one of its slices.
  Interactive work comes first: while a 2-D encode or decode is in flight, volume work waits
  (at most :data:`VOLUME_YIELD_S` per piece, so a propagation still advances under load).
All model work runs in thread pools; the event loop never blocks on the backbone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from msagent._lru import BoundedLRU
from msagent.agent.proposal import check_can_propose
from msagent.backbones.segmenter import (
    Embedding,
    Segmenter,
    check_prev_logits,
    check_prompts,
    check_proposal_text,
    image_key,
)
from msagent.errors import InvalidInput, SegmenterError
from msagent.io.wire import decode_upload
from msagent.server.batching import DecodeBatcher
from msagent.server.config import ServerConfig
from msagent.server.errors import ImageNotFound, Overloaded, TooManyPoints
from msagent.server.metrics import Metrics
from msagent.types import MaskPrediction, Prompts

#: the longest one piece of volume work waits for interactive work in flight to finish
VOLUME_YIELD_S = 0.25


class ImageStore:
    """Uploaded images by content hash; least recently used go first past either bound."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: BoundedLRU[str, np.ndarray] = BoundedLRU(
            max_items, weigh=lambda image: image.nbytes, max_weight=max_bytes)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, image: np.ndarray) -> bool:
        """Store ``image``; returns False if it was already there."""
        return self._items.add(key, image)

    def get(self, key: str) -> np.ndarray:
        image = self._items.get(key)
        if image is None:
            raise ImageNotFound(f"no image {key!r} on this server (never uploaded, or dropped "
                                "to make room); upload it with POST /v1/images")
        return image

    def __contains__(self, key: str) -> bool:
        return key in self._items


class Engine:
    """Async front of a Segmenter for the routes (one per app)."""

    def __init__(self, segmenter: Segmenter, config: ServerConfig, metrics: Metrics) -> None:
        self.segmenter = segmenter
        self.config = config
        self.metrics = metrics
        self.images = ImageStore(config.max_images, config.max_image_bytes)
        self.encode_pool = ThreadPoolExecutor(config.encode_workers, thread_name_prefix="msagent-encode")
        self.decode_pool = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="msagent-decode")
        self.volume_pool = ThreadPoolExecutor(config.max_propagations,
                                              thread_name_prefix="msagent-volume")
        self.batcher = DecodeBatcher(
            segmenter, self.decode_pool,
            window=config.batch_window_s(str(getattr(segmenter, "device", "cpu"))),
            max_batch=config.max_batch, workers=config.decode_workers, on_batch=metrics.record_batch)
        self._inflight: dict[str, asyncio.Future] = {}
        self._interactive = 0  # 2-D encodes and decodes in flight
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def interactive(self):
        """Mark 2-D work in flight: volume work (:meth:`work`) waits for it to finish."""
        with self._idle:
            self._interactive += 1
        try:
            yield
        finally:
            with self._idle:
                self._interactive -= 1
                if not self._interactive:
                    self._idle.notify_all()

    def multimask(self, override: bool | None) -> bool:
        return bool(self.segmenter.multimask_default if override is None else override)

    async def add_image(self, data: bytes) -> tuple[str, np.ndarray, bool]:
        """Decode an upload and store it: (content hash, image, whether it was new)."""
        image = await asyncio.to_thread(decode_upload, data, max_pixels=self.config.max_pixels)
        key = await asyncio.to_thread(image_key, image)
        created = self.images.put(key, image)
        self.metrics.count("images_uploaded" if created else "images_uploaded_again")
        return key, image, created

    async def embed(self, key: str) -> Embedding:
        """The embedding of stored image ``key`` (one encode however many ask at once)."""
        image = self.images.get(key)
        pending = self._inflight.get(key)
        if pending is not None:  # an encode of this image is running: wait for it, then hit
            await self._bounded(asyncio.wait([pending]), "encode")
            return await self._bounded(self._run_encode(image, key), "encode")
        pending = self._inflight[key] = asyncio.get_running_loop().create_future()
        try:
            return await self._bounded(self._run_encode(image, key), "encode")
        finally:
            self._inflight.pop(key, None)
            pending.set_result(None)  # waiters go to the cache (or, after a failure, try again)

    async def _run_encode(self, image: np.ndarray, key: str) -> Embedding:
        loop = asyncio.get_running_loop()
        with self.interactive():
            return await loop.run_in_executor(self.encode_pool, self._encode, image, key)

    def _encode(self, image: np.ndarray, key: str) -> Embedding:
        misses = self.segmenter.cache_info().misses
        started = time.perf_counter()
        embedding = self.segmenter.encode_with_key(image, key)
        if self.segmenter.cache_info().misses > misses:
            self.metrics.encode.add(time.perf_counter() - started)
        return embedding

    def check(self, prompts: Prompts, image_size: tuple[int, int], text: str | None) -> None:
        """Raise before decoding what the backbone would refuse (empty or outside prompts,
        a text prompt for a backbone without ``accepts_text``) and more clicks than
        ``config.max_points`` (a decode's cost grows with them)."""
        self.check_text(text)
        if len(prompts.points) > self.config.max_points:
            raise TooManyPoints(
                f"{len(prompts.points)} clicks in one decode; this server allows at most "
                f"{self.config.max_points} (msagent serve --max-points): undo or reset the "
                "session, or start a new one")
        if text is None or not prompts.empty:
            check_prompts(prompts, image_size)

    def check_text(self, text: str | None) -> None:
        if text is not None and not self.segmenter.accepts_text:
            raise InvalidInput(f"backbone {self.segmenter.name!r} takes no text prompt; leave "
                               "'text' out, or serve a backbone that accepts one (e.g. imisnet)")

    async def decode(self, embedding: Embedding, prompts: Prompts, prev_logits: np.ndarray | None,
                     multimask: bool | None, text: str | None = None) -> MaskPrediction:
        """Check the request, then decode it (micro-batched with others on the same image).
        ``text`` defaults to ``prompts.text`` (a session's target)."""
        text = prompts.text if text is None else text
        self.check(prompts, embedding.image_size, text)
        prev = check_prev_logits(prev_logits)
        started = time.perf_counter()
        with self.interactive():
            prediction = await self._bounded(
                self.batcher.decode(embedding, prompts, prev, self.multimask(multimask), text),
                "decode")
        self.metrics.decode.add(time.perf_counter() - started)
        return prediction

    async def decode_many(self, embedding: Embedding, prompt_sets: list[Prompts],
                          prev_logits: list[np.ndarray | None], multimask: bool | None,
                          texts: list[str | None] | None = None) -> list[MaskPrediction]:
        """Decode several prompt sets against one embedding in one ``decode_batch`` call."""
        texts = texts or [None] * len(prompt_sets)
        total = sum(len(p.points) for p in prompt_sets)
        if total > 4 * self.config.max_points:  # one request must not hold a worker for minutes
            raise TooManyPoints(f"{total} clicks in one batch; this server allows at most "
                                f"{4 * self.config.max_points} (4 × --max-points): send fewer items")
        for index, (prompts, text) in enumerate(zip(prompt_sets, texts)):
            try:
                self.check(prompts, embedding.image_size, text)
            except (SegmenterError, InvalidInput) as exc:
                raise type(exc)(f"items[{index}]: {exc}") from None
        prev = [check_prev_logits(p) for p in prev_logits]
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        extra = {"text": texts} if any(t is not None for t in texts) else {}
        run = functools.partial(self.segmenter.decode_batch, embedding, prompt_sets, prev,
                                multimask=self.multimask(multimask), **extra)
        with self.interactive():
            predictions = await self._bounded(loop.run_in_executor(self.decode_pool, run),
                                              "decode")
        elapsed = time.perf_counter() - started
        self.metrics.record_batch(len(prompt_sets), elapsed)
        self.metrics.decode.add(elapsed)
        return predictions

    def check_can_propose(self) -> None:
        """InvalidInput (422) naming the installed backbones that can, when the served one
        cannot propose a mask from text (:func:`msagent.agent.proposal.check_can_propose`)."""
        check_can_propose(self.segmenter)

    async def propose(self, embedding: Embedding, text: str,
                      max_candidates: int = 5) -> list[MaskPrediction]:
        """The served backbone's candidate masks for ``text`` (:meth:`Segmenter.propose`:
        checked text, best first, at most ``max_candidates``), run in the decode pool like a
        decode: at most ``request_timeout_s`` (then 503), as interactive work (volume work
        waits for it), its latency in the ``propose`` metrics."""
        self.check_can_propose()
        text = check_proposal_text(text)
        loop = asyncio.get_running_loop()
        run = functools.partial(self.segmenter.propose, embedding, text,
                                max_candidates=max_candidates)
        started = time.perf_counter()
        with self.interactive():
            candidates = await self._bounded(loop.run_in_executor(self.decode_pool, run), "propose")
        self.metrics.propose.add(time.perf_counter() - started)
        self.metrics.count("proposals")
        return candidates

    def work(self, kind: str, fn: Callable[[], Any]) -> Any:
        """Run one piece of volume work (``kind`` "encode" or "decode") in the encode or
        decode pool from a worker thread (never the event loop: it blocks), at most
        ``request_timeout_s`` (then :class:`Overloaded`, 503), counted in the metrics: the
        encode/decode latency and the ``volume_encodes``/``volume_decodes`` counters."""
        pool = self.encode_pool if kind == "encode" else self.decode_pool
        with self._idle:  # interactive requests first (bounded, so this one still advances)
            self._idle.wait_for(lambda: not self._interactive, timeout=VOLUME_YIELD_S)
        started = time.perf_counter()
        future = pool.submit(fn)
        try:
            result = future.result(timeout=self.config.request_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.metrics.count(f"{kind}_timeouts")
            raise Overloaded(f"a volume {kind} took longer than "
                             f"{self.config.request_timeout_s:g} s; the server is overloaded: "
                             "retry later, or start it with a higher --request-timeout") from None
        (self.metrics.encode if kind == "encode" else self.metrics.decode).add(
            time.perf_counter() - started)
        self.metrics.count(f"volume_{kind}s")
        return result

    async def _bounded(self, awaitable, what: str):
        try:
            return await asyncio.wait_for(awaitable, self.config.request_timeout_s)
        except TimeoutError:
            self.metrics.count(f"{what}_timeouts")
            raise Overloaded(f"the {what} took longer than {self.config.request_timeout_s:g} s; "
                             "the server is overloaded: retry later, or start it with a higher "
                             "--request-timeout") from None

    def close(self) -> None:
        self.encode_pool.shutdown(wait=False, cancel_futures=True)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.volume_pool.shutdown(wait=False, cancel_futures=True)
