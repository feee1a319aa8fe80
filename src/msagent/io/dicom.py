"""DICOM series in (pydicom) and DICOM SEG out (highdicom); needs ``msagent[medical]``.

Reading a series: files are grouped by SeriesInstanceUID, sorted by their position along the
slice normal, and stacked as ``data[i, j, k] = pixels_k[j, i]`` (i: column, j: row, k: slice)
with the modality LUT applied (RescaleSlope/RescaleIntercept: CT values become Hounsfield
units). The affine maps voxel indices to RAS+ mm (DICOM's LPS with x and y negated), so a
DICOM volume and a NIfTI volume of the same scan give the same slices (see
:mod:`msagent.io.volume`); a standard axial slice is displayed exactly as its pixel data.

DICOM SEG: :func:`write_dicom_seg` writes a binary Segmentation whose frames reference the
source instances (SOP Class/Instance UIDs), with the source series' frame of reference,
patient and study, so PACS and viewers place it on the images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidImage, InvalidInput
from .volume import CT_WINDOWS, Volume

log = logging.getLogger(__name__)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise InvalidImage("reading DICOM needs pydicom: pip install 'msagent[medical]'") from None
    return pydicom


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a .dcm file, a directory holding DICOM files, or a file with the DICM magic."""
    path = Path(path)
    if path.is_dir():
        return any(_looks_dicom(p) for p in sorted(path.iterdir())[:50] if p.is_file())
    return path.suffix.lower() == ".dcm" or (path.is_file() and _looks_dicom(path))


def _looks_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file() and _looks_dicom(p))
        if path.is_file():
            return [path]
        raise InvalidImage(f"DICOM source not found: {path}")
    return [Path(p) for p in source]


def read_dicom_series(source: str | os.PathLike | Sequence[str | os.PathLike],
                      series_uid: str | None = None) -> Volume:
    """Load one DICOM series (a directory, one file, or a list of files) as a :class:`Volume`.

    With several series in ``source``, ``series_uid`` picks one (the error lists them).
    """
    pydicom = _pydicom()
    groups: dict[str, list[Any]] = {}
    for path in _files(source):
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as exc:
            raise InvalidImage(f"{path} is not a readable DICOM file ({exc})") from None
        if "PixelData" not in ds:
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    if not groups:
        raise InvalidImage(f"no DICOM images with pixel data in {source}")
    if series_uid is None and len(groups) > 1:
        listing = "; ".join(f"{uid} ({len(v)} files, {v[0].get('SeriesDescription', '')})"
                            for uid, v in groups.items())
        raise InvalidInput(f"{source} holds {len(groups)} series; pick one with series_uid=: {listing}")
    uid = series_uid if series_uid is not None else next(iter(groups))
    if uid not in groups:
        raise InvalidInput(f"series {uid} not found; available: {', '.join(groups)}")
    return _stack(groups[uid])


def _stack(datasets: list[Any]) -> Volume:
    from pydicom.pixels import apply_modality_lut

    first = datasets[0]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise InvalidImage("multi-frame (enhanced) DICOM is not supported yet; export the series "
                           "as single-frame files or NIfTI (e.g. with dcm2niix)")
    orientation = np.asarray(first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    positions = [np.asarray(ds.get("ImagePositionPatient", [0, 0, 0]), float) for ds in datasets]
    order = np.argsort([float(p @ normal) for p in positions], kind="stable")
    datasets = [datasets[i] for i in order]
    positions = [positions[i] for i in order]
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) > 1:
        raise InvalidImage(f"the series mixes image sizes {sorted(shapes)}; pick one series")
    slices = [np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32) for ds in datasets]
    data = np.stack([s.T for s in slices], axis=2)
    affine = _affine(first, row_dir, col_dir, normal, positions)
    return Volume(data=data, affine=affine, datasets=tuple(datasets),
                  modality=str(first.get("Modality", "")))


def _affine(first: Any, row_dir, col_dir, normal, positions) -> np.ndarray:
    row_spacing, col_spacing = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    if len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
        gaps = np.diff([p @ normal for p in positions])
        if gaps.size and np.ptp(gaps) > 0.01 * max(abs(float(np.mean(gaps))), 1e-6):
            log.warning("uneven slice spacing (%.3f–%.3f mm); the affine uses the mean",
                        gaps.min(), gaps.max())
    else:
        thickness = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
        step = normal * thickness
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps


def default_window(volume: Volume) -> tuple[float, float] | None:
    """The window stored in the first DICOM file (WindowWidth, WindowCenter), if any."""
    if not volume.datasets:
        return None
    ds = volume.datasets[0]
    width, center = ds.get("WindowWidth"), ds.get("WindowCenter")
    if width is None or center is None:
        return None
    width = float(width[0] if isinstance(width, Iterable) and not isinstance(width, str) else width)
    center = float(center[0] if isinstance(center, Iterable) and not isinstance(center, str) else center)
    return (width, center) if width > 0 else None


def write_dicom_seg(mask: np.ndarray, volume: Volume, path: str | os.PathLike, *,
                    label: str = "target", category: Any = None, property_type: Any = None,
                    series_number: int = 300, description: str = "msagent segmentation") -> Path:
    """Write a binary DICOM SEG for ``mask`` (shaped like ``volume.data``) referencing the
    DICOM series ``volume`` was read from. ``category``/``property_type`` are coded concepts
    (pydicom ``Code``); by default the generic SNOMED CT "Anatomical Structure"/"Organ" with
    ``label`` (the target text) as the segment label."""
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
        from pydicom.uid import generate_uid
    except ImportError:
        raise InvalidImage("writing DICOM SEG needs highdicom: pip install 'msagent[medical]'") from None
    from .. import __version__

    if not volume.datasets:
        raise InvalidInput("DICOM SEG needs the source DICOM series: read it with "
                           "read_dicom_series (for NIfTI input write a NIfTI mask instead)")
    mask = np.asarray(mask).astype(bool)
    if mask.shape != volume.shape:
        raise InvalidInput(f"mask of shape {mask.shape} does not match the volume {volume.shape}")
    frames = np.stack([mask[:, :, k].T for k in range(mask.shape[2])]).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="msagent", family=codes.cid7162.ArtificialIntelligence, version=__version__)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label[:64] or "target",
        segmented_property_category=category or codes.SCT.AnatomicalStructure,
        segmented_property_type=property_type or codes.SCT.Organ,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    seg = hd.seg.Segmentation(
        source_images=list(volume.datasets), pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="msagent",
        manufacturer_model_name="msagent", software_versions=__version__,
        device_serial_number="0", series_description=description, omit_empty_frames=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    seg.save_as(str(tmp))
    os.replace(tmp, path)
    return path


__all__ = ["CT_WINDOWS", "default_window", "is_dicom", "read_dicom_series", "write_dicom_seg"]
