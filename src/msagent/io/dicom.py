"""DICOM series in (pydicom); needs ``msagent[medical]``. DICOM SEG out: :mod:`.dicom_seg`.

Reading a series, in two passes so that nothing large is decoded before it is checked:

1. every file's header (no pixel data) is read; DICOM files are found in the folder and its
   subfolders (a .dcm suffix or the DICM marker). Non-image objects (SEG, RTSTRUCT, SR, ...)
   are skipped; files are grouped by SeriesInstanceUID, a copy of an instance (same
   SOPInstanceUID, series, position, number, size and modality) is read once, with a warning;
   two different images under one SOPInstanceUID are refused, both files named. With several
   series, ``series_uid`` picks one; the error lists them with their number, modality and
   description.
2. the chosen series is checked from its headers: one modality, one image size, orientation
   and PixelSpacing (two positive sizes in mm; 1 × 1 mm when no file states it),
   single-frame files, the voxel limit (:mod:`msagent.io.limits`), and **even slice spacing**:
   a missing slice (a gap) or two slices at one position (zero spacing) is refused with the
   positions named, since one affine cannot place such slices. ``allow_irregular=True``
   accepts them (stacked in position order, :attr:`Volume.irregular` set): such a volume can
   be segmented and written as DICOM SEG, which records each slice's own position, but not as
   NIfTI.

The data are stacked as ``data[i, j, k] = pixels_k[j, i]`` (i: column, j: row, k: slice, in
order along the slice normal) with the modality LUT applied (RescaleSlope/RescaleIntercept: CT
values become Hounsfield units). The affine maps voxel indices to RAS+ mm (DICOM's LPS with x
and y negated), so a DICOM volume and a NIfTI volume of the same scan give the same slices
(see :mod:`msagent.io.volume`); a standard axial slice is displayed exactly as its pixel data.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from msagent.errors import InvalidImage, InvalidInput
from msagent.io.limits import check_voxels
from msagent.io.volume import CT_WINDOWS, Volume

log = logging.getLogger(__name__)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: modalities of DICOM objects that are not images to stack (segmentations, reports, plans).
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO",
                        "REG", "DOC"}
_SCAN_FOR_DETECTION = 256  # files looked at by is_dicom in a folder


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise InvalidImage("reading DICOM needs pydicom: "
                           "pip install '.[medical]' in a msagent clone") from None
    return pydicom


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a .dcm file, a file with the DICM marker, or a folder holding such files at
    any depth (the first few hundred files are looked at)."""
    path = Path(path)
    if path.is_dir():
        files = (p for p in path.rglob("*") if p.is_file())
        return any(_looks_dicom(p) for p in itertools.islice(files, _SCAN_FOR_DETECTION))
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
    if not isinstance(source, (str, os.PathLike)):
        paths = [Path(p) for p in source]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise InvalidImage(f"DICOM files not found: {', '.join(missing[:5])}")
        if not paths:
            raise InvalidImage("no DICOM files given (an empty list)")
        return paths
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InvalidImage(f"DICOM source not found: {path}")
    everything = sorted(p for p in path.rglob("*") if p.is_file())
    if not everything:
        raise InvalidImage(f"the folder {path} is empty; point at the folder of a DICOM series "
                           "(or a NIfTI file)")
    found = [p for p in everything if _looks_dicom(p)]
    if not found:
        names = ", ".join(str(p.relative_to(path)) for p in everything[:5])
        raise InvalidImage(f"no DICOM files in {path} or its subfolders ({len(everything)} other "
                           f"files, e.g. {names}); DICOM files end in .dcm or carry the DICM "
                           "marker")
    return found


@attrs.frozen(eq=False)
class _Header:
    """One image file's header (read without its pixel data)."""

    path: Path
    ds: Any

    def get(self, key: str, default: Any = None) -> Any:
        return self.ds.get(key, default)


def _headers(paths: list[Path]) -> dict[str, list[_Header]]:
    pydicom = _pydicom()
    groups: dict[str, list[_Header]] = {}
    seen: dict[str, _Header] = {}
    for path in paths:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception as exc:
            raise InvalidImage(f"{path} is not a readable DICOM file ({type(exc).__name__}: "
                               f"{exc}); remove it from the folder") from None
        if "Rows" not in ds or str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
            log.info("skipping %s: not an image (%s)", path, ds.get("Modality", "no Rows"))
            continue
        header = _Header(path, ds)
        sop = str(ds.get("SOPInstanceUID", "")) or str(path)
        if sop in seen:
            _check_copy(seen[sop], header, sop)
            continue
        seen[sop] = header
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(header)
    return groups


def _identity(header: _Header) -> tuple[str, ...]:
    """What tells two instances apart: series, position, number, size, modality."""
    return tuple(str(header.get(key, "")) for key in (
        "SeriesInstanceUID", "ImagePositionPatient", "InstanceNumber", "Rows", "Columns", "Modality"))


def _check_copy(kept: _Header, other: _Header, sop: str) -> None:
    """A second file with a SOPInstanceUID already read: a copy of the same instance (same
    series, position, number, size, modality) is skipped with a warning; a different image
    under the same UID is refused, since one of the two would silently be lost."""
    if _identity(kept) == _identity(other):
        log.warning("skipping %s: a copy of %s (the same SOPInstanceUID %s)", other.path,
                    kept.path, sop)
        return
    raise InvalidImage(f"{kept.path.name} and {other.path.name} ({kept.path.parent}) are different "
                       f"images with the same SOPInstanceUID {sop}; every image must have its own "
                       "UID, and one of them would be lost: remove the wrong file (a second export "
                       "or an edited copy?)")


def describe_series(groups: dict[str, list[_Header]]) -> str:
    """One line per series: UID, number, modality, description, image count."""
    lines = []
    for uid, items in sorted(groups.items(), key=lambda kv: _series_number(kv[1][0])):
        first = items[0]
        description = str(first.get("SeriesDescription", "") or "no description")
        lines.append(f"  {uid or '(no SeriesInstanceUID)'}: series {first.get('SeriesNumber', '?')}, "
                     f"{first.get('Modality', '?')}, {description!r}, {len(items)} image(s)")
    return "\n".join(lines)


def _series_number(header: _Header) -> float:
    try:
        return float(header.get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


def read_dicom_series(source: str | os.PathLike | Sequence[str | os.PathLike],
                      series_uid: str | None = None, *, allow_irregular: bool = False,
                      max_voxels: int | None = None) -> Volume:
    """Load one DICOM series (a folder, searched recursively; one file; or a list of files)
    as a :class:`Volume`.

    ``series_uid`` picks a series when ``source`` holds several. Uneven or zero slice
    spacing is refused unless ``allow_irregular`` (see the module docstring). The image
    count × rows × columns is checked against ``max_voxels`` before any pixel data is read.
    """
    groups = _headers(_files(source))
    if not groups:
        raise InvalidImage(f"no DICOM images with pixel data in {source} (only non-image "
                           "objects such as SEG or SR); point at the image series")
    if series_uid is None and len(groups) > 1:
        raise InvalidInput(f"{source} holds {len(groups)} series; pick one with --series-uid "
                           f"UID (series_uid= in Python):\n{describe_series(groups)}")
    uid = series_uid if series_uid is not None else next(iter(groups))
    if uid not in groups:
        raise InvalidInput(f"series {uid} is not in {source}; it holds:\n{describe_series(groups)}")
    return _read_series(groups[uid], allow_irregular, max_voxels)


@attrs.frozen(eq=False)
class _Geometry:
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm


def _read_series(headers: list[_Header], allow_irregular: bool, max_voxels: int | None) -> Volume:
    first = headers[0]
    geometry = _check_headers(headers, max_voxels)
    positions = [_position(h) for h in headers]
    order = np.argsort([float(p @ geometry.normal) for p in positions], kind="stable")
    headers = [headers[i] for i in order]
    positions = [positions[i] for i in order]
    irregular = _spacing_problem(headers, positions, geometry.normal)
    if irregular and not allow_irregular:
        raise InvalidImage(f"the slices of series {first.get('SeriesInstanceUID', '')} are not "
                           f"evenly spaced: {irregular}. Find the missing or extra files, or read "
                           "it with allow_irregular=True (msagent segment --allow-irregular-slices) "
                           "and write a DICOM SEG, not NIfTI")
    if irregular:
        log.warning("irregular series, read as asked: %s; NIfTI output is refused", irregular)
    datasets, data = _pixels(headers)
    affine = _affine(first, geometry, positions)
    return Volume(data=data, affine=affine, datasets=tuple(datasets),
                  modality=str(first.get("Modality", "")), irregular=irregular)


def _check_headers(headers: list[_Header], max_voxels: int | None) -> _Geometry:
    first = headers[0]
    frames = {int(h.get("NumberOfFrames", 1) or 1) for h in headers}
    if frames != {1}:
        raise InvalidImage("multi-frame (enhanced) DICOM is not supported yet; export the series "
                           "as single-frame files or NIfTI (e.g. with dcm2niix)")
    shapes = {(int(h.get("Rows", 0)), int(h.get("Columns", 0))) for h in headers}
    if len(shapes) > 1:
        raise InvalidImage(f"the series mixes image sizes {sorted(shapes)} (rows, columns); "
                           "it cannot be stacked into one volume")
    modalities: dict[str, _Header] = {}
    for h in headers:
        modalities.setdefault(str(h.get("Modality", "") or "unknown"), h)
    if len(modalities) > 1:
        named = " and ".join(f"{m} ({h.path.name})" for m, h in sorted(modalities.items()))
        raise InvalidImage(f"the series {first.get('SeriesInstanceUID', '')} mixes modalities "
                           f"{named}; one volume holds one acquisition: separate the files (or "
                           "fix their Modality)")
    rows, cols = shapes.pop()
    check_voxels((cols, rows, len(headers)), 4, f"the DICOM series ({len(headers)} images of "
                 f"{rows}×{cols})", max_voxels)
    orientations = [np.asarray(h.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), float)
                    for h in headers]
    if any(o.shape != (6,) or not np.allclose(o, orientations[0], atol=1e-4) for o in orientations):
        raise InvalidImage("the series mixes image orientations (ImageOrientationPatient); "
                           "it cannot be stacked into one volume")
    row_dir, col_dir = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InvalidImage(f"{first.path}: ImageOrientationPatient {orientations[0].tolist()} "
                           "is not two perpendicular unit vectors")
    if len(headers) > 1 and any("ImagePositionPatient" not in h.ds for h in headers):
        raise InvalidImage("some files of the series have no ImagePositionPatient; the slices "
                           "cannot be placed")
    return _Geometry(row_dir, col_dir, normal, _pixel_spacing(headers))


def _pixel_spacing(headers: list[_Header]) -> tuple[float, float]:
    """The series' PixelSpacing (row, column) in mm: two positive finite numbers, the same in
    every file; 1 mm × 1 mm when no file states it."""
    found: dict[tuple[float, float], _Header] = {}
    for h in headers:
        raw = h.get("PixelSpacing")
        if raw is None:
            continue
        shown = list(raw) if isinstance(raw, Iterable) and not isinstance(raw, str) else [raw]
        try:
            values = [float(v) for v in shown]
        except (TypeError, ValueError):
            values = []
        if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
            raise InvalidImage(f"{h.path}: PixelSpacing [{', '.join(map(str, shown))}] is not two "
                               "positive sizes in mm (row, column); the slices cannot be placed: "
                               "fix the file's PixelSpacing")
        found.setdefault((values[0], values[1]), h)
    if len(found) > 1:
        named = "; ".join(f"{a:g}, {b:g} ({h.path.name})" for (a, b), h in sorted(found.items()))
        raise InvalidImage(f"the series mixes pixel spacings {named}; it cannot be stacked into "
                           "one volume")
    return next(iter(found), (1.0, 1.0))


def _position(header: _Header) -> np.ndarray:
    position = np.asarray(header.get("ImagePositionPatient", [0, 0, 0]), float)
    if position.shape != (3,) or not np.isfinite(position).all():
        raise InvalidImage(f"{header.path}: ImagePositionPatient {position.tolist()} is not an "
                           "x, y, z position")
    return position


def _spacing_problem(headers: list[_Header], positions: list[np.ndarray], normal) -> str:
    """Why the sorted slices are not evenly spaced along the normal ("" when they are)."""
    if len(positions) < 2:
        return ""
    along = np.array([float(p @ normal) for p in positions])
    gaps = np.diff(along)
    median = float(np.median(gaps))
    tolerance = max(0.01 * abs(median), 0.01)  # mm: DICOM positions are rounded
    duplicates = [k for k, gap in enumerate(gaps) if gap < tolerance]
    if duplicates:
        k = duplicates[0]
        return (f"{len(duplicates)} pair(s) of slices at the same position, e.g. "
                f"{headers[k].path.name} and {headers[k + 1].path.name} at {along[k]:.3f} mm "
                "(a duplicate or a second acquisition?)")
    uneven = [k for k, gap in enumerate(gaps) if abs(gap - median) > tolerance]
    if not uneven:
        return ""
    detail = ", ".join(f"{gaps[k]:.3f} mm between {along[k]:.3f} and {along[k + 1]:.3f}"
                       for k in uneven[:5])
    return (f"the usual gap is {median:.3f} mm but there are {len(uneven)} other(s): {detail} "
            "(a missing slice?)")


def _pixels(headers: list[_Header]) -> tuple[list[Any], np.ndarray]:
    """The full datasets (with pixel data) and the stacked, rescaled float32 array."""
    pydicom = _pydicom()
    from pydicom.pixels import apply_modality_lut

    rows, cols = int(headers[0].get("Rows")), int(headers[0].get("Columns"))
    data = np.empty((cols, rows, len(headers)), dtype=np.float32)  # size checked already
    datasets = []
    for k, header in enumerate(headers):
        try:
            ds = pydicom.dcmread(str(header.path))
            pixels = ds.pixel_array
        except Exception as exc:
            raise InvalidImage(f"{header.path}: the pixel data could not be read "
                               f"({type(exc).__name__}: {exc})") from None
        if pixels.shape != (rows, cols):
            raise InvalidImage(f"{header.path}: pixel data of shape {pixels.shape}, not the "
                               f"{rows}×{cols} its header states (colour images are not supported)")
        data[:, :, k] = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32).T
        datasets.append(ds)
    return datasets, data


def _affine(first: _Header, geometry: _Geometry, positions: list[np.ndarray]) -> np.ndarray:
    row_spacing, col_spacing = geometry.pixel_spacing
    if len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        step = geometry.normal * _thickness(first)
    lps = np.eye(4)
    lps[:3, 0] = geometry.row_dir * col_spacing
    lps[:3, 1] = geometry.col_dir * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps


def _thickness(header: _Header) -> float:
    """A single image's slice thickness in mm (SpacingBetweenSlices, else SliceThickness);
    1 mm when neither is a positive number (it places no other slice)."""
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(header.get(key) or 0)
        except (TypeError, ValueError):
            continue
        if np.isfinite(value) and value > 0:
            return value
    return 1.0


def default_window(volume: Volume) -> tuple[float, float] | None:
    """The window stored in the first DICOM file (WindowWidth, WindowCenter), if any."""
    if not volume.datasets:
        return None
    ds = volume.datasets[0]
    width, center = ds.get("WindowWidth"), ds.get("WindowCenter")
    if width is None or center is None:
        return None
    # a multi-valued element (pydicom's MultiValue) holds several windows: the first one counts
    width = float(width[0] if isinstance(width, Iterable) and not isinstance(width, str)  # type: ignore[index]
                  else width)
    center = float(center[0] if isinstance(center, Iterable) and not isinstance(center, str)  # type: ignore[index]
                   else center)
    return (width, center) if width > 0 and np.isfinite(width) and np.isfinite(center) else None


__all__ = ["CT_WINDOWS", "NON_IMAGE_MODALITIES", "default_window", "is_dicom", "read_dicom_series"]
