"""The content-hash embedding cache every :class:`msagent.Segmenter` owns: a thread-safe LRU in
which concurrent misses on one image encode it once (single images and batches alike)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from msagent.backbones.segmenter import Embedding


@attrs.frozen
class CacheInfo:
    hits: int
    misses: int
    size: int
    maxsize: int


class EmbeddingCache:
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
