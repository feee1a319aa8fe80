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
  episodes of :mod:`msagent.volume.agent` do), so a click corrects that mask; under generic
  propagation's ``correction="local"`` a click keeps only the parts of its decode's change
  that reach it (:func:`msagent.volume.propagation.click_correction`); a prompted slice's
  mask is its seed (``Seed(mask, prompts)``) at the next propagation;
- a history of :class:`Snapshot` values (the prompted slices, the last propagation's result
  and the seeds it carried), one per prompt or propagation.

Propagation after the first is a correction: a generic propagator re-propagates each
changed prompted slice by its correction rule (:mod:`msagent.volume.propagation`: only as far
as the change carries, the same rule as the review corrections of
:mod:`msagent.volume.agent` and the clicks of the CVPR 3-D protocol), so a click changes the
slices near it and keeps the rest of the result.

The undo rule: undo restores the previous snapshot at once (its result was kept, packed one
bit per pixel). When the restored snapshot's propagation carried other seeds than the live
propagator holds (an undone propagation), the propagator is rebuilt (a propagator cannot drop
a seed): a generic one resumes from the restored result and its seeds
(:meth:`~msagent.volume.propagation.GenericPropagator.resume`), so the next propagation
corrects that result; a native one (SAM2's video memory) starts empty and the next
propagation gives it every prompted slice again (it encodes its frames again; generic
propagation encodes nothing again: the session keeps its embeddings).

Stopping a propagation: :meth:`VolumeSession.propagate` takes a ``deadline``; it stops between
slices once the deadline passes (:class:`PropagationTimedOut`), once :meth:`VolumeSession.cancel`
is called (:class:`PropagationCancelled`: an undo, a client that went away) or once the session
is dropped (:meth:`VolumeSession.drop`: deleted, evicted, expired; then
:class:`VolumeSessionNotFound`). A stopped propagation leaves the session as it was before it
(its partial result is discarded, the propagator rebuilt; the slices it encoded stay in the
session's embeddings, so a generic propagation tried again goes further).
:meth:`VolumeSession.propagation` reports progress while it runs and the outcome after.

Bounds per session: :data:`MAX_HISTORY` undo steps, ``max_in_memory`` embeddings in memory
(older ones spill to a private temporary folder within the spill budgets, else are encoded
again when needed: :mod:`msagent.volume.embeddings`), the server's ``max_points`` clicks per
slice. Owners, quotas and the sessions a server keeps: :mod:`msagent.volume.session_store`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from msagent.agent import episode
from msagent.agent.episode import EpisodeState
from msagent.agent.refine import initial_state
from msagent.backbones.propagation import PropagationStopped, Propagator, Seed
from msagent.backbones.segmenter import LOW_RES, Embedding, Segmenter
from msagent.errors import InvalidInput, MsAgentError
from msagent.types import BBox, MaskPrediction, Point, Prompts
from msagent.volume.embeddings import EmbeddingStore, SpillBudget, Work, direct
from msagent.volume.propagation import GenericPropagator, click_correction, propagator_for
from msagent.volume.stack import SlicedVolume

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


class PropagationTimedOut(VolumeSessionError):
    """A propagation reached its deadline and stopped; the session is as it was before it."""


class PropagationCancelled(VolumeSessionError):
    """A propagation was cancelled (:meth:`VolumeSession.cancel`); the session is as it was."""


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
                 source: object = None, owner: str = "", max_in_memory: int = MAX_IN_MEMORY,
                 max_spill_bytes: int | None = None, spill_budget: SpillBudget | None = None,
                 work: Work = direct) -> None:
        self.id = uuid.uuid4().hex
        self.volume_id, self.source, self.owner = volume_id, source, owner
        self.sliced, self.segmenter = sliced, segmenter
        self.method, self.target, self.text = method, target, text
        self.work = work
        self.store = EmbeddingStore(segmenter, sliced.slices, max_in_memory=max_in_memory,
                                    max_spill_bytes=max_spill_bytes, spill_budget=spill_budget,
                                    work=work)
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
        self.dropped: str | None = None  # why the session was dropped (deleted, evicted, ...)
        self.last_used = time.monotonic()  # the store's clock: idle expiry, eviction order
        self._stop = threading.Event()  # the running propagation's cancel flag
        self._stop_reason = ""
        self._progress: dict[str, Any] = {"running": False, "done": 0, "total": 0,
                                          "outcome": None, "detail": None, "seconds": 0.0}

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
        decoder = episode.segmenter_decoder(self.segmenter)
        after = self.work("decode", lambda: episode.step(decoder, state, prompt))
        propagator = self.propagator
        if isinstance(propagator, GenericPropagator) and propagator.correction == "local" \
                and isinstance(prompt, Point) and state.prediction is not None \
                and after.prediction is not None:  # a click corrects its slice near it only
            # the user judges their own slice (and can undo): a decode is not refused for
            # its score here, only trimmed to what reaches the click
            kept = click_correction(self.segmenter, state.prediction, after.prediction,
                                    (prompt.x, prompt.y), propagator.reach, math.inf)
            after = attrs.evolve(after, prediction=kept or state.prediction)
        self.add_prompted(index, after)
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
        # prompted slice's embedding in memory, past MAX_IN_MEMORY (slice_state puts it back
        # before any use: the None its type does not allow is never read)
        state = attrs.evolve(state, embedding=None)  # type: ignore[arg-type]
        current = self.state
        self._push(attrs.evolve(current, prompted={**current.prompted, index: state},
                                action="prompt"))

    # -- propagation -----------------------------------------------------------------------
    def propagate(self, *, deadline: float | None = None) -> bool:
        """Carry the prompted slices through the volume (blocking: run it in a thread).
        Returns False when nothing changed since the last propagation. Stops between slices
        at ``deadline`` (``time.monotonic()``), on :meth:`cancel` or :meth:`drop` (see the
        module docstring); :meth:`propagation` says how far it got."""
        current = self.state
        if not current.prompted:
            raise NothingToDo("nothing to propagate yet: add a box or a click on a slice with "
                              "the target first")
        self._check_live()
        changed = {i: s for i, s in current.prompted.items() if self._given.get(i) is not s}
        if not changed and current.results is not None:
            return False
        self._stop, self._stop_reason = threading.Event(), ""
        stop = self._stop
        started = time.monotonic()
        self._progress = {"running": True, "done": 0, "total": self.count, "outcome": None,
                          "detail": None, "seconds": 0.0, "_started": started}

        def should_stop() -> bool:
            if stop.is_set():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                self._stop_reason = "timeout"
                return True
            return False

        try:
            for index, state in sorted(changed.items()):
                self.propagator.add_seed(index, Seed(_prediction(state).mask, state.prompts))
                self._given[index] = state
            results = self.propagator.propagate_until(should_stop)
        except PropagationStopped as exc:
            self._rebuild()  # a partial result: start the propagator over
            raise self._stopped(exc.done, time.monotonic() - started) from None
        except BaseException as exc:
            self._rebuild()  # what the propagator holds is unknown now: start it over
            self._finish("failed", f"{type(exc).__name__}: {exc}", started)
            raise
        if stop.is_set():  # cancelled after its last slice: not kept either
            self._rebuild()
            raise self._stopped(self.propagator.progress, time.monotonic() - started)
        packed = {}
        for index, prediction in results.items():
            live = self._live.get(index)
            packed[index] = live[1] if live is not None and live[0] is prediction \
                else SliceResult.of(prediction)  # generic keeps unchanged slices' objects
        self._live = {i: (p, packed[i]) for i, p in results.items()}
        self._push(Snapshot(current.prompted, packed, dict(self._given), "propagate"))
        self._finish("complete", None, started, done=self.propagator.progress)
        return True

    def cancel(self, reason: str = "cancelled") -> bool:
        """Stop the running propagation at its next slice (thread-safe; True if one was
        running). It raises :class:`PropagationCancelled` (``reason`` in its message)."""
        running = bool(self._progress["running"])
        if running:
            self._stop_reason = reason
            self._stop.set()
        return running

    def drop(self, reason: str) -> None:
        """Mark the session dropped (``reason``: "deleted", "evicted", ...) and stop its
        running propagation; the caller closes it once its running operation ends. An
        operation that ends on a dropped session is not reported as done (its result is gone):
        :meth:`check_live` raises :class:`VolumeSessionNotFound`."""
        self.dropped = self.dropped or reason
        self._stop_reason = reason
        self._stop.set()

    def check_live(self) -> None:
        """Raise :class:`VolumeSessionNotFound` if the session was dropped or closed."""
        self._check_live()

    def _check_live(self) -> None:
        if self.dropped is not None or self._closed:
            raise VolumeSessionNotFound(
                f"volume session {self.id!r} was {self.dropped or 'closed'}; what this request "
                "did was not kept: start a new session")

    @property
    def running(self) -> bool:
        """Whether a propagation is running."""
        return bool(self._progress["running"])

    def propagation(self) -> dict[str, Any]:
        """The running or last propagation: ``running``, ``done`` (slices worked on so far),
        ``total`` (the plane's slices: a walk may end earlier, where the target ends),
        ``outcome`` (None while running or before the first; "complete", "timeout",
        "cancelled", "deleted"/"evicted"/"expired"/"closed" (dropped), "failed"), ``detail``,
        ``seconds`` and ``stopping`` (running, and asked to stop at its next slice)."""
        progress = dict(self._progress)
        started = progress.pop("_started", None)
        progress["stopping"] = bool(progress["running"] and self._stop.is_set())
        if progress["running"]:
            progress["done"] = int(getattr(self.propagator, "progress", 0))
            if started is not None:
                progress["seconds"] = round(time.monotonic() - started, 3)
        return progress

    def _finish(self, outcome: str, detail: str | None, started: float, done: int = 0) -> None:
        self._progress = {"running": False, "done": int(done), "total": self.count,
                          "outcome": outcome, "detail": detail,
                          "seconds": round(time.monotonic() - started, 3)}

    def _stopped(self, done: int, seconds: float) -> VolumeSessionError:
        """The error (and the recorded outcome) of a propagation stopped after ``done`` slices."""
        reason = self._stop_reason or "cancelled"
        outcome = "timeout" if reason == "timeout" else "cancelled"
        if self.dropped is not None:
            outcome = self.dropped.split()[0]  # deleted, evicted, expired, closed
        where = f"after {done} of at most {self.count} slices ({seconds:.1f} s)"
        if self.dropped is not None:
            error: VolumeSessionError = VolumeSessionNotFound(
                f"volume session {self.id!r} was {self.dropped} while propagating; the "
                f"propagation stopped {where} and its result was not kept: start a new session")
        elif reason == "timeout":
            error = PropagationTimedOut(
                f"the propagation reached its time limit and stopped {where}; the session is as "
                "it was before it. Propagate again (slices already encoded are kept, so a generic "
                "propagation goes further), or add seeds closer to the slices that matter")
        else:
            error = PropagationCancelled(f"the propagation was cancelled ({reason}) {where}; the "
                                         "session is as it was before it")
        self._progress = {"running": False, "done": int(done), "total": self.count,
                          "outcome": outcome, "detail": str(error),
                          "seconds": round(seconds, 3)}
        return error

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
        current = self.state
        if isinstance(self.propagator, GenericPropagator) and current.results is not None \
                and current.propagated:  # resume from the result the session shows
            shape = self.image_size
            results = {}
            for index, result in current.results.items():
                mask = result.mask(shape)
                logits = self.segmenter.mask_logits(mask)
                results[index] = MaskPrediction(
                    mask, np.zeros((LOW_RES, LOW_RES), np.float32) if logits is None else logits,
                    result.score)
            seeds = {i: Seed(_prediction(s).mask, s.prompts) for i, s in current.propagated.items()}
            self.propagator.resume(results, seeds)
            self._given = dict(current.propagated)
            self._live = {i: (p, current.results[i]) for i, p in results.items()}

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
            prediction = _prediction(state)
            return SliceView(prediction.mask, "seed", prediction.score, state.prompts)
        result = None if current.results is None else current.results.get(index)
        if result is not None:
            return SliceView(result.mask(self.image_size), "propagated", result.score, None)
        return SliceView(np.zeros(self.image_size, bool), "none", None, None)

    def summary(self) -> list[tuple[int, str, int, float | None]]:
        """(slice, source, area, score) of every slice showing a mask, in slice order."""
        current = self.state
        rows = {i: ("propagated", r.area, r.score) for i, r in (current.results or {}).items()}
        for index, state in current.prompted.items():
            prediction = _prediction(state)
            mask = prediction.mask
            if mask.any():
                rows[index] = ("seed", int(np.count_nonzero(mask)), float(prediction.score))
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
            out[index] = _prediction(state).mask
        return out

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the propagator and the embeddings (the spill folder with them). Call it
        when no operation runs (the store does), or at shutdown after :meth:`drop`."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._drop_propagator()
        self.store.close()


def _prediction(state: EpisodeState) -> MaskPrediction:
    """A prompted slice's prediction: its state is a step's result, which always has one."""
    assert state.prediction is not None
    return state.prediction


def _same_states(a: Mapping[int, EpisodeState], b: Mapping[int, EpisodeState]) -> bool:
    return a.keys() == b.keys() and all(a[i] is b[i] for i in a)
