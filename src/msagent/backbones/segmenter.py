"""The Segmenter contract: encode an image once, decode many prompt sets against it.

Shaped after segment-anything's ``SamPredictor`` (``set_image`` once, ``predict`` many),
but stateless: the embedding is a value the caller keeps, so one encoder serves many
concurrent episodes. The base class owns a content-hash LRU cache, so the same image is
encoded once however many episodes (or GRPO rollouts) use it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from msagent.backbones.cache import CacheInfo, EmbeddingCache
from msagent.errors import SegmenterError
from msagent.types import MaskPrediction, Prompts

if TYPE_CHECKING:
    from msagent.backbones.geometry import InputGeometry
    from msagent.backbones.propagation import Propagator, SliceStack

LOW_RES = 256  # side of the low-res logits every backbone returns and accepts as mask input


@attrs.frozen(eq=False)
class Embedding:
    """An encoded image. ``features`` is backbone-specific (tensors, on the model's device);
    ``image_size`` is the original (height, width); ``key`` the image's content hash."""

    features: Any
    image_size: tuple[int, int]
    key: str


def image_key(image: np.ndarray) -> str:
    """Content hash of an image array (shape and dtype included)."""
    digest = hashlib.sha256()
    digest.update(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class Segmenter(ABC):
    """A promptable segmentation backbone.

    A backbone implements two primitives: :meth:`encode_image` (the image encoder, uncached)
    and :meth:`decode_prompts` (a batch of prompt sets, already validated). Callers use the
    front doors, which a backbone does not override: :meth:`encode` / :meth:`encode_batch`
    (through the content-hash cache), :meth:`decode` / :meth:`decode_batch` (inputs checked,
    outputs checked, errors naming the backbone) and their async forms :meth:`aencode` /
    :meth:`adecode` (a worker thread; a remote backbone overrides them with native I/O).

    Images are H×W×3 ``uint8`` RGB in their original size; prompts are in original-image
    pixel XY; each backbone maps them to its own input size (aspect-correct for non-square
    images).
    """

    #: registered name, set by the plugin
    name: str = ""
    #: whether decode keeps the best of several candidate masks by default (backbones whose
    #: multimask heads were never trained, like LiteMedSAM, set False)
    multimask_default: bool = True
    #: whether the backbone reads ``Prompts.text`` (the target, e.g. "liver") as an extra
    #: prompt; other backbones never see it
    accepts_text: bool = False
    #: whether the backbone proposes masks from a text alone (:meth:`propose`; SAM 3's concept
    #: head): it implements :meth:`propose_masks`
    can_propose: bool = False

    def __init__(self, *, cache_size: int = 16) -> None:
        self._embedding_cache: EmbeddingCache[Embedding] = EmbeddingCache(cache_size)

    @property
    def _cache(self) -> EmbeddingCache:
        """The embedding cache; a backbone whose ``__init__`` forgot ``super().__init__()`` gets
        the default one (16 images) instead of an AttributeError."""
        cache = self.__dict__.get("_embedding_cache")
        if cache is None:
            cache = self.__dict__.setdefault("_embedding_cache", EmbeddingCache(16))
        return cache

    # -- the cached front door -------------------------------------------------
    def encode(self, image: np.ndarray) -> Embedding:
        """Encode ``image`` (H×W×3 uint8), reusing a cached embedding for identical content."""
        return self.encode_with_key(image, image_key(image))

    def encode_with_key(self, image: np.ndarray, key: str) -> Embedding:
        """:meth:`encode` for a caller that already holds ``image_key(image)`` (a server that
        stores images by content hash): skips hashing the image again."""
        _check_image(image)
        return self._cache.get_or_compute(key, lambda: self._wrap(image, key))

    def encode_uncached(self, image: np.ndarray) -> Embedding:
        """:meth:`encode` without the embedding cache: neither a hit nor a stored entry. For
        callers that keep their own embeddings (a volume's slices:
        :class:`msagent.volume.embeddings.EmbeddingStore`), so they do not evict the images
        other users keep in the shared cache."""
        _check_image(image)
        return self._wrap(image, image_key(image))

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        """Encode several images, running the misses through :meth:`encode_images` in one
        batch (backbones with a batched encoder override that). Misses go through the cache's
        per-image locks, so concurrent calls encode each image once."""
        for image in images:
            _check_image(image)
        keys = [image_key(image) for image in images]
        by_key = dict(zip(keys, images))

        def compute_many(keys: list[str]) -> list[Embedding]:
            batch = [by_key[key] for key in keys]
            features = self.encode_images(batch) if len(batch) > 1 else [self.encode_image(batch[0])]
            return [Embedding(f, image.shape[:2], key) for key, image, f in zip(keys, batch, features)]

        return self._cache.get_or_compute_many(keys, compute_many)

    def cache_info(self) -> CacheInfo:
        return self._cache.info()

    def clear_cache(self) -> None:
        self._cache.clear()

    def _wrap(self, image: np.ndarray, key: str) -> Embedding:
        features = self.encode_image(image)
        return Embedding(features=features, image_size=image.shape[:2], key=key)

    # -- the checked decode front door -------------------------------------------
    def decode(self, embedding: Embedding, prompts: Prompts, prev_logits: np.ndarray | None = None,
               *, multimask: bool | None = None, text: str | None = None) -> MaskPrediction:
        """Predict a mask for ``prompts`` (pixel XY of the original image).

        ``prev_logits`` is the previous turn's 256×256 float32 low-res logits (or None).
        ``multimask`` keeps the candidate with the best predicted IoU (None: the backbone's
        ``multimask_default``). ``text`` sets ``prompts.text``. Returns the H×W bool mask at the
        original size, the new 256×256 float32 low-res logits and the predicted IoU.
        """
        return self.decode_batch(embedding, [prompts], [prev_logits], multimask=multimask,
                                 text=text)[0]

    def decode_batch(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                     prev_logits: Sequence[np.ndarray | None] | None = None, *,
                     multimask: bool | None = None,
                     text: str | Sequence[str | None] | None = None) -> list[MaskPrediction]:
        """Decode several prompt sets against one embedding (one :meth:`decode_prompts` call).

        Checks, before the backbone runs: the embedding, prompts inside the image (a text
        alone suffices for a backbone that ``accepts_text``), one ``prev_logits`` per set, each
        256×256. After: one prediction per set, masks H×W bool, logits 256×256 float32.
        """
        sets, prev, mode = self.checked_inputs(embedding, prompt_sets, prev_logits, multimask, text)
        predictions = list(self.decode_prompts(embedding, sets, prev, multimask=mode))
        self.check_outputs(predictions, len(sets), embedding.image_size)
        return predictions

    def checked_inputs(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                       prev_logits: Sequence[np.ndarray | None] | None, multimask: bool | None,
                       text: str | Sequence[str | None] | None = None,
                       ) -> tuple[list[Prompts], list[np.ndarray | None], bool]:
        """The front doors' input checks: (prompt sets with their text, 256×256 float32 logits
        or None per set, the multimask flag). For backbones with their own async front door."""
        if not isinstance(embedding, Embedding):
            raise SegmenterError(f"{self._what()}: decode needs an Embedding from encode(), got "
                                 f"{type(embedding).__name__}")
        sets = _with_texts(list(prompt_sets), text)
        prev = list(prev_logits) if prev_logits is not None else [None] * len(sets)
        if len(prev) != len(sets):
            raise SegmenterError(f"{self._what()}: decode_batch got {len(sets)} prompt sets but "
                                 f"{len(prev)} prev_logits; give one of each per set")
        for prompts in sets:
            if prompts.empty and self.accepts_text:
                if not prompts.text:
                    raise SegmenterError(f"{self._what()}: decode needs a box, a point or text= "
                                         "(the target, e.g. 'liver')")
                continue
            check_prompts(prompts, embedding.image_size)
        mode = self.multimask_default if multimask is None else bool(multimask)
        return sets, [check_prev_logits(p) for p in prev], mode

    async def aencode(self, image: np.ndarray) -> Embedding:
        """Async :meth:`encode` (a worker thread; remote backbones override it)."""
        return await asyncio.to_thread(self.encode, image)

    async def adecode(self, embedding: Embedding, prompts: Prompts,
                      prev_logits: np.ndarray | None = None, *, multimask: bool | None = None,
                      text: str | None = None) -> MaskPrediction:
        """Async :meth:`decode` (a worker thread; remote backbones override it)."""
        return await asyncio.to_thread(functools.partial(
            self.decode, embedding, prompts, prev_logits, multimask=multimask, text=text))

    def check_outputs(self, predictions: list, count: int, image_size: tuple[int, int]) -> None:
        """The front doors' output checks (one prediction per set, masks H×W bool, logits
        256×256 float32, numeric scores); SegmenterError naming the backbone otherwise."""
        if len(predictions) != count:
            raise SegmenterError(f"{self._what()} returned {len(predictions)} predictions for "
                                 f"{count} prompt sets")
        for prediction in predictions:
            problem = _output_problem(prediction, image_size)
            if problem:
                raise SegmenterError(f"{self._what()} broke the decode contract: {problem} "
                                     "(see msagent.testing.check_segmenter)")

    def _what(self) -> str:
        return f"backbone {self.name or type(self).__name__!r}"

    # -- proposals from text ----------------------------------------------------
    def propose(self, embedding: Embedding, text: str, *,
                max_candidates: int = 5) -> list[MaskPrediction]:
        """Candidate masks for ``text`` (a short noun phrase naming the target, e.g. "liver")
        with no box or click: every matching instance the backbone finds, best first, at most
        ``max_candidates``. An empty list means the text matched nothing in the image.

        Each candidate is an H×W bool mask at the original size, its 256×256 float32 low-res
        logits in this backbone's mask-input frame (so a decode can refine it as
        ``prev_logits``) and its score. Only backbones with ``can_propose`` implement it;
        others raise :class:`~msagent.errors.SegmenterError`. Checks, before the backbone
        runs: the embedding, ``text`` (a non-empty printable string of at most
        :data:`MAX_PROPOSAL_TEXT` characters, stripped), ``max_candidates`` ≥ 1; after: the
        decode contract for every candidate, their number and their order.
        """
        if not self.can_propose:
            raise SegmenterError(f"{self._what()} cannot propose a mask from text; backbones "
                                 "that can (can_propose) include e.g. 'sam3'")
        if not isinstance(embedding, Embedding):
            raise SegmenterError(f"{self._what()}: propose needs an Embedding from encode(), got "
                                 f"{type(embedding).__name__}")
        text = check_proposal_text(text)
        if isinstance(max_candidates, bool) or not isinstance(max_candidates, (int, np.integer)) \
                or max_candidates < 1:
            raise SegmenterError(f"max_candidates must be a positive integer, got {max_candidates!r}")
        predictions = list(self.propose_masks(embedding, text, max_candidates=int(max_candidates)))
        if len(predictions) > max_candidates:
            raise SegmenterError(f"{self._what()} proposed {len(predictions)} masks, more than "
                                 f"max_candidates={max_candidates}")
        for prediction in predictions:
            problem = _output_problem(prediction, embedding.image_size)
            if problem:
                raise SegmenterError(f"{self._what()} broke the propose contract: {problem}")
        scores = [float(p.score) for p in predictions]
        if scores != sorted(scores, reverse=True):
            raise SegmenterError(f"{self._what()} broke the propose contract: candidates must "
                                 f"come best first, got scores {scores}")
        return predictions

    def propose_masks(self, embedding: Embedding, text: str, *,
                      max_candidates: int) -> list[MaskPrediction]:
        """What a backbone with ``can_propose`` implements: candidate masks for the checked,
        stripped ``text``, best first, at most ``max_candidates`` (an empty list when nothing
        matches). Called by :meth:`propose` only."""
        raise SegmenterError(f"{self._what()} sets can_propose but does not implement "
                             "propose_masks")

    # -- the mask input (refining an existing mask) ------------------------------
    def input_geometry(self, image_size: tuple[int, int]) -> InputGeometry | None:
        """How an image of ``image_size`` maps onto the model input, for backbones that take a
        mask input (SAM-family: their low-res logits frame); None for a backbone that cannot
        take one (then an episode refining a mask starts from the mask's box instead)."""
        return None

    def mask_logits(self, mask: np.ndarray) -> np.ndarray | None:
        """An H×W binary mask as 256×256 float32 low-res logits in this backbone's frame (the
        mask input of a first decode), or None when the backbone takes no mask input."""
        geometry = self.input_geometry(tuple(np.shape(mask)))
        return None if geometry is None else geometry.mask_logits(mask, LOW_RES)

    # -- propagation through a volume (3-D runs) ----------------------------------
    def native_propagator(self, stack: SliceStack) -> Propagator | None:
        """A propagator with the backbone's own 3-D memory for ``stack`` (SAM2's video
        predictor), or None (the default): 3-D runs then use
        :class:`msagent.volume.propagation.GenericPropagator`, which works with any backbone. See
        :mod:`msagent.backbones.propagation`."""
        return None

    # -- what a backbone implements --------------------------------------------
    @abstractmethod
    def encode_image(self, image: np.ndarray) -> Any:
        """Run the image encoder on H×W×3 uint8 RGB; return backbone-specific features."""

    def encode_images(self, images: Sequence[np.ndarray]) -> list[Any]:
        """Uncached encoder over several images; override where the model batches."""
        return [self.encode_image(image) for image in images]

    @abstractmethod
    def decode_prompts(self, embedding: Embedding, prompt_sets: Sequence[Prompts],
                       prev_logits: Sequence[np.ndarray | None], *,
                       multimask: bool) -> list[MaskPrediction]:
        """Decode validated prompt sets: one :class:`MaskPrediction` per set, in order.

        Inputs are checked: prompts lie inside the image (``prompts.text`` is set only for
        what a text-prompted backbone may read), each ``prev_logits`` entry is None or a
        256×256 float32 array, ``multimask`` is a bool. Return H×W bool masks at the original
        size, 256×256 float32 low-res logits (the next turn's mask input) and scores.
        """


#: the longest text :meth:`Segmenter.propose` accepts (a noun phrase, not a report)
MAX_PROPOSAL_TEXT = 200


def check_proposal_text(text: object) -> str:
    """``text`` stripped, if it is a non-empty printable string of at most
    :data:`MAX_PROPOSAL_TEXT` characters; SegmenterError saying what is wrong otherwise."""
    if not isinstance(text, str):
        raise SegmenterError(f"propose needs the target as a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise SegmenterError("propose needs a non-empty text naming the target, e.g. 'liver'")
    if len(stripped) > MAX_PROPOSAL_TEXT:
        raise SegmenterError(f"propose takes a short noun phrase (at most {MAX_PROPOSAL_TEXT} "
                             f"characters), got {len(stripped)} characters")
    if not stripped.isprintable():
        raise SegmenterError(f"propose needs printable text (no control characters or line "
                             f"breaks), got {stripped!r}")
    return stripped


def _with_texts(sets: list[Prompts], text: str | Sequence[str | None] | None) -> list[Prompts]:
    """``text`` (one for all, or one per set) moved into the prompt sets."""
    if text is None:
        return sets
    texts = [text] * len(sets) if isinstance(text, str) else list(text)
    if len(texts) != len(sets):
        raise SegmenterError(f"decode_batch got {len(sets)} prompt sets but {len(texts)} texts; "
                             "give one of each per set")
    return [p if t is None else attrs.evolve(p, text=t) for p, t in zip(sets, texts)]


def _output_problem(prediction: Any, image_size: tuple[int, int]) -> str:
    if not isinstance(prediction, MaskPrediction):
        return f"a {type(prediction).__name__} instead of a MaskPrediction"
    mask, logits = prediction.mask, prediction.low_res_logits
    if not isinstance(mask, np.ndarray) or mask.shape != tuple(image_size) or mask.dtype != bool:
        return (f"the mask must be {image_size[0]}×{image_size[1]} bool, got "
                f"{getattr(mask, 'shape', None)} {getattr(mask, 'dtype', type(mask).__name__)}")
    if not isinstance(logits, np.ndarray) or logits.shape != (LOW_RES, LOW_RES) \
            or logits.dtype != np.float32:
        return (f"low_res_logits must be {LOW_RES}×{LOW_RES} float32, got "
                f"{getattr(logits, 'shape', None)} {getattr(logits, 'dtype', type(logits).__name__)}")
    try:
        float(prediction.score)
    except (TypeError, ValueError):
        return f"the score must be a number, got {prediction.score!r}"
    return ""


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise SegmenterError(
            f"Segmenter.encode expects an H×W×3 uint8 RGB array, got shape {shape} dtype {dtype}; "
            "convert with msagent.io.to_rgb_uint8(image)"
        )


def check_prompts(prompts: Prompts, image_size: tuple[int, int]) -> None:
    """Raise SegmenterError if prompts are empty or fall outside the image."""
    if prompts.empty:
        raise SegmenterError("decode needs at least one box or point prompt")
    height, width = image_size
    coords = [(p.x, p.y) for p in prompts.points]
    if prompts.box is not None:
        coords += [(prompts.box.x1, prompts.box.y1), (prompts.box.x2, prompts.box.y2)]
    for x, y in coords:
        if not (0 <= x < width and 0 <= y < height):
            raise SegmenterError(
                f"prompt coordinate ({x}, {y}) lies outside the {width}×{height} image"
            )


def check_prev_logits(prev_logits: np.ndarray | None) -> np.ndarray | None:
    """Return prev_logits as a 256×256 float32 array (accepting 1×256×256 and 1×1×256×256)."""
    if prev_logits is None:
        return None
    logits = np.asarray(prev_logits, dtype=np.float32)
    logits = logits.reshape(logits.shape[-2:]) if logits.ndim > 2 and logits.size == LOW_RES ** 2 \
        else logits
    if logits.shape != (LOW_RES, LOW_RES):
        raise SegmenterError(
            f"prev_logits must be {LOW_RES}×{LOW_RES} low-res logits, got shape {logits.shape}"
        )
    return logits
