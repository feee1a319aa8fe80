"""Short, truthful rationale texts for expert actions.

Each text says what the action does and why, from facts the expert computed (where the
target or the error region lies), never claiming what the mask does not show. Several
phrasings per situation give the SFT data variety; the choice is drawn from the caller's RNG.
"""

from __future__ import annotations

import numpy as np

_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "central", "right")

BOX = (
    "The {target} lies in the {where} part of the image. I will start with a bounding box around it.",
    "I can see the {target} in the {where} region. A bounding box around it gives a first mask.",
    "To begin, I'll draw a box that encloses the {target}, located in the {where} area.",
)
FIRST_CLICK = (
    "The {target} is in the {where} part of the image. I'll place a positive point inside it to start.",
    "I'll start by clicking inside the {target}, which sits in the {where} region.",
)
POSITIVE = (
    "The mask misses part of the {target} in the {where} region. I'll add a positive point there.",
    "Part of the {target} in the {where} area is not covered yet; a positive point should include it.",
    "The green overlay leaves out a portion of the {target} ({where}). Adding a positive point there.",
)
NEGATIVE = (
    "The mask extends beyond the {target} in the {where} region. I'll add a negative point to remove it.",
    "There is a false-positive area in the {where} part of the image; a negative point should exclude it.",
    "The overlay spills outside the {target} ({where}). Placing a negative point there.",
)
STOP_GOOD = (
    "The mask now covers the {target} accurately. I'll stop here.",
    "The green overlay matches the {target} well, so the segmentation is complete.",
)
STOP_STUCK = (
    "The remaining differences are small and further clicks do not improve the mask. I'll stop.",
    "The mask covers the {target} about as well as the tool allows. Stopping.",
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
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def pick(templates: tuple[str, ...], rng: np.random.Generator, **fields: str) -> str:
    return templates[int(rng.integers(len(templates)))].format(**fields)
