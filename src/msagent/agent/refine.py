"""Refining an existing mask: the initial mask of an episode, and seeded degradations of a
ground truth that stand in for an automatic model's prediction.

An episode may start from any prediction (nnU-Net, TotalSegmentator, a colleague's mask). It
is turn 0: the policy sees its overlay first, and it enters the backbone as the mask input of
the first decode — low-res logits in the backbone's own input frame
(:meth:`msagent.Segmenter.mask_logits`), with the mask's box as a prompt in force (for a
backbone without a mask input, the box alone), so the first action refines around it.

Rules for an initial mask (:func:`check_initial_mask`): the image's height × width, two values
at most (bool, 0/1 or 0/k), not all foreground; an empty mask is no initial mask. Its
foreground is what is non-zero in any channel (a palette image's index, alpha when it varies;
:func:`msagent.io.images.mask_plane`): a green, palette or alpha-only mask is never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import cv2
import numpy as np
from scipy import ndimage

from msagent.backbones.segmenter import Segmenter
from msagent.errors import InvalidMask
from msagent.types import BBox, MaskPrediction, Prompts

log = logging.getLogger(__name__)
DEGRADATIONS = ("erode", "dilate", "shift", "drop", "add")


def check_initial_mask(mask, image_size: tuple[int, int]) -> np.ndarray | None:
    """``mask`` as an H×W bool array, or None when it is empty (then the episode starts from
    nothing, as without one). Raises :class:`InvalidMask` for another size, a volume, non-binary
    values or a mask that is all foreground."""
    if mask is None:
        return None
    from msagent.io.images import mask_array

    array = mask_array(mask, what="initial mask")  # any channel: msagent.io.images.mask_plane
    if array.ndim != 2:
        raise InvalidMask(f"the initial mask has shape {array.shape}; a 2-D image of "
                          f"{tuple(image_size)} (H, W) needs an H×W mask (for a volume, give the "
                          "slice's mask)")
    if array.shape != tuple(image_size):
        raise InvalidMask(f"the initial mask is {array.shape[0]}×{array.shape[1]} (H×W) but the "
                          f"image is {image_size[0]}×{image_size[1]}; they must match pixel for pixel")
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
        raise InvalidMask(f"the initial mask must be bool or numeric and finite, got {array.dtype}")
    if array.dtype != bool:  # a bool mask is binary; the sort of np.unique is for the others
        values = np.unique(array)
        if len(values) > 2 or (len(values) == 2 and values[0] != 0):
            raise InvalidMask(f"the initial mask must be binary (0 and one other value), got values "
                              f"{values[:6].tolist()}{'…' if len(values) > 6 else ''}; threshold a "
                              "probability map first (e.g. mask > 0.5)")
    out = array != 0
    if not out.any():
        log.info("the initial mask is empty: the episode starts from nothing")
        return None
    if out.all():
        raise InvalidMask("the initial mask covers the whole image; give a prediction of the "
                          "target, or no initial mask")
    return out


def mask_box(mask: np.ndarray) -> BBox:
    """The tight pixel box (corners inclusive) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return BBox(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def initial_state(segmenter: Segmenter, mask: np.ndarray) -> tuple[MaskPrediction, Prompts]:
    """The prediction an episode starts from (the mask, its logits in the backbone's frame, no
    score; no logits for a backbone without a mask input) and the prompts in force: the mask's
    box, which a box action of the policy replaces.

    Why the box too: SAM-family decoders trained mostly on boxes do poorly on a mask input and
    a click alone (measured in docs/refine.md).
    """
    logits = segmenter.mask_logits(mask)
    # None for a backbone without mask input (MaskPrediction.low_res_logits is then None too)
    return MaskPrediction(mask, logits, float("nan")), Prompts(box=mask_box(mask))  # type: ignore[arg-type]


@attrs.frozen
class Degradation:
    """A seeded stand-in for an automatic prediction: ``kind`` in :data:`DEGRADATIONS` with
    ``strength`` as a fraction of the target's size (the equivalent diameter)."""

    kind: str = attrs.field(validator=attrs.validators.in_(DEGRADATIONS))
    strength: float = attrs.field(default=0.15, validator=attrs.validators.and_(
        attrs.validators.gt(0), attrs.validators.le(1)))

    def apply(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The degraded mask (never empty, never the whole image)."""
        mask = np.asarray(mask, bool)
        size = max(1, int(round(self.strength * np.sqrt(4 * mask.sum() / np.pi))))
        out = _DEGRADE[self.kind](mask, size, rng)
        if not out.any():  # too strong for a small target: keep its largest part
            out = mask
        if out.all():
            out = mask
        return out


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)).astype(bool)


def _erode(mask, size, rng):
    return ndimage.binary_erosion(mask, _disk(max(1, size // 2)))


def _dilate(mask, size, rng):
    return ndimage.binary_dilation(mask, _disk(max(1, size // 2)))


def _shift(mask, size, rng):
    angle = rng.uniform(0, 2 * np.pi)
    dy, dx = int(round(size * np.sin(angle))), int(round(size * np.cos(angle)))
    return ndimage.shift(mask, (dy, dx), order=0, mode="constant", cval=False)


def _drop(mask, size, rng):
    """Cut a disk out of the target (or drop its smallest component when it has several)."""
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, labels, range(1, count + 1))
        return mask & (labels != int(np.argmin(sizes)) + 1)
    ys, xs = np.nonzero(mask)
    pick = rng.integers(len(xs))
    return mask & ~_blob(mask.shape, xs[pick], ys[pick], size)


def _add(mask, size, rng):
    """Add a false-positive blob near the target, outside it."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    for _ in range(20):
        x = int(np.clip(rng.normal(xs.mean(), 2 * xs.std() + size), 0, width - 1))
        y = int(np.clip(rng.normal(ys.mean(), 2 * ys.std() + size), 0, height - 1))
        if not mask[y, x]:
            return mask | _blob(mask.shape, x, y, size // 2 + 1)
    return mask


def _blob(shape: Sequence[int], x: int, y: int, radius: int) -> np.ndarray:
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2


_DEGRADE = {"erode": _erode, "dilate": _dilate, "shift": _shift, "drop": _drop, "add": _add}


def initial_for_case(case, spec: str, strength: float = 0.15, seed: int = 0) -> tuple[np.ndarray, str]:
    """The initial mask of an evaluation case and its source: ``spec`` is ``degrade:K1,K2,...``
    (one of the kinds per case, chosen and seeded by the case id, applied to its ground truth)
    or a folder of predictions named by case id (``<id>.png``, ``.npy``, ``.tif``; nonzero =
    the target)."""
    import hashlib
    from pathlib import Path

    from msagent.errors import InvalidInput

    digest = int(hashlib.sha256(f"{seed}:{case.id}".encode()).hexdigest()[:16], 16)
    if spec.startswith("degrade:"):
        kinds = [k.strip() for k in spec[len("degrade:"):].split(",") if k.strip()] or list(DEGRADATIONS)
        unknown = sorted(set(kinds) - set(DEGRADATIONS))
        if unknown:
            raise InvalidInput(f"unknown degradation(s) {unknown}; choose from {', '.join(DEGRADATIONS)}")
        kind = kinds[digest % len(kinds)]
        mask = Degradation(kind, strength).apply(case.ground_truth, np.random.default_rng(digest))
        return mask, f"degraded:{kind}"
    folder = Path(spec)
    if not folder.is_dir():
        raise InvalidInput(f"--refine-from {spec}: not a folder of predictions, nor degrade:KINDS "
                           f"(kinds: {', '.join(DEGRADATIONS)})")
    from msagent.io.images import mask_array

    names = [f"{case.id}{suffix}" for suffix in (".png", ".npy", ".tif", ".tiff")]
    for name in names:
        if (folder / name).is_file():  # palette indices and alpha kept: the one mask rule
            return mask_array(folder / name, what=f"prediction {name}"), f"prediction:{name}"
    raise InvalidInput(f"no prediction for case {case.id!r} in {folder} (looked for "
                       f"{', '.join(names)})")
