"""Deterministic stand-in backbones for tests: numpy only, known behaviour, exact expectations.

- :class:`BoxBackbone` — the mask is the box; a click sets (positive) or clears (negative) its
  own pixel. For tests of plumbing (servers, agents, protocols) where what is segmented does
  not matter.
- :class:`BrightBackbone` — a box selects the bright pixels inside it; a click adds or removes
  a disk. For tests whose expected masks follow from a phantom (:func:`make_phantom`,
  :func:`make_tube`).
- :class:`ComponentBackbone` — a box selects the bright pixels inside it; a click adds or
  removes the whole bright connected component under it. For tests of click placement.
- :class:`BandBackbone` — region growing in an intensity band from the prompts: a box grows
  from its centre, a positive click from itself, a negative click carves away the part of
  the region nearer to it. Clicks are informative (unlike a box-trained model's), so the 3-D
  correction rules are developed and tested where a click can help.

Each counts what it did (``encodes``, ``decodes``) and passes :func:`check_segmenter`.
"""

from __future__ import annotations

import threading

import numpy as np

from msagent.backbones.segmenter import LOW_RES, Segmenter, image_key
from msagent.types import MaskPrediction

#: Pixels brighter than this (channel 0, 0–255) are "bright".
BRIGHT = 120


def logits_of(mask: np.ndarray) -> np.ndarray:
    """256×256 float32 low-res logits of ``mask``'s top-left corner: +10 inside, -10 outside."""
    low = np.full((LOW_RES, LOW_RES), -10.0, np.float32)
    small = np.where(mask, 10.0, -10.0)[:LOW_RES, :LOW_RES]
    low[: small.shape[0], : small.shape[1]] = small
    return low


def _zero_logits() -> np.ndarray:
    return np.zeros((LOW_RES, LOW_RES), np.float32)


class _Counting(Segmenter):
    multimask_default = False

    def __init__(self, *, cache_size: int = 16) -> None:
        super().__init__(cache_size=cache_size)
        self.encoded: list[str] = []  # the content key of each image encoded
        self.decodes = 0  # prompt sets decoded
        self._lock = threading.Lock()

    @property
    def encodes(self) -> int:
        return len(self.encoded)

    def _count_encode(self, image: np.ndarray) -> None:
        with self._lock:
            self.encoded.append(image_key(image))

    def _count_decodes(self, count: int) -> None:
        with self._lock:
            self.decodes += count


class BoxBackbone(_Counting):
    """The mask is the box (clicks set or clear single pixels); logits zero, score 0.5.
    ``fail=True`` makes encode raise a plain RuntimeError (a bug in the backbone)."""

    name = "box"

    def __init__(self, *, cache_size: int = 16, fail: bool = False) -> None:
        super().__init__(cache_size=cache_size)
        self.fail = fail

    def encode_image(self, image):
        if self.fail:
            raise RuntimeError("a bug in the backbone")
        self._count_encode(image)
        return 0

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        self._count_decodes(len(prompt_sets))
        out = []
        for prompts in prompt_sets:
            mask = np.zeros(embedding.image_size, bool)
            if prompts.box is not None:
                b = prompts.box
                mask[b.y1:b.y2 + 1, b.x1:b.x2 + 1] = True
            for p in prompts.points:
                mask[p.y, p.x] = p.positive
            out.append(MaskPrediction(mask, _zero_logits(), 0.5))
        return out


class BrightBackbone(_Counting):
    """A box selects the bright pixels inside it; a positive click adds a disk of ``radius`` px,
    a negative click removes one. Logits: :func:`logits_of` the mask; score: the bright fraction
    of the box (the mask's area without a box)."""

    name = "bright"

    def __init__(self, *, radius: float = 2, cache_size: int = 4) -> None:
        super().__init__(cache_size=cache_size)
        self.radius = radius

    def encode_image(self, image):
        self._count_encode(image)
        return image[:, :, 0] > BRIGHT

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        self._count_decodes(len(prompt_sets))
        out = []
        for prompts in prompt_sets:
            bright = embedding.features
            mask = np.zeros_like(bright)
            box = prompts.box
            if box is not None:
                mask[box.y1:box.y2 + 1, box.x1:box.x2 + 1] = bright[box.y1:box.y2 + 1, box.x1:box.x2 + 1]
            yy, xx = np.mgrid[:bright.shape[0], :bright.shape[1]]
            for p in prompts.points:
                disk = (yy - p.y) ** 2 + (xx - p.x) ** 2 <= self.radius ** 2
                mask = mask | disk if p.positive else mask & ~disk
            area = 1 if box is None else (box.x2 - box.x1 + 1) * (box.y2 - box.y1 + 1)
            out.append(MaskPrediction(mask, logits_of(mask), float(mask.sum()) / area))
        return out


class ComponentBackbone(_Counting):
    """The mask is the bright region inside the box, plus the bright (8-connected) components
    under positive clicks, minus those under negative clicks; logits zero, score 1.0.
    ``clicks_alone=False`` answers click-only prompts with an empty mask (like LiteMedSAM)."""

    name = "component"

    def __init__(self, *, clicks_alone: bool = True, cache_size: int = 4) -> None:
        super().__init__(cache_size=cache_size)
        self.clicks_alone = clicks_alone

    def encode_image(self, image):
        import cv2

        self._count_encode(image)
        return cv2.connectedComponents((image[:, :, 0] > BRIGHT).astype(np.uint8))[1]

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        self._count_decodes(len(prompt_sets))
        return [self._decode_one(embedding.features, prompts) for prompts in prompt_sets]

    def _decode_one(self, labels: np.ndarray, prompts) -> MaskPrediction:
        mask = np.zeros(labels.shape, bool)
        if prompts.box is not None:
            b = prompts.box
            mask[b.y1:b.y2 + 1, b.x1:b.x2 + 1] = labels[b.y1:b.y2 + 1, b.x1:b.x2 + 1] > 0
        elif not self.clicks_alone:
            return MaskPrediction(mask, _zero_logits(), 0.0)
        for p in prompts.points:
            if labels[p.y, p.x]:
                component = labels == labels[p.y, p.x]
                mask = (mask | component) if p.positive else (mask & ~component)
        return MaskPrediction(mask, _zero_logits(), 1.0)


class BandBackbone(_Counting):
    """Region growing in an intensity band (deterministic; a click-responsive stand-in).

    The image (channel 0) is median-filtered (``smooth`` px) at encode time. Each positive
    seed grows the 8-connected region of pixels within ``band`` grey levels of the seed's
    intensity (the median of a 5×5 window; for a box, the median of its central half):

    - a box seeds its central half and grows inside the box only;
    - a positive click grows from itself, inside the box when it is in the box, else anywhere;
    - a negative click removes the pixels of the region nearer (Euclidean) to it than to any
      positive seed, and whatever that cuts off from the seeds;
    - holes in the region are filled.

    No mask input (``prev_logits`` is ignored); logits: :func:`logits_of` the mask. Score: 1
    minus the fraction of the box's border covered by the mask (a region that runs along the
    box's edges has leaked into what surrounds the target), 1.0 without a box, 0 when empty."""

    name = "band"

    def __init__(self, *, band: int = 24, smooth: int = 5, cache_size: int = 4) -> None:
        super().__init__(cache_size=cache_size)
        self.band, self.smooth = int(band), int(smooth)

    def encode_image(self, image):
        import cv2

        self._count_encode(image)
        gray = np.ascontiguousarray(image[:, :, 0])
        return cv2.medianBlur(gray, self.smooth) if self.smooth > 1 else gray

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        self._count_decodes(len(prompt_sets))
        return [self._decode_one(embedding.features, prompts) for prompts in prompt_sets]

    def _grow(self, gray: np.ndarray, seeds: np.ndarray, reference: float,
              limit: np.ndarray | None) -> np.ndarray:
        from scipy import ndimage

        band = np.abs(gray.astype(np.int16) - int(round(reference))) <= self.band
        if limit is not None:
            band &= limit
        labels, _ = ndimage.label(band, structure=np.ones((3, 3), bool))
        keep = np.unique(labels[seeds & band])
        return np.isin(labels, keep[keep > 0])

    def _decode_one(self, gray: np.ndarray, prompts) -> MaskPrediction:
        from scipy import ndimage

        height, width = gray.shape
        mask = np.zeros(gray.shape, bool)
        seeds = np.zeros(gray.shape, bool)  # every positive seed pixel
        inside = None
        box = prompts.box
        if box is not None:
            inside = np.zeros(gray.shape, bool)
            inside[box.y1:box.y2 + 1, box.x1:box.x2 + 1] = True
            qy, qx = (box.y2 - box.y1 + 1) // 4, (box.x2 - box.x1 + 1) // 4
            core = np.zeros(gray.shape, bool)
            core[box.y1 + qy:box.y2 - qy + 1, box.x1 + qx:box.x2 - qx + 1] = True
            mask |= self._grow(gray, core, float(np.median(gray[core])), inside)
            seeds |= core
        for p in prompts.points:
            if not p.positive:
                continue
            y, x = min(max(p.y, 0), height - 1), min(max(p.x, 0), width - 1)
            window = gray[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
            point = np.zeros(gray.shape, bool)
            point[y, x] = True
            limit = inside if inside is not None and inside[y, x] else None
            mask |= self._grow(gray, point, float(np.median(window)), limit) | point
            seeds |= point
        negatives = [p for p in prompts.points if not p.positive]
        if negatives and mask.any():
            away = np.ones(gray.shape, bool)
            for p in negatives:
                away[min(max(p.y, 0), height - 1), min(max(p.x, 0), width - 1)] = False
            to_negative = ndimage.distance_transform_edt(away)
            to_positive = ndimage.distance_transform_edt(~seeds) if seeds.any() else np.inf
            mask &= to_positive < to_negative
            labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
            keep = np.unique(labels[seeds & mask])
            mask = np.isin(labels, keep[keep > 0])
        mask = ndimage.binary_fill_holes(mask)
        if not mask.any():
            return MaskPrediction(mask, logits_of(mask), 0.0)
        score = 1.0
        if box is not None:
            edge = np.zeros(gray.shape, bool)
            edge[box.y1:box.y2 + 1, box.x1:box.x2 + 1] = True
            edge[box.y1 + 1:box.y2, box.x1 + 1:box.x2] = False
            score = 1.0 - float((mask & edge).sum()) / max(int(edge.sum()), 1)
        return MaskPrediction(mask, logits_of(mask), score)


class ProposingBackbone(BrightBackbone):
    """:class:`BrightBackbone` that also proposes from text (``can_propose``): the largest
    connected bright region, eroded by ``erode`` px (a rough first mask for the agent to
    refine), score 0.9; a description containing ``"nothing"`` matches nothing."""

    name = "proposing"
    can_propose = True

    def __init__(self, *, erode: int = 3, radius: float = 2, cache_size: int = 4) -> None:
        super().__init__(radius=radius, cache_size=cache_size)
        self.erode, self.proposals = erode, 0

    def propose_masks(self, embedding, text, *, max_candidates):
        from scipy import ndimage

        self.proposals += 1
        if "nothing" in text:
            return []
        labels, count = ndimage.label(embedding.features)
        if not count:
            return []
        sizes = ndimage.sum(embedding.features, labels, range(1, count + 1))
        mask = labels == 1 + int(np.argmax(sizes))
        if self.erode:
            mask = ndimage.binary_erosion(mask, iterations=self.erode)
        return [MaskPrediction(mask, logits_of(mask), 0.9)][:max_candidates]


__all__ = ["BRIGHT", "BandBackbone", "BoxBackbone", "BrightBackbone", "ComponentBackbone",
           "ProposingBackbone", "logits_of"]
