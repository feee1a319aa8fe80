"""Propagating one target through a stack of slices with any 2-D backbone.

:class:`GenericPropagator` is the rule every backbone can run (the contract is
:mod:`msagent.backbones.propagation`). From each seed it walks outward, one slice at a time:

- slice ``i`` is prompted from its neighbour's result: that mask's box grown by
  ``box_margin`` (10 %) of its side on each side (CVPR 2024 LiteMedSAM's 3-D inference boxes
  each slice from the previous one, tight) and, for a backbone with a mask input, the
  neighbour's low-res logits as the mask input. Why the margin: a backbone that
  under-segments shrinks a tight box slice after slice;
- the walk stops where the target ends: an empty prediction, one under ``min_area`` pixels,
  one whose predicted score is under ``min_score``, or one more than ``max_growth`` (2×) the
  neighbour's area (past the target's end a box-prompted backbone fills the box with whatever
  is there: LiteMedSAM segments the air above the MNI152 brain); the slices beyond have no
  target (what the margin and the growth stop do to 3-D Dice: docs/volumes.md, "Measured");
- between two seeds each slice belongs to the nearer one (a tie to the lower slice), so a
  correction changes only its own neighbourhood; an empty seed ("no target here") ends the
  walks that reach it and claims no slice: the slices beyond it have no target;
- after a new seed, a walk stops early at the first slice whose inputs (the neighbour it is
  prompted from, that neighbour's mask and logits) are the same as last time: from there on
  every result is the same, so nothing is decoded again ("until results stop changing").
- it calls :meth:`~msagent.backbones.propagation.Propagator.checkpoint` before each slice it
  decodes, so :meth:`~msagent.backbones.propagation.Propagator.propagate_until` can stop it
  there; its decodes run through the store's ``work`` (a server's pools), as its encodes do.

:func:`propagator_for` picks the backbone's native propagator (SAM2's video memory) when it
has one, else this one.

:class:`~msagent.volume.embeddings.EmbeddingStore` holds the run's slice embeddings.
"""

from __future__ import annotations

import functools

import numpy as np

from msagent.agent.refine import mask_box
from msagent.backbones.propagation import Propagator, Seed, SliceStack
from msagent.backbones.segmenter import LOW_RES, Segmenter
from msagent.errors import InvalidInput
from msagent.types import BBox, MaskPrediction, Prompts
from msagent.volume.embeddings import EmbeddingStore

METHODS = ("auto", "native", "generic")
#: areas (pixels) below which a jump in area is not read as the target's end
GROWTH_FLOOR = 64


class GenericPropagator(Propagator):
    """Slice-by-slice propagation for any 2-D backbone (see the module docstring)."""

    method = "generic"

    def __init__(self, segmenter: Segmenter, stack: SliceStack, *,
                 store: EmbeddingStore | None = None, min_area: int = 1,
                 min_score: float = 0.0, box_margin: float = 0.1, max_growth: float = 2.0,
                 multimask: bool | None = None, extent: tuple[int, int] | None = None) -> None:
        super().__init__(stack)
        if not 0 <= box_margin <= 1:
            raise InvalidInput(f"box_margin is a fraction of the box side in [0, 1], got {box_margin}")
        self.segmenter = segmenter
        self.store = store if store is not None else EmbeddingStore(segmenter, stack)
        self.min_area, self.min_score, self.multimask = int(min_area), float(min_score), multimask
        self.box_margin = float(box_margin)
        if not max_growth > 1:
            raise InvalidInput(f"max_growth is an area ratio above 1, got {max_growth}")
        self.max_growth = float(max_growth)
        # slices the target may occupy (a 3-D box's slice range); None: the whole stack
        self.extent = (0, stack.count - 1) if extent is None else \
            (max(0, int(extent[0])), min(stack.count - 1, int(extent[1])))
        self.takes_mask_input = segmenter.input_geometry(stack.image_size) is not None
        self._inputs: dict[int, tuple[int, np.ndarray, np.ndarray | None]] = {}

    @property  # the store counts this run's encodes
    def encodes(self) -> int:  # type: ignore[override]  # read-only here: nothing sets it
        return self.store.encodes

    def propagate(self) -> dict[int, MaskPrediction]:
        starts = {index: self._seed_prediction(seed) for index, seed in sorted(self.seeds.items())}
        filled = sorted(i for i, p in starts.items() if p.mask.any())
        empty = sorted(i for i, p in starts.items() if not p.mask.any())
        claimed: set[int] = set(filled)
        for index in starts:
            self._inputs.pop(index, None)
        for position, seed in enumerate(filled):
            self.results[seed] = starts[seed]
            below = filled[position - 1] if position else None
            above = filled[position + 1] if position + 1 < len(filled) else None
            high, low = self._bounds(seed, below, above, empty)
            self._walk(starts[seed], seed, +1, high)
            self._walk(starts[seed], seed, -1, low)
            claimed.update(range(low, high + 1))
        for index in [i for i in self.results if i not in claimed]:  # beyond an empty seed
            self.results.pop(index)
            self._inputs.pop(index, None)
        return self.results

    def _bounds(self, seed: int, below: int | None, above: int | None,
                empty: list[int]) -> tuple[int, int]:
        """The slices a seed's walks may reach: up to the midpoint with the next seed with
        target (a tie to the lower), never across an empty seed (the target ends there),
        within :attr:`extent`."""
        low, high = self.extent
        if above is not None:
            high = min(high, (seed + above) // 2)
        if below is not None:
            low = max(low, (below + seed) // 2 + 1)
        high = min([high] + [e - 1 for e in empty if e > seed])
        low = max([low] + [e + 1 for e in empty if e < seed])
        return high, low

    def _seed_prediction(self, seed: Seed) -> MaskPrediction:
        logits = seed.logits
        if logits is None:
            logits = self.segmenter.mask_logits(seed.mask) if self.takes_mask_input else None
        if logits is None:
            logits = np.zeros((LOW_RES, LOW_RES), np.float32)
        return MaskPrediction(np.asarray(seed.mask, bool), np.asarray(logits, np.float32),
                              float("nan"))

    def _walk(self, previous: MaskPrediction, start: int, direction: int, limit: int) -> None:
        index = start + direction
        while (index <= limit) if direction > 0 else (index >= limit):
            inputs = (index - direction, previous.mask, previous.low_res_logits)
            if self._same_inputs(index, inputs):
                return  # from here on every result is what it was
            self.checkpoint()
            self._inputs[index] = inputs
            prediction = self._decode(index, previous)
            if prediction is None:
                self._clear(index, direction, limit)
                return
            self.results[index] = previous = prediction
            index += direction

    def _decode(self, index: int, previous: MaskPrediction) -> MaskPrediction | None:
        if not previous.mask.any():
            return None
        prev_logits = previous.low_res_logits if self.takes_mask_input else None
        box = grown_box(previous.mask, self.box_margin)
        embedding = self.store[index]
        prediction = self.store.work("decode", functools.partial(
            self.segmenter.decode, embedding, Prompts(box=box), prev_logits,
            multimask=self.multimask))
        self.decodes += 1
        score, area = float(prediction.score), int(prediction.mask.sum())
        if area < max(self.min_area, 1) or score < self.min_score:
            return None  # NaN scores pass: a backbone without a score ends on area alone
        if area > self.max_growth * max(int(previous.mask.sum()), GROWTH_FLOOR):
            return None  # past the target's end the box fills with whatever is there
        return prediction

    def _same_inputs(self, index: int, inputs: tuple) -> bool:
        old = self._inputs.get(index)
        if old is None or old[0] != inputs[0] or not np.array_equal(old[1], inputs[1]):
            return False
        if old[2] is None or inputs[2] is None:
            return old[2] is None and inputs[2] is None
        return np.array_equal(old[2], inputs[2])

    def _clear(self, index: int, direction: int, limit: int) -> None:
        """The target ended at ``index``: no result there or beyond (up to ``limit``)."""
        self.results.pop(index, None)
        beyond = index + direction
        while (beyond <= limit) if direction > 0 else (beyond >= limit):
            self.results.pop(beyond, None)
            self._inputs.pop(beyond, None)
            beyond += direction

    def close(self) -> None:
        self.store.close()


def grown_box(mask: np.ndarray, margin: float) -> BBox:
    """The box of a non-empty mask grown by ``margin`` of its width/height on each side (at
    least one pixel when ``margin`` > 0), inside the image."""
    box = mask_box(mask)
    if margin <= 0:
        return box
    height, width = mask.shape
    dx = max(1, int(round((box.x2 - box.x1 + 1) * margin)))
    dy = max(1, int(round((box.y2 - box.y1 + 1) * margin)))
    return BBox(max(box.x1 - dx, 0), max(box.y1 - dy, 0), min(box.x2 + dx, width - 1),
                min(box.y2 + dy, height - 1))


def propagator_for(segmenter: Segmenter, stack: SliceStack, method: str = "auto", *,
                   store: EmbeddingStore | None = None, **options) -> Propagator:
    """The propagator a 3-D run uses: ``auto`` (the backbone's native one when it declares it,
    else generic), ``native`` (an error for a backbone without one) or ``generic``. ``options``
    go to :class:`GenericPropagator`."""
    if method not in METHODS:
        raise InvalidInput(f"unknown propagation {method!r}; use one of {', '.join(METHODS)}")
    if method != "generic":
        native = segmenter.native_propagator(stack)
        if native is not None:
            return native
        if method == "native":
            raise InvalidInput(f"backbone {segmenter.name or type(segmenter).__name__!r} has no "
                               "native propagation; use propagation='generic' (any backbone) or "
                               "a backbone with a 3-D memory (medsam2, sam2)")
    return GenericPropagator(segmenter, stack, store=store, **options)
