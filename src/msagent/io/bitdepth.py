"""High bit-depth 2-D images: 16-bit PNG and TIFF (uint16, float32) without loss.

:func:`msagent.io.load_array` already reads these files with their full range (a 16-bit
PNG comes back as uint16); :func:`msagent.io.to_rgb_uint8` then windows them for a model
(percentiles, see :mod:`msagent.io.images`). These writers keep raw values, for example
HU slices (as ``int16 + 1024`` in a 16-bit PNG, or float32 in TIFF) or label maps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidImage


def save_png16(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a 2-D array with values in 0..65535 as a 16-bit grayscale PNG, atomically."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise InvalidImage(f"a 16-bit PNG holds one channel; got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 65535 or
                       (array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0))):
        raise InvalidImage("16-bit PNG values must be integers in 0..65535; shift/scale first "
                           "(e.g. HU + 1024) or write TIFF (save_tiff keeps float32)")
    return _save(Image.fromarray(array.astype(np.uint16)), path, "PNG")


def save_tiff(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a 2-D uint8/uint16/int16/int32/float32 array as a single-page TIFF, atomically."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise InvalidImage(f"save_tiff writes one 2-D page; got shape {array.shape}")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype not in (np.uint8, np.uint16, np.int16, np.int32, np.float32):
        raise InvalidImage(f"TIFF pages here are uint8/uint16/int16/int32/float32, not {array.dtype}")
    return _save(Image.fromarray(array), path, "TIFF")


def _save(image: Image.Image, path: str | os.PathLike, fmt: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format=fmt)
    os.replace(tmp, path)
    return path
