"""The propagation contract: one target's mask carried through a stack of slices.

A 3-D run (:func:`msagent.segment_volume`) segments a key slice with an agent episode, then a
:class:`Propagator` carries that result to the other slices; review episodes correct slices
that look wrong, and each correction is added as a further seed and propagated again.

Every backbone can propagate: :class:`msagent.volume.propagation.GenericPropagator` works with any
2-D backbone (slice by slice outward, each slice prompted from its neighbour). A backbone with
a 3-D memory of its own (SAM2's video predictor: ``medsam2``, ``sam2``) declares it by
overriding :meth:`msagent.Segmenter.native_propagator`, which returns its own
:class:`Propagator`.

A propagator is stateful and serves one target through one :class:`SliceStack`:
:meth:`Propagator.add_seed` fixes a slice's result (what the agent decided there) and
:meth:`Propagator.propagate` returns the result of every slice. ``encodes``/``decodes`` count
the work done, so callers and benchmarks can check that each slice is encoded once per run.

Stopping between slices: :meth:`Propagator.propagate_until` runs :meth:`~Propagator.propagate`
with a stop rule (``should_stop()``, say a cancel flag or a deadline). An implementation calls
:meth:`Propagator.checkpoint` before each slice it works on; that counts the slice in
:attr:`Propagator.progress` and raises :class:`PropagationStopped` once ``should_stop()`` is
true. After a stop, what the propagator holds is partial: the caller discards it (closes the
propagator and starts a new one). A propagator that never calls :meth:`~Propagator.checkpoint`
still works (it runs to the end); the stop rule is then checked once, before it starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import numpy as np

from msagent.errors import InvalidMask, MsAgentError
from msagent.types import MaskPrediction, Prompts

if TYPE_CHECKING:  # the segmenter module names Propagator: no import at run time
    from msagent.backbones.segmenter import Embedding


@attrs.frozen(eq=False)
class SliceStack:
    """The slices of one volume along one axis, as a 2-D backbone sees them.

    ``gray`` is the windowed volume in display order, ``count`` × H × W ``uint8`` (windowed
    once for the whole volume, so every slice has the same mapping); ``spacing`` is (slice
    distance, row, column) in mm. ``image(i)`` is slice ``i`` as H×W×3 uint8 RGB.
    """

    gray: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __attrs_post_init__(self) -> None:
        if self.gray.ndim != 3 or self.gray.dtype != np.uint8:
            raise ValueError(f"a SliceStack holds count×H×W uint8 slices, got "
                             f"{self.gray.shape} {self.gray.dtype}")

    @property
    def count(self) -> int:
        return int(self.gray.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.gray.shape[1]), int(self.gray.shape[2])

    def image(self, index: int) -> np.ndarray:
        """Slice ``index`` as H×W×3 uint8 RGB (a new array)."""
        return np.repeat(self.gray[index][:, :, None], 3, axis=2)


@attrs.frozen(eq=False)
class Seed:
    """A slice whose result the agent fixed: its H×W bool ``mask``, the ``prompts`` in force
    when it was made (pixel XY of the slice) and its 256×256 low-res ``logits`` in the
    backbone's frame (None for a backbone without a mask input)."""

    mask: np.ndarray
    prompts: Prompts = attrs.field(factory=Prompts)
    logits: np.ndarray | None = None


class PropagationStopped(MsAgentError):
    """:meth:`Propagator.propagate_until` stopped between slices because its ``should_stop()``
    said so; ``done`` slices were worked on. The propagator's state is partial: discard it."""

    def __init__(self, message: str, done: int = 0) -> None:
        super().__init__(message)
        self.done = done


class Propagator(ABC):
    """One target through one :class:`SliceStack` (see the module docstring).

    ``results`` holds the latest result of every slice propagation reached (seeds included);
    a slice missing from it has no target. ``encodes`` and ``decodes`` count image encodes and
    mask decodes (native: per-frame memory-conditioned decodes) done by this propagator.
    ``progress`` counts the slices the running (or last) propagation worked on, through
    :meth:`checkpoint`.
    """

    #: "generic" or "native"; recorded on the run's trajectory
    method: str = ""
    #: counts start at 0 here; ``self.encodes += 1`` keeps one per instance (a subclass whose
    #: encodes live elsewhere, the generic propagator's store, defines a property instead)
    encodes: int = 0
    #: seeds' masks must be bool arrays (a native video memory takes them as they are)
    bool_seed_masks: bool = False
    #: whether the propagator can read the run's slice embeddings (:attr:`embeddings`): a
    #: native propagator whose frames are the backbone's own :meth:`~msagent.Segmenter.encode`
    #: (``sam3``); one with preprocessing of its own (SAM2's video predictor) cannot
    shares_embeddings: bool = False
    #: set by a 3-D run when :attr:`shares_embeddings` (see
    #: :func:`msagent.volume.propagation.propagator_for`): slice index → that slice's
    #: :class:`~msagent.Embedding`, from the run's store, so that each slice is encoded once per
    #: run whether an episode, a proposal or the propagator needs it first (the store counts
    #: those encodes, not the propagator)
    embeddings: Callable[[int], Embedding] | None = None

    def __init__(self, stack: SliceStack) -> None:
        self.stack = stack
        self.seeds: dict[int, Seed] = {}
        self.results: dict[int, MaskPrediction] = {}
        self.decodes = 0
        self.progress = 0
        self._should_stop: Callable[[], bool] | None = None

    def add_seed(self, index: int, seed: Seed) -> None:
        """Fix slice ``index`` to ``seed`` (replacing an earlier seed there); takes effect at
        the next :meth:`propagate`."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < self.stack.count:
            raise IndexError(f"slice {index!r} is outside 0..{self.stack.count - 1}")
        mask = seed.mask
        if self.bool_seed_masks and not (isinstance(mask, np.ndarray) and mask.dtype == bool
                                         and mask.shape == self.stack.image_size):
            raise InvalidMask(f"a seed's mask must be a {self.stack.image_size[0]}×"
                              f"{self.stack.image_size[1]} bool array (the slice's size), got "
                              f"{getattr(mask, 'shape', None)} {getattr(mask, 'dtype', None)}")
        if np.shape(mask) != self.stack.image_size:
            raise InvalidMask(f"a seed mask is {np.shape(mask)} but the slices are "
                              f"{self.stack.image_size} (H, W)")
        self.seeds[int(index)] = seed

    @abstractmethod
    def propagate(self) -> dict[int, MaskPrediction]:
        """Carry the seeds to the other slices; return :attr:`results` (slice → prediction;
        slices the target does not reach are absent). Slices whose inputs did not change since
        the last call are not decoded again."""

    def propagate_until(self, should_stop: Callable[[], bool] | None = None
                        ) -> dict[int, MaskPrediction]:
        """:meth:`propagate`, stopping between slices once ``should_stop()`` is true (then
        :class:`PropagationStopped`; see the module docstring). ``should_stop`` runs in the
        propagating thread; it must be cheap (an Event's ``is_set``, a clock comparison)."""
        self.progress = 0
        previous, self._should_stop = getattr(self, "_should_stop", None), should_stop
        try:
            self.checkpoint(count=False)
            return self.propagate()
        finally:
            self._should_stop = previous

    def checkpoint(self, *, count: bool = True) -> None:
        """Called by an implementation before each slice it works on: counts it in
        :attr:`progress` and raises :class:`PropagationStopped` when the caller's
        ``should_stop()`` (:meth:`propagate_until`) is true. Outside :meth:`propagate_until`
        it only counts."""
        should_stop = getattr(self, "_should_stop", None)
        if should_stop is not None and should_stop():
            raise PropagationStopped(f"the propagation stopped after {self.progress} slices",
                                     self.progress)
        if count:
            self.progress = getattr(self, "progress", 0) + 1

    def masks(self) -> np.ndarray:
        """The current result as a count × H × W bool array (display order)."""
        out = np.zeros(self.stack.gray.shape, dtype=bool)
        for index, prediction in self.results.items():
            out[index] = prediction.mask
        return out

    def close(self) -> None:
        """Release what the propagator holds (embeddings, a video predictor's state)."""


#: what :meth:`msagent.Segmenter.native_propagator` builds: ``factory(stack)``
PropagatorFactory = Callable[[SliceStack], Propagator]
