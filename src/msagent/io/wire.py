"""Wire formats shared by the server and the ``remote`` backbone (NumPy and Pillow only).

- arrays (low-res logits): ``{"dtype": "float16"|"float32", "shape": [...], "data": base64}``
  of the C-order little-endian bytes; float16 halves the bytes and is the default.
- masks: msagent's run-length code (:func:`msagent.types.encode_mask`) or a base64 PNG (0/255).
- images: uploaded as PNG, JPEG, TIFF or ``.npy`` bytes; decoded with
  :func:`msagent.io.to_rgb_uint8`, so the content hash the server reports equals
  :func:`msagent.backbones.segmenter.image_key` of the client's H×W×3 uint8 array sent as PNG or .npy.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from msagent.errors import InvalidImage, InvalidInput
from msagent.io import to_rgb_uint8

ARRAY_DTYPES = ("float16", "float32")
UPLOAD_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")  # what an upload may be (Pillow opens more)
MAX_ARRAY_ELEMENTS = 4 * 256 * 256
_F16_MAX = float(np.finfo(np.float16).max)


class ImageTooLarge(InvalidImage):
    """An upload over the server's byte or pixel limit (HTTP 413)."""


def pack_array(array: np.ndarray, dtype: str = "float16") -> dict[str, Any]:
    """Encode a float array; float16 values are clipped to its finite range."""
    if dtype not in ARRAY_DTYPES:
        raise InvalidInput(f"array dtype must be one of {', '.join(ARRAY_DTYPES)}, got {dtype!r}")
    values = np.asarray(array, dtype=np.float32)
    if dtype == "float16":
        values = np.clip(values, -_F16_MAX, _F16_MAX)
    data = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return {"dtype": dtype, "shape": list(values.shape), "data": base64.b64encode(data).decode()}


def unpack_array(packed: Mapping[str, Any], what: str = "prev_logits") -> np.ndarray:
    """Decode :func:`pack_array`'s output to float32, checking dtype, shape, size and values."""
    dtype, shape = packed.get("dtype"), packed.get("shape")
    if dtype not in ARRAY_DTYPES:
        raise InvalidInput(f"{what}.dtype must be one of {', '.join(ARRAY_DTYPES)}, got {dtype!r}")
    if not isinstance(shape, (list, tuple)) or not shape or \
            not all(isinstance(n, int) and 0 < n <= MAX_ARRAY_ELEMENTS for n in shape):
        raise InvalidInput(f"{what}.shape must be a list of positive integers, got {shape!r}")
    count = int(np.prod(shape, dtype=np.int64))
    if count > MAX_ARRAY_ELEMENTS:
        raise InvalidInput(f"{what} has {count} elements, over the limit {MAX_ARRAY_ELEMENTS}")
    raw = decode_b64(packed.get("data"), f"{what}.data")
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != count * itemsize:
        raise InvalidInput(f"{what}.data holds {len(raw)} bytes but shape {list(shape)} of "
                           f"{dtype} needs {count * itemsize}")
    values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise InvalidInput(f"{what} contains NaN or infinite values")
    return values


def decode_b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not valid base64") from None


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG of an H×W (gray) or H×W×3 (RGB) uint8 image, or of a bool mask as 0/255."""
    array = np.asarray(image)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def mask_png_b64(mask: np.ndarray) -> str:
    return base64.b64encode(png_bytes(np.asarray(mask, dtype=bool))).decode()


def decode_upload(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Uploaded bytes (PNG/JPEG/TIFF/BMP or .npy) → H×W×3 uint8 RGB.

    Raises :class:`ImageTooLarge` over ``max_pixels`` (checked from the header, before
    decoding) and :class:`msagent.errors.InvalidImage` for anything unreadable.
    """
    if not data:
        raise InvalidImage("the uploaded image is empty; send PNG, JPEG, TIFF or .npy bytes")
    if data.startswith(b"\x93NUMPY"):
        return to_rgb_uint8(_load_npy(data, max_pixels), max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # no EPS (Ghostscript), GIF…
            img: Image.Image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
            _check_pixels(img.width * img.height, max_pixels)
            img.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the uploaded image is too large to decode safely: {exc}") from None
    except Exception as exc:
        raise InvalidImage("the upload is not a readable image (PNG, JPEG, TIFF, BMP or .npy): "
                           f"{type(exc).__name__}: {exc}") from None
    if img.mode in ("YCbCr", "HSV", "LAB", "CMYK", "P", "PA", "LA", "1"):
        img = img.convert("RGB")
    return to_rgb_uint8(np.asarray(img), max_pixels=max_pixels)


def decode_mask_upload(data: bytes, *, max_pixels: int, what: str = "mask",
                       size: tuple[int, int] | None = None) -> np.ndarray:
    """Uploaded mask bytes (PNG/TIFF/BMP or .npy) → its H×W plane by the one mask rule
    (:func:`msagent.io.images.mask_plane`: any channel, a palette's index, a varying alpha;
    values kept), checked against ``max_pixels`` and, with ``size``, against the image's
    (height, width) from the header before decoding. Raises :class:`ImageTooLarge` or
    :class:`msagent.errors.InvalidMask`."""
    from msagent.errors import InvalidMask
    from msagent.io.images import check_mask_size, mask_array

    if not data:
        raise InvalidMask(f"the {what} upload is empty")
    try:
        if data.startswith(b"\x93NUMPY"):
            return mask_array(load_npy_bytes(data, max_pixels), what=what)  # a view: no decoding
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
            _check_pixels(img.width * img.height, max_pixels)
            if size is not None:
                check_mask_size((img.height, img.width), size, f"the {what}")
            img.load()
    except (InvalidMask, ImageTooLarge):
        raise
    except InvalidImage as exc:
        raise InvalidMask(f"{what}: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the {what} is too large to decode safely: {exc}") from None
    except Exception as exc:
        raise InvalidMask(f"the {what} is not a readable image (PNG, TIFF, BMP or .npy): "
                          f"{type(exc).__name__}: {exc}") from None
    return mask_array(img, what=what, max_pixels=max_pixels)


def load_npy_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    """A ``.npy`` upload as an array, its header checked before anything is allocated: the
    shape against ``max_pixels`` (height × width) and against the bytes actually sent
    (``np.load`` would allocate what the header claims first). No pickles. What the shape
    means (gray, RGB, 2-D at all) is for the caller to check."""
    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    try:
        version = npy.read_magic(stream)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read_header(stream, max_header_size=10_000)
    except Exception as exc:  # a bad magic, header or dtype
        raise InvalidImage(f"the upload is not a readable .npy array: {exc}") from None
    if dtype.hasobject or dtype.itemsize == 0 or len(shape) > 3:
        raise InvalidImage(f"the .npy upload must hold a numeric 2-D image array (H×W or H×W×C), got "
                           f"{dtype} {tuple(shape)[:6]}")
    if len(shape) >= 2:
        hw = shape[1:3] if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] > 4 else shape[:2]
        _check_pixels(int(hw[0]) * int(hw[1]), max_pixels)
    count = math.prod(int(n) for n in shape)  # Python ints: np.prod would wrap around
    # the array is a view of the bytes sent: no more is allocated
    body = data[stream.tell():]
    if len(body) != count * dtype.itemsize:
        raise InvalidImage(f"the .npy upload declares {shape} {dtype} ({count * dtype.itemsize:,} "
                           f"bytes) but holds {len(body):,} bytes of data")
    array = np.frombuffer(body, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def _load_npy(data: bytes, max_pixels: int) -> np.ndarray:
    return load_npy_bytes(data, max_pixels)


def _check_pixels(count: int, limit: int) -> None:
    if count > limit:
        raise ImageTooLarge(f"the uploaded image has {count:,} pixels, over this server's limit "
                            f"of {limit:,}; downsample it (its operator sets the limit)")
