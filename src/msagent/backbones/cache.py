"""The content-hash embedding cache every :class:`msagent.Segmenter` owns: the one bounded LRU
(:class:`msagent._lru.BoundedLRU`, single-flight: concurrent misses on one image encode it
once, single images and batches alike), keyed by content hash and generic over the value."""

from __future__ import annotations

from typing import Protocol, TypeVar

import attrs

from msagent._lru import BoundedLRU


@attrs.frozen
class CacheInfo:
    hits: int
    misses: int
    size: int
    maxsize: int


class Keyed(Protocol):
    """A value that knows its content-hash key (an :class:`~msagent.Embedding`)."""

    @property
    def key(self) -> str: ...


V = TypeVar("V", bound=Keyed)


class EmbeddingCache(BoundedLRU[str, V]):
    """The most recent ``maxsize`` values by their ``key`` (``maxsize <= 0`` keeps none)."""

    def contains(self, key: str) -> bool:
        return key in self

    def put(self, value: V) -> None:  # type: ignore[override]  # keyed by the value itself
        """Store a value computed outside :meth:`get_or_compute` (counts as a miss)."""
        with self._lock:
            self.misses += 1
            self._store(value.key, value)

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._items), self.maxsize)
