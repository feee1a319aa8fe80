"""Reading images and masks for 2-D calls, and turning any array into H×W×3 uint8 RGB.

Intensity rules (documented in the README):
- ``uint8`` is kept as is; ``bool`` becomes 0/255;
- any other integer or float image is windowed to its 0.5th–99.5th percentile and scaled
  to 0–255 (robust to a few hot pixels in 16-bit MR/CT); colour images are windowed with
  one mapping for all three channels, so a 16-bit RGB image keeps its colours;
- gray (H×W or H×W×1) is repeated to three channels; alpha is dropped (before windowing);
  channel-first 3×H×W is transposed;
- NaN or infinite values are refused (fill or mask them first); volumes differ: there
  windowing shows them as 0 (:func:`msagent.io.apply_window`).
Masks (:func:`to_mask`, and every reader of a mask image: initial masks, ground truths,
uploads) follow one rule, :func:`mask_plane`: the foreground is what is non-zero in any colour
channel, in a palette image's index (not its colours), or in an alpha channel that varies; an
alpha channel that is the same everywhere (an opaque image) says nothing; colour and a varying
alpha that mark different pixels are refused, never guessed.
Files are read at their stored depth (16-bit colour PNG and deep TIFF too, see
:mod:`msagent.io.bitdepth`); a multi-page TIFF is refused, since which page is meant is not
known. Images over ``max_pixels`` (default 64 megapixels, ``MSAGENT_MAX_PIXELS``) are refused
from their header, before decoding.
"""

from __future__ import annotations

import io as _io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from msagent.errors import InvalidImage, InvalidMask
from msagent.io.atomic import atomic_write
from msagent.io.bitdepth import needs_full_depth, read_full_depth

DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def max_pixels_limit(max_pixels: int | None = None) -> int:
    if max_pixels is not None:
        return int(max_pixels)
    return int(os.environ.get("MSAGENT_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def load_array(source: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """An array from a path (PNG/JPEG/TIFF/BMP/.npy), a PIL image or an array-like."""
    limit = max_pixels_limit(max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source), limit)
    if isinstance(source, Image.Image):
        _check_pixels(source.width * source.height, limit, "image")
        return np.asarray(source.convert("RGB") if source.mode in ("P", "CMYK", "LA", "PA")
                          else source)
    try:
        return np.asarray(source)
    except Exception as exc:  # e.g. ragged lists
        raise InvalidImage(f"cannot interpret {type(source).__name__} as an image: {exc}") from None


def _read_file(path: Path, limit: int, mask: bool = False,
               size: tuple[int, int] | None = None) -> np.ndarray:
    if not path.is_file():
        raise InvalidImage(f"image file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False, mmap_mode="r")
        except Exception as exc:
            raise InvalidImage(f"{path} is not a readable .npy array: {exc}") from None
    if suffix not in IMAGE_SUFFIXES and not path.name.endswith((".nii", ".nii.gz", ".dcm")):
        raise InvalidImage(f"unsupported image format {path.name!r}; use PNG, JPEG, TIFF, BMP "
                           "or .npy (NIfTI/DICOM volumes: msagent.io.read_volume)")
    if suffix not in IMAGE_SUFFIXES:
        raise InvalidImage(f"{path.name} is a volume; pick a slice first (msagent segment "
                           "VOLUME TARGET --slices ...) or pass a 2-D image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                img: Image.Image = opened
                _check_pixels(img.width * img.height, limit, str(path))
                if size is not None:  # a mask must fit its image: known from the header
                    check_mask_size((img.height, img.width), size, str(path))
                _check_single_page(img, path)
                if needs_full_depth(img, path):
                    return read_full_depth(path)
                img.load()
                if mask:
                    return _mask_pixels(img)
                if img.mode in ("P", "CMYK", "LA", "PA", "YCbCr"):
                    img = img.convert("RGB")
                return np.asarray(img)
    except (InvalidImage, InvalidMask):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"{path} is too large to decode safely: {exc}") from None
    except Exception as exc:
        raise InvalidImage(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from None


def _check_single_page(image: Image.Image, path: Path) -> None:
    pages = int(getattr(image, "n_frames", 1) or 1)
    if pages > 1:
        raise InvalidImage(f"{path} has {pages} pages (frames); msagent reads one 2-D image and "
                           "will not guess which: save the page you want on its own (e.g. "
                           "tifffile.imread(path, key=0)) or pass it as an array")


def _check_pixels(count: int, limit: int, what: str) -> None:
    if count > limit:
        raise InvalidImage(f"{what} has {count:,} pixels, over the limit of {limit:,}; "
                           "downsample it or raise MSAGENT_MAX_PIXELS")


def to_rgb_uint8(image: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """Normalize an image (path, PIL, array) to a contiguous H×W×3 uint8 RGB array."""
    array = load_array(image, max_pixels=max_pixels)
    array = _to_hwc(array)
    _check_pixels(array.shape[0] * array.shape[1], max_pixels_limit(max_pixels), "image")
    if array.shape[2] == 4:  # alpha must not take part in the window
        array = array[:, :, :3]
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = _window(array)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _to_hwc(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise InvalidImage(f"image must be numeric, got dtype {array.dtype}")
    if array.size == 0 or 0 in array.shape:
        raise InvalidImage(f"image is empty (shape {array.shape})")
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        return array
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] > 4:
        return np.moveaxis(array, 0, -1)
    raise InvalidImage(
        f"expected a 2-D image (H×W, H×W×C or C×H×W with C in 1, 3, 4), got shape {array.shape}; "
        "for a 3-D volume use msagent.segment_volume (CLI: msagent segment VOLUME TARGET --3d)")


_WINDOW_ROWS = 512  # rows scaled at a time: bounded float64 scratch memory for huge images


def _window(array: np.ndarray) -> np.ndarray:
    """The 0.5–99.5th percentile window to uint8, in float64 arithmetic but a block of rows
    at a time (no whole-image float64 copy: a 64-megapixel 16-bit image stays ~0.2 GB)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidImage("image contains NaN or infinite values; fill or mask them first")
    # integers: exact in their own dtype; floats: in float64, as the window was always computed
    sample = array.astype(np.float64) if array.dtype.kind == "f" and array.dtype.itemsize < 8 else array
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    del sample
    if high <= low:
        low, high = float(array.min()), float(array.max())
    out = np.zeros(array.shape, np.uint8)
    if high <= low:
        return out
    for start in range(0, array.shape[0], _WINDOW_ROWS):
        rows = array[start:start + _WINDOW_ROWS].astype(np.float64)
        out[start:start + _WINDOW_ROWS] = np.round((np.clip(rows, low, high) - low) / (high - low) * 255.0)
    return out


def to_mask(mask: Any, image_size: tuple[int, int] | None = None, *, allow_empty: bool = False,
            what: str = "ground truth") -> np.ndarray:
    """A bool H×W mask from a path, PIL image or array (nonzero = foreground, in any channel:
    :func:`mask_plane`)."""
    array = mask_array(mask, what=what, size=image_size)
    if array.ndim != 2:
        raise InvalidMask(f"{what} must be a 2-D mask, got shape {array.shape}")
    if array.dtype.kind not in "biuf":  # strings or objects are not "nonzero = foreground"
        raise InvalidMask(f"{what} must be a bool or numeric array, got dtype {array.dtype}; "
                          "give 0/1 (or 0/255) values")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidMask(f"{what} contains NaN or infinite values")
    out = np.asarray(array) != 0
    if image_size is not None:
        check_mask_size(out.shape, image_size, what)
    if not allow_empty and not out.any():
        raise InvalidMask(f"{what} is empty (no foreground pixels); IoU/Dice are undefined")
    return out


def check_mask_size(shape: tuple[int, ...], image_size: tuple[int, int], what: str) -> None:
    """Refuse a mask whose (height, width) ``shape`` is not the image's ``image_size``."""
    if tuple(shape[:2]) != tuple(image_size):
        raise InvalidMask(f"{what} has size {shape[1]}×{shape[0]} (W×H) but the image is "
                          f"{image_size[1]}×{image_size[0]}; masks must match the image pixel "
                          "for pixel")


def mask_array(source: Any, *, what: str = "mask", max_pixels: int | None = None,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask from a path (PNG/TIFF/BMP/.npy), a PIL image or an array, its channels reduced
    by :func:`mask_plane` (a palette image by its index): H×W with its own values (an array
    of another shape is returned as it is, for the caller's shape check). Unreadable input
    is :class:`InvalidMask`. With ``size`` (the image's height, width) a mask file or PIL
    image of another size is refused from its header, before its pixels are decoded."""
    limit = max_pixels_limit(max_pixels)
    try:
        if isinstance(source, (str, os.PathLike)):
            array = _read_file(Path(source), limit, mask=True, size=size)
        elif isinstance(source, Image.Image):
            _check_pixels(source.width * source.height, limit, what)
            if size is not None:
                check_mask_size((source.height, source.width), size, what)
            array = _mask_pixels(source)
        else:
            array = load_array(source, max_pixels=limit)
    except InvalidImage as exc:
        raise InvalidMask(f"{what}: {exc}") from None
    return mask_plane(array, what)


def _mask_pixels(image: Image.Image) -> np.ndarray:
    """A PIL mask image's pixels for :func:`mask_plane`: a palette image's indices (with its
    alpha as a second channel, "PA"), gray + alpha ("LA") as two channels, other colour
    models as RGB."""
    if image.mode in ("P", "PA", "LA", "La", "L", "1", "I", "I;16", "F", "RGB", "RGBA"):
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))


def mask_plane(array: np.ndarray, what: str = "mask") -> np.ndarray:
    """The one rule for a mask with channels: H×W×C (C = 1, 2: value + alpha, 3: RGB,
    4: RGBA) → H×W, non-zero where any colour channel is non-zero (the largest magnitude
    over them, so a gray mask stored as RGB keeps its values). An alpha channel (the last
    of 2 or 4) that is the same everywhere is ignored (an opaque image); one that varies is
    used when the colour is empty (an alpha-only mask), and refused with
    :class:`InvalidMask` when it marks other pixels than the colour does. Other shapes are
    returned as they are."""
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or array.dtype.kind not in "biuf":
        return array
    channels = array.shape[2]
    colour = array[:, :, : (1 if channels <= 2 else 3)]
    alpha = array[:, :, -1] if channels in (2, 4) else None
    plane = _largest(colour)
    if alpha is None or alpha.size == 0 or alpha.min() == alpha.max():
        return plane
    if not plane.any():
        return alpha
    if not np.array_equal(plane != 0, alpha != 0):
        raise InvalidMask(f"{what}: its colour channels and its alpha channel mark different "
                          "pixels as foreground, so which is the mask is unclear; save it with "
                          "one gray channel (0 = background) or without alpha")
    return plane


def _largest(colour: np.ndarray) -> np.ndarray:
    """H×W×C → H×W: channel 0 when every channel is equal (gray as RGB: values kept), else
    the largest magnitude of any channel (non-zero where any channel is)."""
    first = colour[:, :, 0]
    if colour.shape[2] == 1 or all(np.array_equal(first, colour[:, :, c])
                                   for c in range(1, colour.shape[2])):
        return first
    if colour.dtype.kind in "bu":
        return colour.max(axis=2)
    return np.abs(colour).max(axis=2)


def save_mask_png(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Write a bool mask as an 8-bit PNG (0 / 255), atomically."""
    save_png(np.asarray(mask, dtype=np.uint8) * 255, path)


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 image as PNG, atomically (:func:`~msagent.io.atomic.atomic_write`)."""
    buffer = _io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
