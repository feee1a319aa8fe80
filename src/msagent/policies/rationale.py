"""Short, truthful rationale texts for expert actions.

Each text says what the action does and why, from facts the expert computed from the ground
truth and the current mask (where the target or the error region lies, how large it is),
never claiming what the mask does not show. Several phrasings per situation give the SFT data
variety; the choice is drawn from the caller's RNG. Fields: ``{target}`` the target text,
``{where}`` a coarse 3×3 location (:func:`where`), ``{size}`` the target's size relative to
the image (:func:`size_word`), ``{extent}`` an error region's size relative to the target
(:func:`extent_word`).
"""

from __future__ import annotations

import cv2
import numpy as np

_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "central", "right")

BOX = (  # the box may be jittered: say "around", never "encloses the whole"
    "The {target} lies in the {where} part of the image. I will start with a bounding box around it.",
    "I can see the {target} in the {where} region. A bounding box around it gives a first mask.",
    "To begin, I'll draw a box around the {target}, located in the {where} area.",
    "The {target} is a {size} structure in the {where} part of the image; a box around it is a "
    "good first prompt.",
    "First I'll localize the {target} ({where}) with a bounding box.",
    "Starting with a bounding box around the {target}, which occupies a {size} area in the "
    "{where} region.",
)
FIRST_CLICK = (
    "The {target} is in the {where} part of the image. I'll place a positive point inside it to start.",
    "I'll start by clicking inside the {target}, which sits in the {where} region.",
    "The {target} is a {size} structure in the {where} area. A positive point inside it gives a "
    "first mask.",
    "To begin, I'll mark the {target} ({where}) with a positive point.",
    "A positive point inside the {target}, in the {where} part of the image, starts the mask.",
)
POSITIVE = (
    "The mask misses {extent} part of the {target} in the {where} region. I'll add a positive point there.",
    "Part of the {target} in the {where} area is not covered yet; a positive point should include it.",
    "The green overlay leaves out {extent} portion of the {target} ({where}). Adding a positive point there.",
    "The {target} extends beyond the current mask in the {where} region, so I'll mark it with a "
    "positive point.",
    "To include the missed part of the {target} in the {where} area, I'll place a positive point inside it.",
    "{extent_cap} region of the {target} ({where}) is still outside the mask. A positive point "
    "will add it.",
)
NEGATIVE = (
    "The mask extends beyond the {target} in the {where} region. I'll add a negative point to remove it.",
    "There is {extent} false-positive area in the {where} part of the image; a negative point "
    "should exclude it.",
    "The overlay spills outside the {target} ({where}). Placing a negative point there.",
    "The green mask covers {extent} area in the {where} region that does not belong to the "
    "{target}; a negative point will remove it.",
    "To trim the part of the mask outside the {target} in the {where} area, I'll add a negative point.",
)
STOP_GOOD = (
    "The mask now covers the {target} accurately. I'll stop here.",
    "The green overlay matches the {target} well, so the segmentation is complete.",
    "The mask follows the boundary of the {target} closely now; no further refinement is needed.",
    "The {target} is segmented accurately. Stopping.",
)
STOP_STUCK = (
    "Further points do not make the mask of the {target} better, so I'll keep the current result.",
    "Additional clicks would not improve the segmentation of the {target}; I'll finish here.",
    "The mask covers the {target} about as well as the tool allows. Stopping.",
)
#: Like STOP_STUCK, when the mask is already close to the target (IoU ≥ CLOSE_IOU).
STOP_STUCK_CLOSE = (
    "The remaining differences are small and further clicks do not improve the mask. I'll stop.",
    "Only small boundary differences remain, and another point would not help. Stopping.",
    "The mask covers the {target} about as well as the tool allows. Stopping.",
)
CLOSE_IOU = 0.8
STOP_BUDGET = (
    "I have refined the mask of the {target} over several steps; I'll finish with the current result.",
    "That is enough refinement for the {target}. Stopping here.",
    "The mask of the {target} has been refined step by step; I'll stop now.",
)
STOP_NO_START = (
    "None of the prompts I tried produces a useful mask of the {target}. Stopping.",
)


def where(x: float, y: float, width: int, height: int) -> str:
    """A coarse 3×3 location name, e.g. 'upper left', 'middle central' → 'central'."""
    row = _ROWS[min(2, int(3 * y / max(height, 1)))]
    col = _COLS[min(2, int(3 * x / max(width, 1)))]
    if row == "middle" and col == "central":
        return "central"
    if row == "middle":
        return f"{col}-middle"
    return f"{row} {col}".replace(" central", "-central")


def mask_center(mask: np.ndarray) -> tuple[float, float]:
    """The (x, y) centroid of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def size_word(fraction: float) -> str:
    """The size of a structure covering ``fraction`` of the image: small, medium-sized, large."""
    if fraction < 0.02:
        return "small"
    return "medium-sized" if fraction < 0.15 else "large"


def extent_word(fraction: float) -> str:
    """An error region's size as a fraction of the target: 'a small', 'a sizeable', 'a large'."""
    if fraction < 0.05:
        return "a small"
    return "a sizeable" if fraction < 0.25 else "a large"


def region_fraction(region: np.ndarray, x: int, y: int, reference_area: int) -> float:
    """Area of the connected component of ``region`` (H×W bool) containing pixel (x, y),
    divided by ``reference_area``; 0 when the pixel is outside the region."""
    if not region[y, x]:
        return 0.0
    _, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    return float(np.count_nonzero(labels == labels[y, x])) / max(int(reference_area), 1)


def pick(templates: tuple[str, ...], rng: np.random.Generator, **fields: str) -> str:
    """One template drawn from ``rng``, filled with ``fields`` (``extent_cap`` is derived)."""
    if "extent" in fields:
        fields.setdefault("extent_cap", fields["extent"][:1].upper() + fields["extent"][1:])
    return templates[int(rng.integers(len(templates)))].format(**fields)
