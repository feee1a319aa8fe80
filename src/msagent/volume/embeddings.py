"""One run's slice embeddings, each slice encoded once per run whatever visits it
(propagation, the key and review episodes, an interactive session).

Memory policy: the ``max_in_memory`` most recently used embeddings stay as they are (on the
backbone's device, in the one bounded LRU); older ones are pickled to a private temporary
folder and loaded back when needed (the file is removed then), so a 512×512×300 CT holds at
most ``max_in_memory`` embeddings in memory.

Disk policy: a store spills at most ``max_spill_bytes`` (None: no limit of its own), and
stores that share a :class:`SpillBudget` at most its bytes together. An embedding that would
go past either is forgotten instead (:attr:`EmbeddingStore.forgotten` counts them) and encoded
again if a slice needs it later. :meth:`EmbeddingStore.close` removes the folder; so does the
store's finalizer (garbage collection, normal interpreter exit).

Slice encodes bypass the backbone's embedding cache (:meth:`msagent.Segmenter.encode_uncached`):
the store is the run's cache, and a volume's slices must not evict the images other users
keep there. ``work`` runs each encode (:data:`Work`): directly by default; a server passes one
that runs it in its pools with its timeouts and metrics.
"""

from __future__ import annotations

import functools
import pickle
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msagent._lru import BoundedLRU
from msagent.backbones.propagation import SliceStack
from msagent.backbones.segmenter import Embedding, Segmenter
from msagent.errors import InvalidInput

#: ``work(kind, fn)`` runs one piece of a volume's model work (``kind`` "encode" or "decode")
#: and returns ``fn()``
Work = Callable[[str, Callable[[], Any]], Any]


def direct(kind: str, fn: Callable[[], Any]) -> Any:
    """The default :data:`Work`: run ``fn`` here, now."""
    return fn()


class SpillBudget:
    """Bytes that the spill folders of several stores may hold together (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise InvalidInput(f"a spill budget is a number of bytes >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (nothing reserved) when they do not fit."""
        with self._lock:
            if self._used + size > self.max_bytes:
                return False
            self._used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._used = max(0, self._used - size)


class EmbeddingStore:
    """One run's slice embeddings, each encoded once (see the module docstring)."""

    def __init__(self, segmenter: Segmenter, stack: SliceStack, *, max_in_memory: int = 64,
                 max_spill_bytes: int | None = None, spill_budget: SpillBudget | None = None,
                 work: Work = direct) -> None:
        if max_in_memory < 1:
            raise InvalidInput(f"max_in_memory must be at least 1, got {max_in_memory}")
        if max_spill_bytes is not None and max_spill_bytes < 0:
            raise InvalidInput(f"max_spill_bytes must be >= 0 (or None), got {max_spill_bytes}")
        self.segmenter, self.stack, self.max_in_memory = segmenter, stack, int(max_in_memory)
        self.max_spill_bytes, self.spill_budget, self.work = max_spill_bytes, spill_budget, work
        self._resident: BoundedLRU[int, Embedding] = BoundedLRU(self.max_in_memory)
        self._spilled: dict[int, tuple[Path, int]] = {}
        self._folder: Path | None = None
        self._lock = threading.RLock()
        self._closed = False
        self.encodes = 0
        self.spilled_bytes = 0  # on disk now
        self.forgotten = 0  # embeddings dropped for the spill budgets (encoded again if needed)

    def __getitem__(self, index: int) -> Embedding:
        resident = self._resident.get(index)
        if resident is not None:
            return resident
        with self._lock:
            spilled = self._spilled.pop(index, None)
            if spilled is not None:
                path, size = spilled
                with open(path, "rb") as handle:  # our own file, written by _spill
                    embedding = pickle.load(handle)  # noqa: S301
                path.unlink(missing_ok=True)  # resident again: the file is not needed
                self._release(size)
        if spilled is None:
            image = self.stack.image(index)
            embedding = self.work("encode", functools.partial(self.segmenter.encode_uncached, image))
            self.encodes += 1
        if self._closed:
            return embedding
        for dropped, value in self._resident.put(index, embedding):
            self._spill(dropped, value)
        return embedding

    def __contains__(self, index: int) -> bool:
        return index in self._resident or index in self._spilled

    @property
    def in_memory(self) -> int:
        return len(self._resident)

    @property
    def folder(self) -> Path | None:
        """The private spill folder (None before the first spill and after :meth:`close`)."""
        return self._folder

    def _spill(self, index: int, embedding: Embedding) -> None:
        """Write an embedding dropped from memory to the store's private folder, if the spill
        budgets have room (else forget it)."""
        data = pickle.dumps(embedding, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._closed or (self.max_spill_bytes is not None
                                and self.spilled_bytes + len(data) > self.max_spill_bytes) \
                    or (self.spill_budget is not None and not self.spill_budget.take(len(data))):
                self.forgotten += 1
                return
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="msagent-embeddings-"))
                # removed by close(), else when the store is dropped or the process exits
                self._remove = weakref.finalize(self, shutil.rmtree, self._folder, True)
            path = self._folder / f"{index}.pkl"
            try:
                path.write_bytes(data)
            except OSError:  # a full disk: forget it (encoded again if needed)
                path.unlink(missing_ok=True)
                if self.spill_budget is not None:
                    self.spill_budget.give(len(data))
                self.forgotten += 1
                return
            self._spilled[index] = (path, len(data))
            self.spilled_bytes += len(data)

    def _release(self, size: int) -> None:
        self.spilled_bytes -= size
        if self.spill_budget is not None:
            self.spill_budget.give(size)

    def close(self) -> None:
        """Drop every embedding and remove the spill folder (idempotent; a store used after
        it encodes as asked but keeps nothing)."""
        with self._lock:
            self._closed = True
            self._resident.clear()
            for _, size in self._spilled.values():
                self._release(size)
            self._spilled.clear()
            if self._folder is not None:
                self._remove()
                self._folder = None
