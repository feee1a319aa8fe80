"""The Segmenter contract: encode an image once, decode many prompt sets against it.

Shaped after segment-anything's ``SamPredictor`` (``set_image`` once, ``predict`` many),
but stateless: the embedding is a value the caller keeps, so one encoder serves many
concurrent episodes. The base class owns a content-hash LRU cache, so the same image is
encoded once however many episodes (or GRPO rollouts) use it.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from .errors import SegmenterError
from .types import MaskPrediction, Prompts

LOW_RES = 256  # side of the low-res logits every backbone returns and accepts as mask input


@attrs.frozen(eq=False)
class Embedding:
    """An encoded image. ``features`` is backbone-specific (tensors, on the model's device);
    ``image_size`` is the original (height, width); ``key`` the image's content hash."""

    features: Any
    image_size: tuple[int, int]
    key: str


@attrs.frozen
class CacheInfo:
    hits: int
    misses: int
    size: int
    maxsize: int


def image_key(image: np.ndarray) -> str:
    """Content hash of an image array (shape and dtype included)."""
    digest = hashlib.sha256()
    digest.update(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class _EmbeddingCache:
    """Thread-safe LRU keyed by content hash; concurrent misses on one key encode once."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute) -> Embedding:
        with self._lock:
            if (hit := self._hit(key)) is not None:
                return hit
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:  # one encode per key; latecomers wait here, then hit
            with self._lock:
                if (hit := self._hit(key)) is not None:
                    return hit
                self.misses += 1
            try:
                embedding = compute()
                with self._lock:
                    self._store(embedding)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
        return embedding

    def get_or_compute_many(self, keys: Sequence[str], compute_many) -> list[Embedding]:
        """Embeddings for ``keys``: hits from the cache, the misses nobody is encoding in one
        ``compute_many(missing_keys)`` call, and keys another thread is encoding waited for
        (so concurrent batches encode each image once)."""
        found: dict[str, Embedding] = {}
        owned: dict[str, threading.Lock] = {}
        with self._lock:
            for key in dict.fromkeys(keys):
                if (hit := self._hit(key)) is not None:
                    found[key] = hit
                elif key not in self._pending:  # claim it: others wait on its lock
                    owned[key] = self._pending[key] = threading.Lock()
                    owned[key].acquire()
                    self.misses += 1
        try:
            if owned:
                for embedding in compute_many(list(owned)):
                    found[embedding.key] = embedding
                with self._lock:
                    for key in owned:
                        self._store(found[key])
        finally:
            with self._lock:
                for key, lock in owned.items():
                    self._pending.pop(key, None)
                    lock.release()
        for key in keys:  # being encoded by another thread: wait for it
            if key not in found:
                found[key] = self.get_or_compute(key, lambda k=key: compute_many([k])[0])
        return [found[key] for key in keys]

    def _hit(self, key: str) -> Embedding | None:
        """The cached embedding (counted as a hit), or None; call with ``_lock`` held."""
        if key not in self._items:
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return self._items[key]

    def _store(self, embedding: Embedding) -> None:
        """Keep ``embedding``, dropping the least recently used; call with ``_lock`` held."""
        if self.maxsize > 0:
            self._items[embedding.key] = embedding
            self._items.move_to_end(embedding.key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def put(self, embedding: Embedding) -> None:
        """Store an embedding computed outside :meth:`get_or_compute` (counts as a miss)."""
        with self._lock:
            self.misses += 1
            self._store(embedding)

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._items), self.maxsize)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0


class Segmenter(ABC):
    """A promptable segmentation backbone.

    Subclasses implement :meth:`encode_image` (uncached) and :meth:`decode`; callers use
    :meth:`encode`, which goes through the cache. Images are H×W×3 ``uint8`` RGB in their
    original size; prompts are in original-image pixel XY; each subclass maps them to its own
    input size (aspect-correct for non-square images).
    """

    #: registered name, set by the plugin
    name: str = ""
    #: whether decode keeps the best of several candidate masks by default (backbones whose
    #: multimask heads were never trained, like LiteMedSAM, set False)
    multimask_default: bool = True
    #: whether :meth:`decode` takes a keyword-only ``text: str | None`` (the target, e.g.
    #: "liver") as an extra prompt; the Agent passes ``text=episode.target`` only then
    accepts_text: bool = False

    def __init__(self, *, cache_size: int = 16) -> None:
        self._cache = _EmbeddingCache(cache_size)

    # -- the cached front door -------------------------------------------------
    def encode(self, image: np.ndarray) -> Embedding:
        """Encode ``image`` (H×W×3 uint8), reusing a cached embedding for identical content."""
        return self.encode_with_key(image, image_key(image))

    def encode_with_key(self, image: np.ndarray, key: str) -> Embedding:
        """:meth:`encode` for a caller that already holds ``image_key(image)`` (a server that
        stores images by content hash): skips hashing the image again."""
        _check_image(image)
        return self._cache.get_or_compute(key, lambda: self._wrap(image, key))

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        """Encode several images, running the misses through :meth:`encode_images` in one
        batch (backbones with a batched encoder override that). Misses go through the cache's
        per-image locks, so concurrent calls encode each image once."""
        for image in images:
            _check_image(image)
        keys = [image_key(image) for image in images]
        by_key = dict(zip(keys, images))

        def compute_many(keys: list[str]) -> list[Embedding]:
            batch = [by_key[key] for key in keys]
            features = self.encode_images(batch) if len(batch) > 1 else [self.encode_image(batch[0])]
            return [Embedding(f, image.shape[:2], key) for key, image, f in zip(keys, batch, features)]

        return self._cache.get_or_compute_many(keys, compute_many)

    def cache_info(self) -> CacheInfo:
        return self._cache.info()

    def clear_cache(self) -> None:
        self._cache.clear()

    def _wrap(self, image: np.ndarray, key: str) -> Embedding:
        features = self.encode_image(image)
        return Embedding(features=features, image_size=image.shape[:2], key=key)

    # -- what a backbone implements --------------------------------------------
    @abstractmethod
    def encode_image(self, image: np.ndarray) -> Any:
        """Run the image encoder on H×W×3 uint8 RGB; return backbone-specific features."""

    def encode_images(self, images: Sequence[np.ndarray]) -> list[Any]:
        """Uncached encoder over several images; override where the model batches."""
        return [self.encode_image(image) for image in images]

    @abstractmethod
    def decode(
        self,
        embedding: Embedding,
        prompts: Prompts,
        prev_logits: np.ndarray | None = None,
        *,
        multimask: bool = True,
    ) -> MaskPrediction:
        """Predict a mask for ``prompts`` (pixel XY of the original image).

        ``prev_logits`` is the previous turn's 256×256 float32 low-res logits (or None).
        With ``multimask`` the candidate with the best predicted IoU is kept.
        Returns the H×W bool mask at the original size, the new low-res logits and the score.
        """

    def decode_batch(
        self,
        embedding: Embedding,
        prompt_sets: Sequence[Prompts],
        prev_logits: Sequence[np.ndarray | None] | None = None,
        *,
        multimask: bool = True,
    ) -> list[MaskPrediction]:
        """Decode several prompt sets against one embedding (backbones override to batch)."""
        prev = list(prev_logits) if prev_logits is not None else [None] * len(prompt_sets)
        if len(prev) != len(prompt_sets):
            raise SegmenterError(
                f"decode_batch got {len(prompt_sets)} prompt sets but {len(prev)} prev_logits"
            )
        return [self.decode(embedding, p, logits, multimask=multimask)
                for p, logits in zip(prompt_sets, prev)]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise SegmenterError(
            f"Segmenter.encode expects an H×W×3 uint8 RGB array, got shape {shape} dtype {dtype}; "
            "convert with msagent.io.to_rgb_uint8(image)"
        )


def check_prompts(prompts: Prompts, image_size: tuple[int, int]) -> None:
    """Raise SegmenterError if prompts are empty or fall outside the image."""
    if prompts.empty:
        raise SegmenterError("decode needs at least one box or point prompt")
    height, width = image_size
    coords = [(p.x, p.y) for p in prompts.points]
    if prompts.box is not None:
        coords += [(prompts.box.x1, prompts.box.y1), (prompts.box.x2, prompts.box.y2)]
    for x, y in coords:
        if not (0 <= x < width and 0 <= y < height):
            raise SegmenterError(
                f"prompt coordinate ({x}, {y}) lies outside the {width}×{height} image"
            )


def check_prev_logits(prev_logits: np.ndarray | None) -> np.ndarray | None:
    """Return prev_logits as a 256×256 float32 array (accepting 1×256×256 and 1×1×256×256)."""
    if prev_logits is None:
        return None
    logits = np.asarray(prev_logits, dtype=np.float32)
    logits = logits.reshape(logits.shape[-2:]) if logits.ndim > 2 and logits.size == LOW_RES ** 2 \
        else logits
    if logits.shape != (LOW_RES, LOW_RES):
        raise SegmenterError(
            f"prev_logits must be {LOW_RES}×{LOW_RES} low-res logits, got shape {logits.shape}"
        )
    return logits
