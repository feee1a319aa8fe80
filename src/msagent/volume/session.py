"""The interactive 3-D session: one volume, prompts on any slice, propagation, undo.

Its verbs (in the spirit of nnInteractive's session): :meth:`VolumeSession.add_box` and
:meth:`~VolumeSession.add_point` on a slice, :meth:`~VolumeSession.propagate`,
:meth:`~VolumeSession.undo`, :meth:`~VolumeSession.slice_view` and :meth:`~VolumeSession.masks`.
Refusals are :class:`VolumeSessionError` values (core errors; the web app maps them to HTTP).
A :class:`VolumeSession` holds one target through one plane of a volume:

- the slices as the page shows them (:func:`msagent.volume.stack.build_stack` with the
  volume's window, applied once), their embeddings (:class:`msagent.volume.embeddings.EmbeddingStore`:
  each slice is encoded once per session, whatever visits it) and a propagator
  (:func:`msagent.volume.propagation.propagator_for`: the backbone's native one, or generic);
- per prompted slice an :class:`msagent.agent.episode.EpisodeState` (the episode core's rule: the
  box and every click so far, the previous logits). A slice's first prompt starts from its
  propagated mask when it has one (:func:`msagent.agent.refine.initial_state`, as the review
  episodes of :mod:`msagent.volume.agent` do), so a click corrects that mask; a prompted
  slice's mask is its seed (``Seed(mask, prompts)``) at the next propagation;
- a history of :class:`Snapshot` values (the prompted slices, the last propagation's result
  and the seeds it carried), one per prompt or propagation.

The undo rule: undo restores the previous snapshot at once (its result was kept, packed one
bit per pixel). When the restored snapshot's propagation carried other seeds than the live
propagator holds (an undone propagation), the propagator is rebuilt empty (a propagator
cannot drop a seed); the next propagation then gives it every prompted slice again. Generic
propagation then decodes the reached slices again but encodes nothing (the session keeps its
embeddings); a native propagator (SAM2's video memory) also encodes its frames again.

Bounds: the most recent :data:`MAX_VOLUME_SESSIONS` sessions (the oldest is closed for the
next), :data:`MAX_HISTORY` undo steps, :data:`MAX_IN_MEMORY` embeddings in memory per session
(older ones spill to a private temporary folder), the server's ``max_points`` clicks per slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping

import attrs
import numpy as np

from msagent._lru import BoundedLRU
from msagent.agent import episode
from msagent.agent.episode import EpisodeState
from msagent.agent.refine import initial_state
from msagent.backbones.propagation import Propagator, Seed
from msagent.backbones.segmenter import Embedding, Segmenter
from msagent.errors import InvalidInput, MsAgentError
from msagent.types import BBox, MaskPrediction, Point, Prompts
from msagent.volume.embeddings import EmbeddingStore
from msagent.volume.propagation import GenericPropagator, propagator_for
from msagent.volume.stack import SlicedVolume

MAX_VOLUME_SESSIONS = 4
MAX_HISTORY = 16
MAX_IN_MEMORY = 32


class VolumeSessionError(MsAgentError):
    """A volume session refuses an operation."""


class VolumeSessionNotFound(VolumeSessionError, LookupError):
    """No live session by that id (never made, deleted, or dropped for a newer one)."""


class SliceOutOfRange(VolumeSessionError, InvalidInput):
    """A slice index outside the session's plane."""


class NothingToDo(VolumeSessionError):
    """Propagate before any prompt, or undo with no step to undo."""


@attrs.frozen(eq=False)
class SliceResult:
    """A propagated slice's mask packed one bit per pixel, its area and predicted score."""

    bits: np.ndarray
    area: int
    score: float

    @classmethod
    def of(cls, prediction: MaskPrediction) -> "SliceResult":
        mask = np.asarray(prediction.mask, bool)
        return cls(np.packbits(mask, axis=None), int(mask.sum()), float(prediction.score))

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        return np.unpackbits(self.bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)


@attrs.frozen(eq=False)
class Snapshot:
    """One undo step: ``prompted`` slice → its episode state, ``results`` the last
    propagation's slices with target (None before the first), ``propagated`` the prompted
    states that propagation carried, ``action`` what made the snapshot."""

    prompted: Mapping[int, EpisodeState] = attrs.field(factory=dict)
    results: Mapping[int, SliceResult] | None = None
    propagated: Mapping[int, EpisodeState] = attrs.field(factory=dict)
    action: str = "start"

    @property
    def pending(self) -> list[int]:
        """Prompted slices whose current mask the last propagation did not carry."""
        return sorted(i for i, s in self.prompted.items() if self.propagated.get(i) is not s)


@attrs.frozen(eq=False)
class SliceView:
    """What a slice shows: its mask, where it came from ("seed", "propagated" or "none"),
    the score, and the prompts in force on a prompted slice."""

    mask: np.ndarray
    source: str
    score: float | None
    prompts: Prompts | None


class VolumeSession:
    """One target through one plane of a volume (see the module docstring). Callers that
    share a session between threads or tasks hold :attr:`lock` around every operation; the
    heavy ones (encodes, decodes, propagation) block, so async callers run them in a thread.

    ``volume_id`` names the volume for the caller's lookups; ``source`` is kept for the
    caller (the web app keeps its stored volume there, for export)."""

    def __init__(self, sliced: SlicedVolume, segmenter: Segmenter, *, method: str = "auto",
                 target: str, text: str | None = None, volume_id: str = "",
                 source: object = None) -> None:
        self.id = uuid.uuid4().hex
        self.volume_id, self.source = volume_id, source
        self.sliced, self.segmenter = sliced, segmenter
        self.method, self.target, self.text = method, target, text
        self.store = EmbeddingStore(segmenter, sliced.slices, max_in_memory=MAX_IN_MEMORY)
        self.propagator: Propagator = self._new_propagator()
        self.history: list[Snapshot] = [Snapshot()]
        self.lock = asyncio.Lock()
        self.version = 0  # changes with every prompt, propagation and undo
        self.prompt_decodes = 0
        self._decodes_before = 0  # propagation decodes of propagators rebuilt by undo
        self.created_at = time.time()
        self._given: dict[int, EpisodeState] = {}  # the seeds the live propagator holds
        self._live: dict[int, tuple[MaskPrediction, SliceResult]] = {}
        self._closed = False

    # -- what it is -----------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self.sliced.slices.count

    @property
    def image_size(self) -> tuple[int, int]:
        return self.sliced.slices.image_size

    @property
    def state(self) -> Snapshot:
        return self.history[-1]

    @property
    def encodes(self) -> int:
        native = self.propagator.encodes if not isinstance(self.propagator, GenericPropagator) else 0
        return self.store.encodes + native

    @property
    def decodes(self) -> int:
        return self.prompt_decodes + self._decodes_before + self.propagator.decodes

    def check_index(self, index: int) -> int:
        if not 0 <= index < self.count:
            raise SliceOutOfRange(f"slice {index} is outside this session's "
                                  f"{self.sliced.where} slices 0..{self.count - 1}")
        return index

    # -- prompts --------------------------------------------------------------------------
    def add_box(self, index: int, box: BBox) -> SliceView:
        """Add ``box`` on slice ``index`` (replacing its box) and decode there; what it shows."""
        return self._add(index, box)

    def add_point(self, index: int, point: Point) -> SliceView:
        """Add a click (``point.label`` 1 positive, 0 negative) on slice ``index``; what it shows."""
        return self._add(index, point)

    def _add(self, index: int, prompt: BBox | Point) -> SliceView:
        state = self.slice_state(index)
        self.add_prompted(index, episode.step(episode.segmenter_decoder(self.segmenter), state,
                                              prompt))
        return self.slice_view(index)

    def slice_state(self, index: int) -> EpisodeState:
        """Slice ``index``'s episode state: the prompted one, else a fresh one starting from
        its propagated mask (if any). Encodes the slice on first use (run it in a thread)."""
        self.check_index(index)
        current = self.state.prompted.get(index)
        if current is not None:  # its embedding is the store's (the history keeps none)
            return attrs.evolve(current, embedding=self.store[index])
        embedding: Embedding = self.store[index]
        result = None if self.state.results is None else self.state.results.get(index)
        if result is None:
            return episode.start(embedding, text=self.text)
        prediction, prompts = initial_state(self.segmenter, result.mask(self.image_size))
        return episode.start(embedding, text=self.text, initial=prediction,
                             prompts=attrs.evolve(prompts, text=self.text))

    def add_prompted(self, index: int, state: EpisodeState) -> None:
        """Make ``state`` (a step's result) slice ``index``'s state: a new undo step."""
        self.prompt_decodes += 1
        # without its embedding: a state per prompted slice would otherwise keep every
        # prompted slice's embedding in memory, past MAX_IN_MEMORY (slice_state puts it back)
        state = attrs.evolve(state, embedding=None)
        current = self.state
        self._push(attrs.evolve(current, prompted={**current.prompted, index: state},
                                action="prompt"))

    # -- propagation -----------------------------------------------------------------------
    def propagate(self) -> bool:
        """Carry the prompted slices through the volume (blocking: run it in a thread).
        Returns False when nothing changed since the last propagation."""
        current = self.state
        if not current.prompted:
            raise NothingToDo("nothing to propagate yet: add a box or a click on a slice with "
                              "the target first")
        changed = {i: s for i, s in current.prompted.items() if self._given.get(i) is not s}
        if not changed and current.results is not None:
            return False
        try:
            for index, state in sorted(changed.items()):
                self.propagator.add_seed(index, Seed(state.prediction.mask, state.prompts))
                self._given[index] = state
            results = self.propagator.propagate()
        except BaseException:
            self._rebuild()  # what the propagator holds is unknown now: start it over
            raise
        packed = {}
        for index, prediction in results.items():
            live = self._live.get(index)
            packed[index] = live[1] if live is not None and live[0] is prediction \
                else SliceResult.of(prediction)  # generic keeps unchanged slices' objects
        self._live = {i: (p, packed[i]) for i, p in results.items()}
        self._push(Snapshot(current.prompted, packed, dict(self._given), "propagate"))
        return True

    # -- undo -------------------------------------------------------------------------------
    def undo(self) -> Snapshot:
        """Go back one prompt or propagation (see the module docstring); the undone snapshot."""
        if len(self.history) < 2:
            raise NothingToDo("nothing to undo: add a prompt or propagate first")
        undone = self.history.pop()
        self.version += 1
        restored = self.state
        if not _same_states(restored.propagated, self._given):
            self._rebuild()
        return undone

    def _rebuild(self) -> None:
        self._drop_propagator()
        self.propagator = self._new_propagator()
        self._given, self._live = {}, {}

    def _new_propagator(self) -> Propagator:
        return propagator_for(self.segmenter, self.sliced.slices, self.method, store=self.store)

    def _drop_propagator(self) -> None:
        self._decodes_before += self.propagator.decodes
        if not isinstance(self.propagator, GenericPropagator):  # generic's close closes our store
            self.propagator.close()

    def _push(self, snapshot: Snapshot) -> None:
        self.history.append(snapshot)
        del self.history[:-(MAX_HISTORY + 1)]
        self.version += 1

    # -- what the page shows -------------------------------------------------------------------
    def slice_view(self, index: int) -> SliceView:
        self.check_index(index)
        current = self.state
        state = current.prompted.get(index)
        if state is not None:
            return SliceView(state.prediction.mask, "seed", state.prediction.score, state.prompts)
        result = None if current.results is None else current.results.get(index)
        if result is not None:
            return SliceView(result.mask(self.image_size), "propagated", result.score, None)
        return SliceView(np.zeros(self.image_size, bool), "none", None, None)

    def summary(self) -> list[tuple[int, str, int, float | None]]:
        """(slice, source, area, score) of every slice showing a mask, in slice order."""
        current = self.state
        rows = {i: ("propagated", r.area, r.score) for i, r in (current.results or {}).items()}
        for index, state in current.prompted.items():
            mask = state.prediction.mask
            if mask.any():
                rows[index] = ("seed", int(np.count_nonzero(mask)), float(state.prediction.score))
            else:
                rows.pop(index, None)  # an empty seed: no target on this slice
        return [(i, *rows[i]) for i in sorted(rows)]

    def masks(self) -> np.ndarray:
        """What every slice shows, count × H × W bool in display order."""
        current = self.state
        out = np.zeros(self.sliced.slices.gray.shape, bool)
        for index, result in (current.results or {}).items():
            out[index] = result.mask(self.image_size)
        for index, state in current.prompted.items():
            out[index] = state.prediction.mask
        return out

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_propagator()
        self.store.close()


def _same_states(a: Mapping[int, EpisodeState], b: Mapping[int, EpisodeState]) -> bool:
    return a.keys() == b.keys() and all(a[i] is b[i] for i in a)


class VolumeSessionStore:
    """Live volume sessions by id, the most recent ``max_items``; a dropped one is closed once
    its running operation (if any) ends."""

    def __init__(self, max_items: int = MAX_VOLUME_SESSIONS) -> None:
        self.max_items = max_items
        self._items: BoundedLRU[str, VolumeSession] = BoundedLRU(max_items)
        self._closing: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, session: VolumeSession) -> None:
        for _, dropped in self._items.put(session.id, session):
            self._close_later(dropped)

    def get(self, volume_id: str, session_id: str) -> VolumeSession:
        session = self._items.get(session_id)
        if session is None or session.volume_id != volume_id or session.closed:
            raise VolumeSessionNotFound(
                f"no volume session {session_id!r} on volume {volume_id!r} (the server keeps the "
                f"last {self.max_items}); start a new one")
        return session

    def delete(self, volume_id: str, session_id: str) -> None:
        session = self.get(volume_id, session_id)
        self._items.pop(session_id)
        self._close_later(session)

    @contextlib.asynccontextmanager
    async def using(self, session: VolumeSession) -> AsyncIterator[VolumeSession]:
        """Hold ``session``'s lock; a session closed meanwhile (dropped for a newer one,
        deleted) is not found."""
        async with session.lock:
            if session.closed:
                raise VolumeSessionNotFound(f"volume session {session.id!r} was closed (deleted, "
                                            f"or dropped for a newer one: the server keeps the "
                                            f"last {self.max_items}); start a new one")
            yield session

    def _close_later(self, session: VolumeSession) -> None:
        async def close() -> None:
            async with session.lock:
                await asyncio.to_thread(session.close)

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
