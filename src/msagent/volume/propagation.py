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
- a **correction** (a seed added after the first propagation: a click, a review) changes
  only what it should (``correction="local"``, the default; the measurements that chose the
  rule are in docs/volumes.md). On its own slice the change is the seed against the slice's
  result; from there the walk goes outward as before, but on each slice it keeps only the
  part of (new prediction XOR current result) within ``reach`` pixels of the change it kept
  on the slice before, and it stops at the first slice where that part is empty, where the
  new prediction departs from the current result outside that region (``depart``) or its
  score falls (``score_drop``), where that part is over :data:`WALK_GROWTH` (1.25) times the
  change it kept on the slice before (a correction's effect fades as it moves away), where
  past the result's end (a slice without a result) the new prediction is over
  :data:`WALK_GROWTH` times the slice before it (a correction extends a narrowing target
  only), at another seed, or at the extent's end (areas under :data:`GROWTH_FLOOR` count as
  that). The slices beyond keep their results. An empty correction ("no target here") clears
  the slices beyond it, away from the seeds with target.
  ``correction="nearest"`` is the rule before it: the new seed's walks replace every slice
  up to the midpoint with the next seed, stopping early only at the first slice whose
  inputs (the neighbour it is prompted from, that neighbour's mask and logits) are the same
  as last time.
- the first propagation (and every one under ``"nearest"``) walks from each seed to the
  midpoints as described above; a later one under ``"nearest"`` stops early where inputs
  repeat ("until results stop changing").
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
#: how a correction re-propagates (see the module docstring)
CORRECTIONS = ("local", "nearest")
#: a correction's walk stops where its prediction departs from the current result, outside
#: the change it carries, by more than this fraction of the current area
DEPART = 0.2
#: ... or where its predicted score falls more than this below the current result's
SCORE_DROP = 0.1
#: areas (pixels) below which a jump in area is not read as the target's end
GROWTH_FLOOR = 64
#: how much a correction's walk may grow from one slice to the next: the change it carries
#: (a correction's effect holds or fades as it moves away; a change that grows is the
#: backbone's drift) and, past the result's end, the mask itself (a target narrows toward its
#: end, while a box-prompted backbone grows a region slice by slice); docs/volumes.md
WALK_GROWTH = 1.25


class GenericPropagator(Propagator):
    """Slice-by-slice propagation for any 2-D backbone (see the module docstring)."""

    method = "generic"

    def __init__(self, segmenter: Segmenter, stack: SliceStack, *,
                 store: EmbeddingStore | None = None, min_area: int = 1,
                 min_score: float = 0.0, box_margin: float = 0.1, max_growth: float = 2.0,
                 multimask: bool | None = None, extent: tuple[int, int] | None = None,
                 correction: str = "local", reach: int | None = None,
                 depart: float = DEPART, score_drop: float = SCORE_DROP) -> None:
        super().__init__(stack)
        if correction not in CORRECTIONS:
            raise InvalidInput(f"unknown correction rule {correction!r}; use one of "
                               f"{', '.join(CORRECTIONS)}")
        self.correction = correction
        #: how far (pixels) a correction's change may move from one slice to the next
        self.reach = default_reach(stack.image_size) if reach is None else int(reach)
        self.depart, self.score_drop = float(depart), float(score_drop)
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
        self._propagated: dict[int, Seed] = {}  # the seeds the results carry

    @property  # the store counts this run's encodes
    def encodes(self) -> int:  # type: ignore[override]  # read-only here: nothing sets it
        return self.store.encodes

    def resume(self, results: dict[int, MaskPrediction], seeds: dict[int, Seed]) -> None:
        """Start from a result made earlier (an undo restored it): ``results`` carry ``seeds``;
        seeds added after this are corrections of ``results``."""
        self.results = dict(results)
        self.seeds = dict(seeds)
        self._propagated = dict(seeds)
        self._inputs.clear()

    def propagate(self) -> dict[int, MaskPrediction]:
        if self.correction == "local" and self._propagated:
            for index, seed in sorted(self.seeds.items()):
                if self._propagated.get(index) is not seed:
                    self._correct(index, seed)
                    self._propagated[index] = seed
            return self.results
        self._propagated = dict(self.seeds)
        return self._propagate_all()

    def _propagate_all(self) -> dict[int, MaskPrediction]:
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

    # -- a correction ------------------------------------------------------------------
    def _correct(self, index: int, seed: Seed) -> None:
        """Re-propagate the correction at ``index`` locally (see the module docstring)."""
        start = self._seed_prediction(seed)
        before = self.results.get(index)
        others = sorted(i for i in self._propagated if i != index)
        low_end, high_end = self.extent
        below = max([i for i in others if i < index], default=None)
        above = min([i for i in others if i > index], default=None)
        if not start.mask.any():  # no target here: none beyond it, away from the target
            self.results.pop(index, None)
            filled = [i for i in others if self._propagated[i].mask.any()]
            if not any(i < index for i in filled):
                self._clear_range(low_end if below is None else below + 1, index - 1)
            if not any(i > index for i in filled):
                self._clear_range(index + 1, high_end if above is None else above - 1)
            return
        self.results[index] = start
        changed = start.mask ^ (before.mask if before is not None else False)
        if not changed.any():
            return
        self._walk_change(start, changed, index, +1, high_end if above is None else above - 1)
        self._walk_change(start, changed, index, -1, low_end if below is None else below + 1)

    def _walk_change(self, previous: MaskPrediction, changed: np.ndarray, start: int,
                     direction: int, limit: int) -> None:
        index = start + direction
        while (index <= limit) if direction > 0 else (index >= limit):
            self.checkpoint()
            current = self.results.get(index)
            old = current.mask if current is not None else np.zeros(self.stack.image_size, bool)
            prediction = self._decode(index, previous)
            new = prediction.mask if prediction is not None else np.zeros_like(old)
            zone = dilate(changed, self.reach)
            if self._departs(new ^ old, zone, old, prediction, current):
                return  # the walk no longer follows the correction: the slices keep theirs
            if current is None and np.count_nonzero(new) > WALK_GROWTH * max(
                    int(np.count_nonzero(previous.mask)), GROWTH_FLOOR):
                return  # past the result's end a correction extends a narrowing target only
            carried = (new ^ old) & zone
            if np.count_nonzero(carried) > WALK_GROWTH * max(
                    int(np.count_nonzero(changed)), GROWTH_FLOOR):
                return  # the change grows as it walks: the backbone's drift, not the correction
            changed = carried
            if not changed.any():
                return  # the correction's change ends here: the slices beyond keep theirs
            mask = old ^ changed
            if not mask.any():
                self.results.pop(index, None)
                previous = MaskPrediction(mask, np.zeros((LOW_RES, LOW_RES), np.float32), 0.0)
            elif prediction is not None and np.array_equal(mask, new):
                self.results[index] = previous = prediction
            else:  # part old, part new: the old slice's score, logits of the mask
                score = float(current.score) if current is not None else float(prediction.score) \
                    if prediction is not None else float("nan")
                previous = self._seed_prediction(Seed(mask))
                self.results[index] = previous = MaskPrediction(previous.mask,
                                                                previous.low_res_logits, score)
            index += direction

    def _departs(self, difference: np.ndarray, zone: np.ndarray, old: np.ndarray,
                 prediction: MaskPrediction | None, current: MaskPrediction | None) -> bool:
        """Whether a correction's walk stops here (see the module docstring)."""
        outside = np.count_nonzero(difference & ~zone)
        if outside > self.depart * max(int(np.count_nonzero(old)), GROWTH_FLOOR):
            return True
        if prediction is None or current is None:
            return False
        return _score_falls(prediction.score, current.score, self.score_drop)

    def _clear_range(self, low: int, high: int) -> None:
        for index in range(low, high + 1):
            self.results.pop(index, None)

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


def _score_falls(new: float | None, old: float | None, drop: float) -> bool:
    """Whether the predicted score ``new`` is more than ``drop`` below ``old`` (an unknown
    score, None or NaN, never falls)."""
    if new is None or old is None:
        return False
    new, old = float(new), float(old)
    return bool(np.isfinite(new) and np.isfinite(old) and new < old - drop)


def default_reach(image_size: tuple[int, int]) -> int:
    """How far (pixels) a correction's change may move between neighbouring slices by
    default: 1.5 % of the larger image side, at least 2 (8 px on a 512-pixel CT slice)."""
    return max(2, int(round(0.015 * max(image_size))))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (a square neighbourhood), as a new bool array."""
    if radius <= 0 or not mask.any():
        return np.array(mask, bool)
    import cv2

    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def local_change(before: np.ndarray | None, after: np.ndarray, point: tuple[int, int],
                 reach: int) -> np.ndarray:
    """A click's correction on its own slice: ``before`` with only the parts of its
    difference to ``after`` (8-connected) that come within ``reach`` pixels of the click
    ``point`` (x, y) flipped; ``before`` unchanged when the decode did not change anything
    there. ``before`` None: an empty slice."""
    from scipy import ndimage

    old = np.zeros(after.shape, bool) if before is None else np.asarray(before, bool)
    difference = old ^ np.asarray(after, bool)
    if not difference.any():
        return old.copy()
    labels, _ = ndimage.label(difference, structure=np.ones((3, 3), bool))
    x, y = point
    height, width = difference.shape
    near = labels[max(0, y - reach):min(height, y + reach + 1),
                  max(0, x - reach):min(width, x + reach + 1)]
    keep = np.unique(near[near > 0])
    return old ^ np.isin(labels, keep)


def click_correction(segmenter: Segmenter, before: MaskPrediction | None,
                     after: MaskPrediction, point: tuple[int, int], reach: int,
                     score_drop: float = SCORE_DROP) -> MaskPrediction | None:
    """What a click leaves on its own slice under ``correction="local"``: ``after`` (the
    click's decode) where all of its change reaches the click, else ``before`` with only
    those parts flipped (:func:`local_change`; logits from that mask, no score: no decode
    made it), or None when the decode changed nothing near the click or its predicted score
    falls more than ``score_drop`` below ``before``'s (the backbone rates it worse: no
    correction, as a correction's walk stops there). The same rule for the CVPR 3-D
    protocol's clicks and the 3-D session's."""
    if before is not None and _score_falls(after.score, before.score, score_drop):
        return None
    mask = local_change(None if before is None else before.mask, after.mask, point, reach)
    if np.array_equal(mask, np.zeros_like(mask) if before is None else before.mask):
        return None  # first: a decode equal to the slice's mask is no correction either
    if np.array_equal(mask, after.mask):
        return after
    return MaskPrediction(mask, segmenter.mask_logits(mask), float("nan"))  # type: ignore[arg-type]


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
    go to :class:`GenericPropagator`. A native propagator that
    :attr:`~msagent.backbones.propagation.Propagator.shares_embeddings` reads ``store``'s."""
    if method not in METHODS:
        raise InvalidInput(f"unknown propagation {method!r}; use one of {', '.join(METHODS)}")
    if method != "generic":
        native = segmenter.native_propagator(stack)
        if native is not None:
            if store is not None and native.shares_embeddings:  # each slice encoded once per run
                native.embeddings = store.__getitem__
            return native
        if method == "native":
            raise InvalidInput(f"backbone {segmenter.name or type(segmenter).__name__!r} has no "
                               "native propagation; use propagation='generic' (any backbone) or "
                               "a backbone with a 3-D memory (medsam2, sam2)")
    return GenericPropagator(segmenter, stack, store=store, **options)
