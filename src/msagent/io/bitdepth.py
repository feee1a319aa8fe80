"""High bit-depth 2-D images: 16-bit PNG and TIFF (uint16, int16, float32) without loss.

:func:`msagent.io.load_array` reads these files with their full range: a 16-bit grey PNG as
uint16 (Pillow), and — since Pillow cuts them to 8 bits — 16-bit colour PNGs and every TIFF
deeper than 8 bits per sample through OpenCV (:func:`read_full_depth`), so a 16-bit RGB image
of values 1000–1100 stays 1000–1100. :func:`msagent.io.to_rgb_uint8` then windows them for a
model (percentiles over all colour channels together, see :mod:`msagent.io.images`). The
writers keep raw values, for example HU slices (as ``int16 + 1024`` in a 16-bit PNG, or int16
or float32 in TIFF) or label maps.
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from msagent.errors import InvalidImage
from msagent.io.atomic import atomic_write

_PNG_DEEP_COLOUR_TYPES = {2, 4, 6}  # RGB, grey + alpha, RGBA (IHDR colour types)


def needs_full_depth(image: Image.Image, path: Path) -> bool:
    """True when Pillow would cut ``image`` (opened from ``path``) to 8 bits per sample: a
    16-bit colour or grey + alpha PNG, or a TIFF deeper than 8 bits per sample."""
    if image.format == "PNG":
        with path.open("rb") as handle:
            ihdr = handle.read(26)
        return len(ihdr) == 26 and ihdr[24] == 16 and ihdr[25] in _PNG_DEEP_COLOUR_TYPES
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, (1,))  # type: ignore[attr-defined]  # a TiffImageFile
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(int(b) for b in bits) > 8
    return False


def read_full_depth(path: Path) -> np.ndarray:
    """The image at ``path`` at its stored depth (OpenCV), channels in RGB(A) order."""
    try:
        array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InvalidImage(f"{path} could not be decoded at full depth: {exc}") from None
    if array is None:
        raise InvalidImage(f"{path} could not be decoded at full depth; convert it to a 16-bit "
                           "PNG or a one-page TIFF")
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array[:, :, ::-1])
    if array.ndim == 3 and array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, [2, 1, 0, 3]])
    return array


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
    # OpenCV, not Pillow: Pillow widens int16 to a 32-bit page. Uncompressed (1): every
    # TIFF reader can open it (LZW needs extra codecs in some, e.g. tifffile).
    ok, encoded = cv2.imencode(".tiff", np.ascontiguousarray(array),
                               [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    if not ok:
        raise InvalidImage(f"could not encode a {array.dtype} TIFF page")
    return _write_bytes(encoded.tobytes(), path)


def _save(image: Image.Image, path: str | os.PathLike, fmt: str) -> Path:
    buffer = _io.BytesIO()
    image.save(buffer, format=fmt)
    return _write_bytes(buffer.getvalue(), path)


def _write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    atomic_write(path, data)
    return Path(path)
