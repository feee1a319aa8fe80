"""The conformance suite every backbone's tests run: the contract of :class:`msagent.Segmenter`
as named checks.

Each check is a small function of one :class:`ConformanceRun`; a failure raises
``AssertionError("conformance check '<name>' failed: <backbone>: <what broke>")``.
:func:`check_segmenter` runs them all, in the order of :data:`CHECKS`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import numpy as np

from msagent.testing.data import make_phantom


class ConformanceRun:
    """What the checks share: the backbone, the image, and (computed once, on first use) its
    embedding, the three prompt sets and their single decodes."""

    def __init__(self, segmenter, image: np.ndarray | None = None, *, thin: bool = False) -> None:
        self.segmenter = segmenter
        self.image = (make_phantom(96, 136, center=(44, 70), radii=(22, 34))[0]
                      if image is None else image)
        self.height, self.width = self.image.shape[:2]
        self.thin = thin

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            raise AssertionError(f"{type(self.segmenter).__name__}: {what}")

    @functools.cached_property
    def embedding(self):
        return self.segmenter.encode(self.image)

    @functools.cached_property
    def box(self):
        from msagent.types import BBox

        w, h = self.width, self.height
        return BBox(w // 4, h // 4, 3 * w // 4, 3 * h // 4)

    @functools.cached_property
    def sets(self) -> list:
        from msagent.types import Point, Prompts

        w, h = self.width, self.height
        inside, outside = Point(w // 2, h // 2), Point(w // 4 + 1, h // 4 + 1, False)
        return [Prompts(box=self.box), Prompts(points=(inside,)),
                Prompts(box=self.box, points=(inside, outside))]

    @functools.cached_property
    def prevs(self) -> list:
        first = self.segmenter.decode(self.embedding, self.sets[0])
        return [None, None, first.low_res_logits]

    @functools.cached_property
    def singles(self) -> list:
        return [self.segmenter.decode(self.embedding, p, prev) for p, prev in zip(self.sets, self.prevs)]

    def check_prediction(self, prediction, size: tuple[int, int], what: str) -> None:
        from msagent.backbones.segmenter import LOW_RES

        mask, logits = prediction.mask, prediction.low_res_logits
        self.expect(isinstance(mask, np.ndarray) and mask.shape == size and mask.dtype == bool,
                    f"{what}: the mask must be a {size} bool array")
        self.expect(isinstance(logits, np.ndarray) and logits.shape == (LOW_RES, LOW_RES)
                    and logits.dtype == np.float32, f"{what}: low_res_logits must be 256×256 float32")
        self.expect(np.isfinite(logits).all(), f"{what}: low_res_logits must be finite")
        self.expect(isinstance(float(prediction.score), float), f"{what}: the score must be a number")


def encode_returns_an_embedding(run: ConformanceRun) -> None:
    """encode gives an Embedding of the image's size."""
    from msagent.backbones.segmenter import Embedding

    size = (run.height, run.width)
    run.expect(isinstance(run.embedding, Embedding) and tuple(run.embedding.image_size) == size,
               f"encode must return an Embedding of size {size}")


def encode_hits_the_cache(run: ConformanceRun) -> None:
    """A second encode of the same pixels hits the embedding cache (when there is one)."""
    run.embedding  # noqa: B018 - the first encode
    cached = run.segmenter.cache_info()
    if cached.maxsize > 0:
        run.segmenter.encode(run.image.copy())
        run.expect(run.segmenter.cache_info().hits == cached.hits + 1, "a second encode of the "
                   "same pixels must hit the embedding cache")


def decode_gives_valid_predictions(run: ConformanceRun) -> None:
    """A box, clicks, and a box with clicks and the previous logits each decode to an H×W bool
    mask, 256×256 finite float32 logits and a numeric score."""
    for prompts, prediction in zip(run.sets, run.singles):
        run.check_prediction(prediction, (run.height, run.width), f"decode({prompts})")


def decode_is_deterministic(run: ConformanceRun) -> None:
    """Decoding the same prompts twice gives the same mask."""
    again = run.segmenter.decode(run.embedding, run.sets[2], run.prevs[2])
    run.expect(np.array_equal(again.mask, run.singles[2].mask), "decode must be deterministic")


def decode_batch_equals_decode(run: ConformanceRun) -> None:
    """decode_batch returns one prediction per set, each equal to that set's decode."""
    batch = run.segmenter.decode_batch(run.embedding, run.sets, run.prevs)
    run.expect(len(batch) == len(run.sets), "decode_batch must return one prediction per prompt set")
    for single, batched in zip(run.singles, batch):
        run.expect(np.array_equal(single.mask, batched.mask)
                   and np.allclose(single.low_res_logits, batched.low_res_logits, atol=1e-3),
                   "decode_batch must equal one decode per prompt set")


def async_equals_sync(run: ConformanceRun) -> None:
    """aencode/adecode give what encode/decode give."""
    segmenter = run.segmenter

    async def both():
        return await segmenter.aencode(run.image), await segmenter.adecode(run.embedding, run.sets[0])

    aembedding, aprediction = asyncio.run(both())
    run.expect(aembedding.key == run.embedding.key
               and np.array_equal(aprediction.mask, run.singles[0].mask),
               "aencode/adecode must equal encode/decode")


def misuse_raises_segmenter_error(run: ConformanceRun) -> None:
    """A click outside the image, no prompt (unless text-prompted), logits of the wrong shape
    and mismatched batch lengths raise SegmenterError."""
    from msagent.errors import SegmenterError
    from msagent.types import Point, Prompts

    segmenter, embedding, sets = run.segmenter, run.embedding, run.sets
    wrong_logits = np.zeros((64, 64), np.float32)
    outside = Prompts(points=(Point(run.width, 0),))
    misuse = {
        "a click outside the image": lambda: segmenter.decode(embedding, outside),
        "no prompt": lambda: segmenter.decode(embedding, Prompts()),
        "logits of the wrong shape": lambda: segmenter.decode(embedding, sets[0], wrong_logits),
        "one prev_logits for two sets": lambda: segmenter.decode_batch(embedding, sets[:2], [None]),
    }
    for what, call in misuse.items():
        if what == "no prompt" and segmenter.accepts_text:
            continue
        try:
            call()
        except SegmenterError:
            continue
        raise AssertionError(f"{type(segmenter).__name__}: {what} must raise SegmenterError")


def text_alone_decodes(run: ConformanceRun) -> None:
    """A text-prompted backbone (``accepts_text``) decodes a text alone."""
    from msagent.types import Prompts

    if run.segmenter.accepts_text:
        prediction = run.segmenter.decode(run.embedding, Prompts(text="the bright object"))
        run.check_prediction(prediction, (run.height, run.width), "decode of a text alone")


def thin_image_decodes(run: ConformanceRun) -> None:
    """With ``thin``: a 1-pixel-high strip encodes and decodes to a 1×W mask."""
    from msagent.types import BBox, Prompts

    if run.thin:
        strip = np.ascontiguousarray(run.image[run.height // 2:run.height // 2 + 1])
        embedding = run.segmenter.encode(strip)
        prediction = run.segmenter.decode(embedding, Prompts(box=BBox(0, 0, run.width - 1, 0)))
        run.check_prediction(prediction, (1, run.width), "decode on a 1-pixel-high image")


#: The named checks, in the order :func:`check_segmenter` runs them.
CHECKS: dict[str, Callable[[ConformanceRun], None]] = {
    check.__name__: check for check in (
        encode_returns_an_embedding, encode_hits_the_cache, decode_gives_valid_predictions,
        decode_is_deterministic, decode_batch_equals_decode, async_equals_sync,
        misuse_raises_segmenter_error, text_alone_decodes, thin_image_decodes)
}


def run_check(name: str, run: ConformanceRun) -> None:
    """Run the check ``name``; its failure is re-raised as an AssertionError naming it."""
    try:
        CHECKS[name](run)
    except AssertionError as error:
        raise AssertionError(f"conformance check {name!r} failed: {error}") from error


def check_segmenter(segmenter, image: np.ndarray | None = None, *, thin: bool = False) -> None:
    """The conformance suite every backbone's tests run: the contract of
    :class:`msagent.Segmenter`, checked on ``segmenter`` with a non-square phantom (or
    ``image``), and with a 1-pixel-high strip when ``thin``. Raises AssertionError naming the
    check that failed and what broke; costs one or two encodes and a few decodes.

    The checks (:data:`CHECKS`): encode gives an Embedding of the image's size and a second
    encode of the same pixels hits the cache; decode of a box, of clicks, of a box with clicks
    and the previous logits gives an H×W bool mask, 256×256 float32 logits and a numeric score;
    decode is deterministic; decode_batch equals one decode per set; the async front doors
    equal the sync ones; misuse (a prompt outside the image, no prompt, logits of the wrong
    shape, mismatched batch lengths) raises SegmenterError; a text-prompted backbone decodes a
    text alone.
    """
    run = ConformanceRun(segmenter, image, thin=thin)
    for name in CHECKS:
        run_check(name, run)


__all__ = ["CHECKS", "ConformanceRun", "check_segmenter", "run_check"]
