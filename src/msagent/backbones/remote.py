"""The ``remote`` backbone: a Segmenter whose model runs in an ``msagent serve`` server.

``msagent.load_backbone("remote", url="http://gpu-box:8265", api_key=...)`` (or
``$MSAGENT_REMOTE_URL`` / ``$MSAGENT_REMOTE_API_KEY``) gives a Segmenter that the agent loop,
evaluation, trajectory generation and the verl tools use like any local one:

- :meth:`encode` hashes the image, asks the server to encode it by that hash and uploads it
  (lossless PNG) only if the server does not have it; the Embedding's ``features`` is a
  :class:`RemoteImage` (the server-side handle, plus the image to re-upload after a restart).
- :meth:`decode` posts the prompts and the previous low-res logits to ``/v1/predict`` and
  returns a :class:`~msagent.MaskPrediction`. Logits travel as base64 ``float16`` by default
  (half the bytes; the returned logits are then float16-exact); ``logits_dtype="float32"``
  makes results bit-identical to in-process decoding.
- :meth:`propose` (when the served backbone can: ``can_propose`` comes from ``/health``)
  posts the text to ``/v1/propose`` and returns its candidates the same way.
- :meth:`aencode`, :meth:`adecode` and :meth:`adecode_batch` are the asyncio versions
  (``httpx.AsyncClient``), for async agent loops and verl tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from msagent.backbones.segmenter import LOW_RES, Embedding, Segmenter, image_key
from msagent.errors import InvalidImage, SegmenterError
from msagent.io.wire import ARRAY_DTYPES, pack_array, png_bytes, unpack_array
from msagent.types import MaskPrediction, Prompts, decode_mask

ENV_URL = "MSAGENT_REMOTE_URL"
ENV_API_KEY = "MSAGENT_REMOTE_API_KEY"
RETRY_STATUSES = (502, 503, 504)


@attrs.frozen(eq=False)
class RemoteImage:
    """An image held by the server: its content hash, and the H×W×3 uint8 array itself."""

    image_id: str
    image: np.ndarray


class _ImageGone(Exception):
    """The server no longer holds the image (restarted, or dropped it to make room)."""


class _Miss(Exception):
    pass


class RemoteSegmenter(Segmenter):
    """A backbone served by ``msagent serve`` at ``url`` (default ``$MSAGENT_REMOTE_URL``).

    Options: ``api_key`` (default ``$MSAGENT_REMOTE_API_KEY``), ``timeout`` seconds per
    request, ``retries`` on connection errors and 502/503/504, ``logits_dtype``
    ("float16" | "float32"), ``cache_size`` (client-side embedding handles), ``verify`` (TLS).
    """

    name = "remote"

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 120.0, retries: int = 2, logits_dtype: str = "float16",
                 cache_size: int = 64, verify: bool = True) -> None:
        super().__init__(cache_size=cache_size)
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise SegmenterError("the remote backbone needs httpx: pip install httpx "
                                 "(or pip install '.[server]' in a msagent clone)") from None
        url = url or os.environ.get(ENV_URL)
        if not url:
            raise SegmenterError(f"the remote backbone needs the server's address: url=... or "
                                 f"${ENV_URL} (e.g. http://gpu-box:8265, from `msagent serve`)")
        if logits_dtype not in ARRAY_DTYPES:
            raise SegmenterError(f"logits_dtype must be one of {', '.join(ARRAY_DTYPES)}, "
                                 f"got {logits_dtype!r}")
        self.url = url.rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
        self.api_key = str(api_key) if api_key else None
        self.timeout, self.retries, self.verify = timeout, retries, verify
        self.logits_dtype = logits_dtype
        self._info: dict[str, Any] | None = None
        self._client = None
        self._aclients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._uploads: dict[str, asyncio.Task] = {}

    # -- what the server runs ----------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The server's ``/health`` (backbone, multimask default, version), fetched once."""
        if self._info is None:
            self._info = self._request("GET", "/health").json()
        return self._info

    @property
    def multimask_default(self) -> bool:  # type: ignore[override]
        return bool(self.info().get("multimask_default", True))

    @property
    def accepts_text(self) -> bool:  # type: ignore[override]
        """Whether the served backbone takes the target as a text prompt (e.g. imisnet)."""
        return bool(self.info().get("accepts_text", False))

    @property
    def can_propose(self) -> bool:  # type: ignore[override]
        """Whether the served backbone proposes masks from text alone (e.g. sam3)."""
        return bool(self.info().get("can_propose", False))

    @property
    def backbone(self) -> str:
        """The name of the backbone the server runs."""
        return str(self.info().get("backbone", ""))

    # -- sync Segmenter API -----------------------------------------------------------
    def encode_image(self, image: np.ndarray) -> RemoteImage:
        key = image_key(image)
        self._ensure_encoded(image, key)
        return RemoteImage(key, image)

    def decode_prompts(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                       prev_logits: Sequence[np.ndarray | None], *,
                       multimask: bool) -> list[MaskPrediction]:
        """Decode on the server (one set: ``/v1/predict``; several: ``/v1/predict/batch``)."""
        if len(prompt_sets) == 1:
            body = self._predict_body(embedding, prompt_sets[0], prev_logits[0], multimask)
            data = self._with_image(embedding, lambda: self._request("POST", "/v1/predict", json=body))
            return [self._prediction(data, embedding.image_size)]
        body = self._batch_body(embedding, prompt_sets, prev_logits, multimask)
        data = self._with_image(embedding,
                                lambda: self._request("POST", "/v1/predict/batch", json=body))
        return [self._prediction(p, embedding.image_size) for p in data["predictions"]]

    def propose_masks(self, embedding: Embedding, text: str, *,
                      max_candidates: int) -> list[MaskPrediction]:
        """The server's proposal for ``text`` (``/v1/propose``), at most ``max_candidates``
        and at most as many as the server answers (its ``/health`` ``max_candidates``)."""
        limit = int(self.info().get("max_candidates", 1) or 1)
        body = {"image_id": self._handle(embedding).image_id, "text": text,
                "max_candidates": max(1, min(int(max_candidates), limit)),
                "mask_format": "rle", "return_logits": True, "logits_dtype": self.logits_dtype}
        data = self._with_image(embedding, lambda: self._request("POST", "/v1/propose", json=body))
        candidates = data.get("candidates") if isinstance(data, dict) else None
        if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
            raise SegmenterError(f"the server at {self.url} answered /v1/propose without a "
                                 "candidates list")
        return [self._prediction(c, embedding.image_size) for c in candidates]

    # -- async API ------------------------------------------------------------------
    async def aencode(self, image: np.ndarray) -> Embedding:
        """Async :meth:`encode` (through the same client-side cache)."""
        key = await asyncio.to_thread(image_key, image) if image.nbytes > 1 << 22 else image_key(image)
        if self._cache.contains(key):
            with contextlib.suppress(_Miss):
                return self._cache.get_or_compute(key, _raise_miss)
        task = self._uploads.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = self._uploads[key] = asyncio.ensure_future(self._aensure_encoded(image, key))
            task.add_done_callback(lambda _: self._uploads.pop(key, None))
        await asyncio.shield(task)
        if not self._cache.contains(key):
            embedding = Embedding(RemoteImage(key, image), image.shape[:2], key)
            self._cache.put(embedding)
            return embedding
        with contextlib.suppress(_Miss):
            return self._cache.get_or_compute(key, _raise_miss)
        return Embedding(RemoteImage(key, image), image.shape[:2], key)

    async def adecode(self, embedding: Embedding, prompts: Prompts,
                      prev_logits: np.ndarray | None = None, *,
                      multimask: bool | None = None, text: str | None = None) -> MaskPrediction:
        """Async :meth:`decode` (native httpx I/O, the same checks)."""
        sets, prev, mode = self.checked_inputs(embedding, [prompts], [prev_logits], multimask, text)
        body = self._predict_body(embedding, sets[0], prev[0], mode)
        data = await self._awith_image(embedding, "/v1/predict", body)
        predictions = [self._prediction(data, embedding.image_size)]
        self.check_outputs(predictions, 1, embedding.image_size)
        return predictions[0]

    async def adecode_batch(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                            prev_logits: Sequence[np.ndarray | None] | None = None, *,
                            multimask: bool | None = None,
                            text: str | Sequence[str | None] | None = None) -> list[MaskPrediction]:
        """Async :meth:`decode_batch`."""
        sets, prev, mode = self.checked_inputs(embedding, prompt_sets, prev_logits, multimask, text)
        body = self._batch_body(embedding, sets, prev, mode)
        data = await self._awith_image(embedding, "/v1/predict/batch", body)
        predictions = [self._prediction(p, embedding.image_size) for p in data["predictions"]]
        self.check_outputs(predictions, len(sets), embedding.image_size)
        return predictions

    # -- request bodies and responses ----------------------------------------------------
    def _handle(self, embedding: Embedding) -> RemoteImage:
        if not isinstance(embedding.features, RemoteImage):
            raise SegmenterError("this embedding comes from another backbone; encode the image "
                                 "with the remote backbone first")
        return embedding.features

    def _prompt_set(self, prompts: Prompts, prev: np.ndarray | None) -> dict:
        """One checked prompt set as the server's JSON (the text only for a text backbone)."""
        body: dict[str, Any] = {"points": [{"x": int(p.x), "y": int(p.y), "label": p.label}
                                           for p in prompts.points]}
        if prompts.text is not None and self.accepts_text:
            body["text"] = prompts.text
        if prompts.box is not None:
            body["box"] = dict(zip(("x1", "y1", "x2", "y2"), map(int, prompts.box.as_tuple())))
        if prev is not None:
            body["prev_logits"] = pack_array(prev, self.logits_dtype)
        return body

    def _options(self, multimask: bool) -> dict:
        return {"mask_format": "rle", "return_logits": True, "logits_dtype": self.logits_dtype,
                "multimask": bool(multimask)}

    def _predict_body(self, embedding, prompts, prev, multimask) -> dict:
        return {"image_id": self._handle(embedding).image_id, **self._prompt_set(prompts, prev),
                **self._options(multimask)}

    def _batch_body(self, embedding, prompt_sets, prev_logits, multimask) -> dict:
        return {"image_id": self._handle(embedding).image_id, **self._options(multimask),
                "items": [self._prompt_set(p, lg) for p, lg in zip(prompt_sets, prev_logits)]}

    @staticmethod
    def _prediction(data: dict, image_size: tuple[int, int]) -> MaskPrediction:
        mask = decode_mask(data["mask"])
        if mask.shape != tuple(image_size):
            raise SegmenterError(f"the server returned a {mask.shape} mask for a {image_size} image")
        logits = unpack_array(data["logits"], "logits").reshape(LOW_RES, LOW_RES)
        score = data.get("score")
        return MaskPrediction(mask=mask, low_res_logits=logits,
                              score=float("nan") if score is None else float(score))

    # -- sync transport ------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _sync_client(self):
        if self._client is None:
            import httpx

            self._client = httpx.Client(base_url=self.url, timeout=self.timeout, verify=self.verify,
                                        headers=self._headers())
        return self._client

    def _request(self, method: str, path: str, **kwargs):
        import httpx

        for attempt in range(self.retries + 1):
            try:
                outcome = self._sync_client().request(method, path, **kwargs)
            except httpx.TransportError as exc:
                outcome = exc
            response = self._settle(attempt, outcome)
            if response is not None:
                return response
            time.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_encoded(self, image: np.ndarray, key: str) -> None:
        try:
            self._request("POST", f"/v1/images/{key}/encode")
        except _ImageGone:
            files = {"file": ("image.png", png_bytes(image), "image/png")}
            self._check_id(self._request("POST", "/v1/images", params={"encode": "true"},
                                         files=files).json(), key)

    def _with_image(self, embedding: Embedding, call) -> dict:
        try:
            return call().json()
        except _ImageGone:  # the server restarted or dropped it: upload again, retry once
            handle = self._handle(embedding)
            self._ensure_encoded(handle.image, handle.image_id)
            return call().json()

    # -- async transport --------------------------------------------------------
    def _async_client(self):
        import httpx

        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._aclients[loop] = httpx.AsyncClient(
                base_url=self.url, timeout=self.timeout, verify=self.verify, headers=self._headers())
        return client

    async def _arequest(self, method: str, path: str, **kwargs):
        import httpx

        for attempt in range(self.retries + 1):
            try:
                outcome = await self._async_client().request(method, path, **kwargs)
            except httpx.TransportError as exc:
                outcome = exc
            response = self._settle(attempt, outcome)
            if response is not None:
                return response
            await asyncio.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _aensure_encoded(self, image: np.ndarray, key: str) -> None:
        try:
            await self._arequest("POST", f"/v1/images/{key}/encode")
        except _ImageGone:
            data = await asyncio.to_thread(png_bytes, image)
            files = {"file": ("image.png", data, "image/png")}
            response = await self._arequest("POST", "/v1/images", params={"encode": "true"},
                                            files=files)
            self._check_id(response.json(), key)

    async def _awith_image(self, embedding: Embedding, path: str, body: dict) -> dict:
        try:
            return (await self._arequest("POST", path, json=body)).json()
        except _ImageGone:
            handle = self._handle(embedding)
            await self._aensure_encoded(handle.image, handle.image_id)
            return (await self._arequest("POST", path, json=body)).json()

    # -- the retry rule (both transports) ---------------------------------------------
    def _settle(self, attempt: int, outcome: Any):
        """What attempt number ``attempt`` (from 0) leads to, given its ``outcome``: a response
        or the transport error it raised. A connection error or a 502/503/504 is retried
        (None: wait :func:`_backoff` and try again) until ``retries`` retries are spent; then
        a connection error raises :meth:`_unreachable`, and any response is checked and
        returned (:meth:`_check` raises for an error status)."""
        last = attempt == self.retries
        if isinstance(outcome, Exception):
            if last:
                raise self._unreachable(outcome) from None
            return None
        if outcome.status_code in RETRY_STATUSES and not last:
            return None
        return self._check(outcome)

    # -- errors ----------------------------------------------------------------------
    def _unreachable(self, exc: Exception) -> SegmenterError:
        return SegmenterError(f"cannot reach the msagent server at {self.url} "
                              f"({type(exc).__name__}: {exc}); start one with `msagent serve "
                              f"--backbone NAME` or fix url= / ${ENV_URL}")

    def _check(self, response):
        if response.status_code < 400:
            return response
        try:
            body = response.json()
        except ValueError:
            body = {}
        detail = body.get("detail") if isinstance(body, dict) else None
        code = body.get("code") if isinstance(body, dict) else None
        if code == "image_not_found":
            raise _ImageGone(detail)
        detail = detail or response.text[:300] or response.reason_phrase
        if response.status_code == 401:
            raise SegmenterError(f"the server at {self.url} refused the API key: {detail}")
        if response.status_code == 413 or code == "too_large":
            raise InvalidImage(f"the server at {self.url} refused the image: {detail}")
        raise SegmenterError(f"the server at {self.url} answered {response.status_code}: {detail}")

    @staticmethod
    def _check_id(data: dict, key: str) -> None:
        if data.get("image_id") != key:
            raise SegmenterError(f"the server hashed the uploaded image as {data.get('image_id')!r}, "
                                 f"not {key!r}; client and server disagree on image decoding")

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Close the sync HTTP client (async clients close with :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def __getstate__(self) -> dict:
        """Picklable (for process pools and Ray): clients and the handle cache are rebuilt."""
        state = self.__dict__.copy()
        state.pop("_embedding_cache", None)  # locks do not pickle: rebuilt by __setstate__
        state.update(_client=None, _aclients=None, _uploads={}, _cache=self.cache_info().maxsize)
        return state

    def __setstate__(self, state: dict) -> None:
        cache_size = state.pop("_cache")
        self.__dict__.update(state)
        Segmenter.__init__(self, cache_size=cache_size)
        self._aclients = weakref.WeakKeyDictionary()


def _backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (from 0): 0.25, 0.5, 1, ..."""
    return 0.25 * 2 ** attempt


def _raise_miss():
    raise _Miss
