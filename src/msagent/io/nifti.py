"""NIfTI volumes in and out (needs ``msagent[medical]``: nibabel).

Reading checks the header first: a 3-D volume (or 4-D with one time point) within the voxel
limit (:mod:`msagent.io.limits`), before any data are decoded. The data are the stored values
with the header's ``scl_slope``/``scl_inter`` applied (integer label maps stay integer when no
scaling is set); NaN/inf voxels are kept and counted in a warning (windowing shows them as 0,
see :func:`msagent.io.apply_window`).

Writing next to a reference keeps its header: the qform and the sform, each with its own code
(a code of 0 stays 0), units and pixdims, so ITK-based tools (which may read the qform) and
nibabel-based ones (which prefer the sform) both put the output on the image. Masks get their
own data type (uint8, or uint16 for labels above 255), no scaling, and no display range or
description inherited from the image (``cal_min``/``cal_max`` of a CT would hide a 0/1 mask).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, cast

import numpy as np

from msagent.errors import InvalidImage, InvalidMask
from msagent.io.atomic import atomic_output
from msagent.io.limits import check_voxels
from msagent.io.volume import Volume

log = logging.getLogger(__name__)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
MASK_DESCRIPTION = b"msagent mask"


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise InvalidImage("reading NIfTI needs nibabel: "
                           "pip install '.[medical]' in a msagent clone") from None
    return nibabel


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | os.PathLike, *, max_voxels: int | None = None) -> Volume:
    """Load a 3-D NIfTI file as a :class:`Volume` (a 4-D file with one volume is squeezed).

    The shape and data type come from the header and are checked (3-D, numeric, at most
    ``max_voxels`` voxels; see :func:`msagent.io.limits.max_voxels_limit`) before the data
    are read.
    """
    nib = _nibabel()
    path = Path(path)
    if not path.is_file():
        raise InvalidImage(f"NIfTI file not found: {path}")
    try:
        image = nib.load(str(path))
    except Exception as exc:
        raise InvalidImage(f"{path} is not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    shape = _check_header(image, path, max_voxels)
    try:
        data = _scaled_data(image).reshape(shape)
    except Exception as exc:  # truncated or corrupt data after a valid header
        raise InvalidImage(f"{path}: the data could not be read ({type(exc).__name__}: {exc})") from None
    _warn_non_finite(data, path)
    return Volume(data=data, affine=np.asarray(image.affine, dtype=np.float64),
                  header=image.header.copy())


def _check_header(image: Any, path: Path, max_voxels: int | None) -> tuple[int, int, int]:
    """The 3-D shape the data will have, refused before reading when unusable or too large."""
    shape = tuple(int(n) for n in image.shape)
    dtype = image.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.names is not None:
        raise InvalidImage(f"{path} stores {dtype} voxels (e.g. RGB or complex); msagent reads "
                           "scalar volumes: convert it to one channel first")
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) < 3:
        raise InvalidImage(f"{path} is a {len(shape)}-D image of shape {shape}; read it as a 2-D "
                           "image (e.g. nibabel, then an array) or stack slices into a 3-D volume")
    if len(shape) > 3:
        raise InvalidImage(f"{path} has shape {shape}; msagent segments 3-D volumes: split the "
                           "4-D series into 3-D volumes first (e.g. nibabel.funcs.four_to_three)")
    scaled = _has_scaling(image)
    check_voxels(shape, 4 if scaled else dtype.itemsize, str(path), max_voxels)
    return cast(tuple[int, int, int], shape)  # three axes: checked above


def _has_scaling(image: Any) -> bool:
    slope, inter = image.dataobj.slope, image.dataobj.inter
    plain_slope = slope in (None, 1.0) or not np.isfinite(slope)
    plain_inter = inter in (None, 0.0) or not np.isfinite(inter)
    return not (plain_slope and plain_inter)


def _scaled_data(image: Any) -> np.ndarray:
    if not _has_scaling(image):
        return np.asarray(image.dataobj.get_unscaled())
    return np.asarray(image.get_fdata(dtype=np.float32))


def _warn_non_finite(data: np.ndarray, path: Path) -> None:
    if data.dtype.kind != "f":
        return
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        log.warning("%s: %d of %d voxels are NaN or infinite; windowing ignores them and shows "
                    "them as 0 (black)", path, bad, data.size)


def write_nifti(data: np.ndarray, path: str | os.PathLike, reference: Volume | None = None, *,
                affine: np.ndarray | None = None) -> Path:
    """Write ``data`` (3-D) as NIfTI, atomically. With ``reference`` its geometry is kept: a
    NIfTI reference's header (qform and sform with their own codes), or a DICOM series'
    affine as both qform and sform (code 1, scanner). Otherwise ``affine`` (default identity).
    Data type and scaling follow ``data``."""
    nib = _nibabel()
    data = np.asarray(data)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if reference is None:
        image = _from_affine(nib, data, np.eye(4) if affine is None else affine)
    else:
        if data.shape != reference.shape:
            raise InvalidImage(f"data of shape {data.shape} does not match the reference volume "
                               f"{reference.shape}")
        _check_regular(reference)
        if reference.header is None:
            image = _from_affine(nib, data, reference.affine)
        else:  # affine=None: nibabel keeps the header's qform and sform untouched
            image = nib.Nifti1Image(data, None, header=reference.header.copy())
    image.set_data_dtype(data.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    return _save(image, Path(path))


def _from_affine(nib: Any, data: np.ndarray, affine: np.ndarray) -> Any:
    affine = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def _check_regular(reference: Volume) -> None:
    if reference.irregular:
        raise InvalidImage(f"a NIfTI affine cannot place this series' slices ({reference.irregular}); "
                           "write a DICOM SEG instead (it records each slice's position), or "
                           "fix the series")


def mask_data(mask: np.ndarray) -> np.ndarray:
    """``mask`` as the smallest unsigned type its labels need (uint8, else uint16).

    bool becomes 0/1. Negative, non-integer, NaN/inf values and labels above 65535 are
    refused (threshold a probability map first, e.g. ``prob > 0.5``)."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if mask.dtype.kind not in "iuf":
        raise InvalidMask(f"a mask must be bool or numeric, got dtype {mask.dtype}")
    if mask.size == 0:
        return mask.astype(np.uint8)
    if mask.dtype.kind == "f":
        if not np.isfinite(mask).all():
            raise InvalidMask("the mask has NaN or infinite values; masks hold labels 0, 1, 2, ...")
        if not np.array_equal(mask, np.round(mask)):
            raise InvalidMask("the mask has non-integer values (a probability map?); threshold "
                              "it first, e.g. mask > 0.5, or round it to labels")
    low, high = mask.min(), mask.max()
    if low < 0:
        raise InvalidMask(f"the mask has negative values (min {low}); labels are 0, 1, 2, ...")
    if high > np.iinfo(np.uint16).max:
        raise InvalidMask(f"the mask has labels up to {high}; NIfTI masks here hold 0..65535")
    return mask.astype(np.uint8 if high <= 255 else np.uint16)


def write_mask_nifti(mask: np.ndarray, path: str | os.PathLike, reference: Volume) -> Path:
    """Write a 3-D bool/label mask aligned with ``reference`` (same shape, qform, sform,
    units) as uint8 (uint16 for labels above 255); see :func:`mask_data` for what is refused."""
    data = mask_data(mask)
    if reference.header is not None:
        reference = _mask_reference(reference)
    return write_nifti(data, path, reference)


def mask_nifti_bytes(mask: np.ndarray, reference: Volume) -> bytes:
    """The ``.nii.gz`` file :func:`write_mask_nifti` writes, as bytes (for a download or a
    record's file written elsewhere)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="msagent-mask-") as folder:
        return write_mask_nifti(mask, Path(folder) / "mask.nii.gz", reference).read_bytes()


def _mask_reference(reference: Volume) -> Volume:
    """The reference with a header fit for a mask: no display range, intent or description."""
    header = reference.header.copy()
    header["cal_min"], header["cal_max"] = 0.0, 0.0  # 0/0: viewers pick the range themselves
    header["descrip"] = MASK_DESCRIPTION
    header["aux_file"] = b""
    header.set_intent("none")
    return Volume(reference.data, reference.affine, header=header)


def _save(image: Any, path: Path) -> Path:
    nib = _nibabel()
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_output(path, suffix) as tmp:  # nibabel picks the format by the name
        nib.save(image, str(tmp))
    return path
