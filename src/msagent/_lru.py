"""One bounded, thread-safe LRU map for the caches and stores that keep "the most recent N".

The stores of the server (volumes, runs, policies, images, session origins), the embedding
cache every backbone owns and the 3-D run's resident slice embeddings all hold at most
``maxsize`` entries (and, optionally, at most ``max_weight`` of some measure such as bytes)
and drop the least recently used first. :meth:`BoundedLRU.get` counts as a use;
:meth:`BoundedLRU.peek` does not, so a store that is bounded by insertion order only (first
in, first out) reads with ``peek``. :meth:`BoundedLRU.get_or_compute` is single-flight:
concurrent misses on one key compute it once (the others wait, then hit), and ``hits`` /
``misses`` count its lookups.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from functools import partial
from typing import Final, Literal, TypeVar, overload

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


class _Missing(enum.Enum):
    """The sentinel of a key that is absent (an enum member, so ``is`` narrows it)."""

    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


class BoundedLRU(Mapping[K, V]):
    """At most ``maxsize`` entries (``maxsize <= 0`` keeps none), least recently used dropped
    first; it reads as a :class:`~collections.abc.Mapping` (``lru[key]`` and iteration do not
    count as uses). With ``weigh`` (value -> number) and ``max_weight``, entries are also dropped while
    their total weight is over ``max_weight``, but the newest entry is always kept."""

    def __init__(self, maxsize: int, *, weigh: Callable[[V], float] | None = None,
                 max_weight: float | None = None) -> None:
        if (weigh is None) != (max_weight is None):
            raise ValueError("BoundedLRU: give weigh and max_weight together, or neither")
        self.maxsize = maxsize
        self.max_weight = max_weight
        self._weigh = weigh
        self._items: OrderedDict[K, V] = OrderedDict()
        self._weight = 0.0
        self._lock = threading.Lock()
        self._pending: dict[K, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The value of ``key``; on a miss ``compute()`` stores it. Concurrent misses on one
        key compute once: latecomers wait for the first and then hit. A failed compute stores
        nothing (the next caller tries again)."""
        with self._lock:
            if (hit := self._hit(key)) is not _MISSING:
                return hit
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if (hit := self._hit(key)) is not _MISSING:
                    return hit
                self.misses += 1
            try:
                value = compute()
                with self._lock:
                    self._store(key, value)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
        return value

    def get_or_compute_many(self, keys: Sequence[K], compute_many: Callable[[list[K]], Sequence[V]]
                            ) -> list[V]:
        """Values for ``keys``: hits from the map, the misses nobody is computing in one
        ``compute_many(missing_keys)`` call (values in that order), and keys another thread is
        computing waited for (so concurrent batches compute each key once)."""
        found: dict[K, V] = {}
        owned: dict[K, threading.Lock] = {}
        with self._lock:
            for key in dict.fromkeys(keys):
                if (hit := self._hit(key)) is not _MISSING:
                    found[key] = hit
                elif key not in self._pending:  # claim it: others wait on its lock
                    owned[key] = self._pending[key] = threading.Lock()
                    owned[key].acquire()
                    self.misses += 1
        try:
            if owned:
                values = list(compute_many(list(owned)))
                found.update(zip(owned, values, strict=True))
                with self._lock:
                    for key in owned:
                        self._store(key, found[key])
        finally:
            with self._lock:
                for key, lock in owned.items():
                    self._pending.pop(key, None)
                    lock.release()

        def compute_one(key: K) -> V:
            return compute_many([key])[0]

        for key in keys:  # being computed by another thread: wait for it
            if key not in found:
                found[key] = self.get_or_compute(key, partial(compute_one, key))
        return [found[key] for key in keys]

    def _hit(self, key: K) -> V | Literal[_Missing.MISSING]:
        """The value (counted as a hit, marked used), or ``_MISSING``; call with the lock held."""
        value = self._items.get(key, _MISSING)
        if value is not _MISSING:
            self.hits += 1
            self._items.move_to_end(key)
        return value

    def _store(self, key: K, value: V) -> list[tuple[K, V]]:
        """:meth:`put` with the lock held."""
        if key in self._items:
            self._weight -= self._weight_of(self._items[key])
        self._items[key] = value
        self._items.move_to_end(key)
        self._weight += self._weight_of(value)
        return self._evict()

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V) -> V: ...
    @overload
    def get(self, key: K, default: T) -> V | T: ...

    def get(self, key: K, default: V | T | None = None) -> V | T | None:
        """The value of ``key`` (marked as the most recently used), else ``default``."""
        with self._lock:
            value = self._items.get(key, _MISSING)
            if value is _MISSING:
                return default
            self._items.move_to_end(key)
            return value

    def peek(self, key: K, default: V | None = None) -> V | None:
        """The value of ``key`` without marking it used, else ``default``."""
        with self._lock:
            return self._items.get(key, default)

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Store ``value`` as the most recently used; returns the entries dropped for room."""
        with self._lock:
            return self._store(key, value)

    def add(self, key: K, value: V) -> bool:
        """Store ``value`` unless ``key`` is present (then only mark it used); True if stored."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return False
            self._items[key] = value
            self._weight += self._weight_of(value)
            self._evict()
            return True

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key`` and return its value, else ``default``."""
        with self._lock:
            value = self._items.pop(key, _MISSING)
            if value is _MISSING:
                return default
            self._weight -= self._weight_of(value)
            return value

    def clear(self) -> None:
        """Drop every entry and reset the hit and miss counts."""
        with self._lock:
            self._items.clear()
            self._weight = 0.0
            self.hits = self.misses = 0

    def __getitem__(self, key: K) -> V:
        with self._lock:
            return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # a list in use order, not Mapping's set-like KeysView (callers compare it with lists);
    # no type is both: a list's <, <=, ... compare in order, a KeysView's test subsets
    def keys(self) -> list[K]:  # type: ignore[override]
        """The keys, least recently used first."""
        with self._lock:
            return list(self._items)

    @property
    def weight(self) -> float:
        """The total weight of the entries (0 without ``weigh``)."""
        with self._lock:
            return self._weight

    def _weight_of(self, value: V) -> float:
        return 0.0 if self._weigh is None else float(self._weigh(value))

    def _evict(self) -> list[tuple[K, V]]:
        dropped = []
        while self._items and (len(self._items) > self.maxsize or self._overweight()):
            key, value = self._items.popitem(last=False)
            self._weight -= self._weight_of(value)
            dropped.append((key, value))
        return dropped

    def _overweight(self) -> bool:
        return (self.max_weight is not None and self._weight > self.max_weight
                and len(self._items) > 1)
