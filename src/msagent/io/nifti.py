"""NIfTI volumes in and out (needs ``msagent[medical]``: nibabel).

Reading keeps the affine and the header; the data are the stored values with the header's
``scl_slope``/``scl_inter`` applied (integer label maps stay integer when no scaling is set).
Writing a mask reuses the reference's affine and header (qform/sform codes, units, pixdims),
with the data type set to uint8 and scaling reset, so the mask overlays the image exactly in
any viewer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidImage
from .volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise InvalidImage("reading NIfTI needs nibabel: pip install 'msagent[medical]'") from None
    return nibabel


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | os.PathLike) -> Volume:
    """Load a 3-D NIfTI file as a :class:`Volume` (a 4-D file with one volume is squeezed)."""
    nib = _nibabel()
    path = Path(path)
    if not path.is_file():
        raise InvalidImage(f"NIfTI file not found: {path}")
    try:
        image = nib.load(str(path))
        data = _scaled_data(image)
    except Exception as exc:
        raise InvalidImage(f"{path} is not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidImage(f"{path} has shape {data.shape}; msagent segments 3-D volumes "
                           "(split 4-D series into volumes first)")
    return Volume(data=data, affine=np.asarray(image.affine, dtype=np.float64),
                  header=image.header.copy())


def _scaled_data(image: Any) -> np.ndarray:
    slope, inter = image.dataobj.slope, image.dataobj.inter
    raw = np.asanyarray(image.dataobj.get_unscaled())
    if (slope in (None, 1.0) or not np.isfinite(slope)) and (inter in (None, 0.0) or not np.isfinite(inter)):
        return np.asarray(raw)
    return np.asarray(image.get_fdata(dtype=np.float32))


def write_nifti(data: np.ndarray, path: str | os.PathLike, reference: Volume | None = None, *,
                affine: np.ndarray | None = None) -> Path:
    """Write ``data`` (3-D) as NIfTI, atomically. With ``reference`` its affine and header are
    kept (data type and scaling follow ``data``); otherwise ``affine`` (default identity)."""
    nib = _nibabel()
    data = np.asarray(data)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if reference is not None:
        if data.shape != reference.shape:
            raise InvalidImage(f"data of shape {data.shape} does not match the reference volume "
                               f"{reference.shape}")
        header = reference.header.copy() if reference.header is not None else None
        affine = reference.affine
    else:
        header = None
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(data, affine, header=header)
    image.set_data_dtype(data.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    if header is not None:  # keep the reference's codes (Nifti1Image resets them from affine)
        image.set_qform(affine, int(header["qform_code"]) or 1)
        image.set_sform(affine, int(header["sform_code"]) or 1)
    return _save(image, Path(path))


def write_mask_nifti(mask: np.ndarray, path: str | os.PathLike, reference: Volume) -> Path:
    """Write a 3-D bool/label mask aligned with ``reference`` (same shape, affine, header)."""
    mask = np.asarray(mask)
    data = mask.astype(np.uint8) if mask.dtype == np.bool_ or mask.max(initial=0) < 256 else mask
    return write_nifti(data, path, reference)


def _save(image: Any, path: Path) -> Path:
    nib = _nibabel()
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    nib.save(image, str(tmp))
    os.replace(tmp, path)
    return path
