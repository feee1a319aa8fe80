"""One run's slice embeddings, each slice encoded once per run whatever visits it
(propagation, the key and review episodes, an interactive session).

Memory policy: the ``max_in_memory`` most recently used embeddings stay as they are (on the
backbone's device, in the one bounded LRU); older ones are pickled to a private temporary
folder and loaded back when needed (the file is removed then), so a 512×512×300 CT holds at
most ``max_in_memory`` embeddings in memory.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
import weakref
from pathlib import Path

from msagent._lru import BoundedLRU
from msagent.backbones.propagation import SliceStack
from msagent.backbones.segmenter import Embedding, Segmenter
from msagent.errors import InvalidInput


class EmbeddingStore:
    """One run's slice embeddings, each encoded once (see the module docstring)."""

    def __init__(self, segmenter: Segmenter, stack: SliceStack, *, max_in_memory: int = 64) -> None:
        if max_in_memory < 1:
            raise InvalidInput(f"max_in_memory must be at least 1, got {max_in_memory}")
        self.segmenter, self.stack, self.max_in_memory = segmenter, stack, int(max_in_memory)
        self._resident: BoundedLRU[int, Embedding] = BoundedLRU(self.max_in_memory)
        self._spilled: dict[int, Path] = {}
        self._folder: Path | None = None
        self.encodes = 0

    def __getitem__(self, index: int) -> Embedding:
        resident = self._resident.get(index)
        if resident is not None:
            return resident
        if index in self._spilled:
            path = self._spilled.pop(index)
            with open(path, "rb") as handle:  # our own file, written by _spill
                embedding = pickle.load(handle)  # noqa: S301
            path.unlink(missing_ok=True)  # resident again: the file is not needed
        else:
            embedding = self.segmenter.encode(self.stack.image(index))
            self.encodes += 1
        for dropped, value in self._resident.put(index, embedding):
            self._spill(dropped, value)
        return embedding

    def __contains__(self, index: int) -> bool:
        return index in self._resident or index in self._spilled

    @property
    def in_memory(self) -> int:
        return len(self._resident)

    def _spill(self, index: int, embedding: Embedding) -> None:
        """Write an embedding dropped from memory to the store's private folder."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="msagent-embeddings-"))
            # removed by close(), else when the store is dropped or the process exits
            self._remove = weakref.finalize(self, shutil.rmtree, self._folder, True)
        path = self._folder / f"{index}.pkl"
        with open(path, "wb") as handle:
            pickle.dump(embedding, handle, protocol=pickle.HIGHEST_PROTOCOL)
        self._spilled[index] = path

    def close(self) -> None:
        self._resident.clear()
        self._spilled.clear()
        if self._folder is not None:
            self._remove()
            self._folder = None
