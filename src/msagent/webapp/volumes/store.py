"""Volumes (NIfTI files, DICOM series) held by the server for the web page, and masks in and out.

An upload is read once with :func:`msagent.io.read_volume` (from a temporary folder that is
deleted right after) and kept in memory, the most recent ``max_items``. Its size is checked
from its headers against the server's ``max_voxels`` before any voxel is decoded, and a DICOM
series with missing or duplicate slices is refused (the web page has no opt-in; read such a
series with the Python API or ``msagent segment --allow-irregular-slices``). NaN/inf voxels
are shown as 0 (:func:`msagent.io.apply_window`). Slices are taken as
displayed (:meth:`msagent.io.Volume.slice`) and windowed with one mapping per volume: a preset
or "W/L" (:func:`msagent.io.parse_window`), else the DICOM CT's stored window, else the
volume's 0.5–99.5th percentiles (as ``msagent segment VOLUME``). Masks drawn on slices go back
into the voxel grid with :meth:`~msagent.io.Volume.put_slice` and are written as a NIfTI
aligned with the input or, for DICOM input, as a DICOM SEG referencing the series.

Uploads are written under generated names (a client's file name never names a file on the
server); a .zip is checked from its directory before anything is extracted: at most
:data:`MAX_ZIP_MEMBERS` files and the request-body limit unpacked (413). Errors name the
client's own files, never the temporary folder, and say what a web client can do (no CLI
flags).
"""

from __future__ import annotations

import io as _io
import re
import tempfile
import threading
import uuid
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
from fastapi import Request
from PIL import Image

from msagent import io
from msagent._lru import BoundedLRU
from msagent.errors import InvalidImage, InvalidInput, InvalidMask, MsAgentError
from msagent.io.images import check_mask_size
from msagent.io.limits import DEFAULT_SERVER_MAX_VOXELS
from msagent.io.nifti import mask_nifti_bytes
from msagent.io.wire import ImageTooLarge, load_npy_bytes
from msagent.server.errors import ServerError

MAX_VOLUMES = 4
EXPORT_FORMATS = {"nifti": ("application/gzip", ".nii.gz"), "dicom-seg": ("application/dicom", ".dcm")}


class VolumeNotFound(ServerError):
    status, code = 404, "volume_not_found"


@attrs.frozen(eq=False)
class StoredVolume:
    """One uploaded volume: ``kind`` "nifti" or "dicom", its default window (width, level)
    and where that window came from ("dicom" or "percentile")."""

    id: str
    volume: io.Volume
    kind: str
    name: str
    window: tuple[float, float]
    window_source: str

    def info(self) -> dict[str, Any]:
        vol = self.volume
        return {"volume_id": self.id, "name": self.name, "kind": self.kind,
                "shape": list(vol.shape), "modality": vol.modality,
                "spacing": [round(v, 6) for v in vol.spacing],
                "slices": {plane: vol.n_slices(plane) for plane in io.PLANES},
                "window": list(self.window), "window_source": self.window_source,
                "presets": {name: list(wl) for name, wl in io.CT_WINDOWS.items()},
                "exports": ["nifti", "dicom-seg"] if self.kind == "dicom" else ["nifti"]}

    def window_for(self, window: str | None) -> tuple[float, float]:
        if not window or window == "auto":
            return self.window  # choose_window(volume), chosen once at upload
        return io.choose_window(self.volume, window).pair

    def slice_gray(self, plane: str, index: int, window: str | None) -> np.ndarray:
        """Slice ``index`` of ``plane`` as displayed, windowed to H×W uint8."""
        width, level = self.window_for(window)
        return io.apply_window(self.volume.slice(index, plane), width, level)

    def mask_volume(self, plane: str, slices: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
        """A bool array shaped like the volume with each (index, H×W mask) put in place."""
        out = np.zeros(self.volume.shape, dtype=bool)
        for index, mask in slices:
            self.volume.put_slice(out, mask, index, plane)
        return out


class TooManyVolumes(ServerError):
    status, code = 429, "too_many_volumes"


class VolumeStore:
    """Uploaded volumes by id: at most ``max_items`` in memory, counting those that live
    sessions still hold after the store let them go (``held()``: their ``source`` values).
    A new upload drops the least recently used volume no session holds; when every volume in
    memory is held, it is refused (429) until a session ends."""

    def __init__(self, max_items: int = MAX_VOLUMES,
                 held: Callable[[], Sequence[object]] = list) -> None:
        self.max_items = max_items
        self.held = held
        self._items: BoundedLRU[str, StoredVolume] = BoundedLRU(2**31)  # bounded by put()
        self._lock = threading.Lock()

    def resident(self) -> int:
        """Volumes in memory: the stored ones and those only sessions hold."""
        held = {id(v) for v in self.held() if isinstance(v, StoredVolume)}
        return len(held | {id(v) for v in self._items.values()})

    def check_room(self) -> None:
        """Raise before reading an upload if :meth:`put` would refuse it."""
        with self._lock:
            self._make_room(dry_run=True)

    def put(self, stored: StoredVolume) -> None:
        with self._lock:
            self._make_room(dry_run=False)
            self._items.put(stored.id, stored)

    def _make_room(self, *, dry_run: bool) -> None:
        held = {id(v) for v in self.held() if isinstance(v, StoredVolume)}
        stored = {key: self._items.peek(key) for key in self._items.keys()}  # LRU first
        resident = held | {id(v) for v in stored.values()}
        droppable = [key for key, v in stored.items() if id(v) not in held]
        over = len(resident) + 1 - self.max_items
        if over > len(droppable):
            raise TooManyVolumes(
                f"this server keeps {self.max_items} volumes in memory and volume sessions hold "
                "all of them; end a volume session (DELETE /v1/volumes/{id}/sessions/{sid}) or "
                "retry when one expires")
        if not dry_run:
            for key in droppable[:max(over, 0)]:
                self._items.pop(key)

    def get(self, volume_id: str) -> StoredVolume:
        stored = self._items.get(volume_id)
        if stored is None:
            raise VolumeNotFound(f"no volume {volume_id!r} on this server (it keeps the last "
                                 f"{self.max_items}); open the file again")
        return stored

    def delete(self, volume_id: str) -> None:
        """Forget the volume (its sessions keep it, in memory and counted, until they end)."""
        if self._items.pop(volume_id) is None:
            raise VolumeNotFound(f"no volume {volume_id!r} on this server")


# -- reading uploads -------------------------------------------------------------------------
def is_volume_name(name: str) -> bool:
    return io.is_nifti(name) or name.lower().endswith((".dcm", ".zip"))


#: the most files one .zip upload may hold (checked from its directory before extracting):
#: a thin-slice whole-body CT series has about 2,000 images
MAX_ZIP_MEMBERS = 10_000
_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".zip")  # the only part of a client's name kept


def _file_name(name: str, index: int, prefix: str = "") -> str:
    """The server's own name for an uploaded file: generated, keeping only the suffix that
    says what it is. A client's name never names a file (any length, any characters)."""
    lower = name.lower()
    return f"{prefix}{index:05d}{next((s for s in _SUFFIXES if lower.endswith(s)), '')}"


def _shown(name: str, limit: int = 120) -> str:
    """A client's file name as error messages show it: at most ``limit`` characters."""
    return name if len(name) <= limit else f"{name[:limit - 1]}…"


def _write_files(files: Sequence[tuple[str, bytes]], folder: Path,
                 max_bytes: int) -> dict[Path, str]:
    """Write the uploads (and the members of .zip uploads) under generated names: each path
    and the client's name for it."""
    paths: dict[Path, str] = {}
    total = 0
    for index, (name, data) in enumerate(files):
        if name.lower().endswith(".zip"):
            unzipped = _unzip(name, data, folder, max_bytes - total, index)
            total += sum(p.stat().st_size for p in unzipped)
            paths.update(unzipped)
            continue
        path = folder / _file_name(name, index)
        path.write_bytes(data)
        paths[path] = name
    return paths


def _unzip(name: str, data: bytes, folder: Path, budget: int, offset: int) -> dict[Path, str]:
    """Extract a .zip upload: its member count (:data:`MAX_ZIP_MEMBERS`) and unpacked size
    (``budget``) are checked from its directory first (413), a damaged member is a 422."""
    shown = _shown(name)
    _check_directory(data, shown)
    try:
        archive = zipfile.ZipFile(_io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise InvalidImage(f"{shown} is not a readable zip archive") from None
    if len(members) > MAX_ZIP_MEMBERS:
        raise ImageTooLarge(f"{shown} holds {len(members):,} files, over this server's limit "
                            f"of {MAX_ZIP_MEMBERS:,} per archive; zip the files of one series")
    unpacked = sum(m.file_size for m in members)
    if unpacked > budget:
        raise ImageTooLarge(f"{shown} unpacks to {unpacked:,} bytes, over this server's upload "
                            f"limit of {max(budget, 0):,} bytes; upload one series at a time")
    out: dict[Path, str] = {}
    for index, member in enumerate(members):
        try:
            content = archive.read(member)  # sizes and CRCs are checked as it is read
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError,
                ValueError) as exc:
            raise InvalidImage(f"{shown}: the file {_shown(member.filename)!r} in it cannot be "
                               f"unpacked ({_shown(str(exc))}); zip the series again, without "
                               "a password") from None
        path = folder / _file_name(member.filename, index, prefix=f"z{offset}_")
        path.write_bytes(content)
        out[path] = f"{name}: {member.filename}"
    return out


def _check_directory(data: bytes, shown: str) -> None:
    """Refuse a .zip whose end record declares more than :data:`MAX_ZIP_MEMBERS` entries, or
    a central directory larger than they need, before it is parsed (parsing 100,000 entries
    took 1.6 s)."""
    try:
        end = zipfile._EndRecData(_io.BytesIO(data))  # type: ignore[attr-defined]  # stable since 2.x
    except (OSError, ValueError, EOFError):
        end = None
    if not end:
        return  # not a zip: zipfile.ZipFile says so
    entries, size = int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])  # type: ignore[attr-defined]
    if entries > MAX_ZIP_MEMBERS:
        raise ImageTooLarge(f"{shown} holds {entries:,} files, over this server's limit of "
                            f"{MAX_ZIP_MEMBERS:,} per archive; zip the files of one series")
    if size > MAX_ZIP_MEMBERS * _MAX_ENTRY_BYTES:
        raise ImageTooLarge(f"{shown} has a {size:,}-byte file list, more than "
                            f"{MAX_ZIP_MEMBERS:,} files with short names need; zip the files of "
                            "one series, with short names")


_MAX_ENTRY_BYTES = 1024  # a directory entry: 46 bytes, the member's name and extra fields


#: what io's messages tell a person at a terminal, as a web client reads it
_WEB_WORDING = [
    (re.compile(r"pick one with --series-uid UID \(series_uid= in Python\)"),
     "upload the files of one series"),
    (re.compile(r",? or read it with allow_irregular=True \(msagent segment "
                r"--allow-irregular-slices\) and write a DICOM SEG, not NIfTI"),
     " (the web page reads complete, evenly spaced series only)"),
    (re.compile(r"raise the limit \([^()]*\)"), "ask the server's operator to raise the limit"),
    (re.compile(r"\s*\((?:or )?start (?:it|the server) with a higher --[a-z-]+\)"), ""),
    (re.compile(r"\s*\([^()]*(?:--[a-z]|msagent \w)[^()]*\)"), ""),  # any other CLI hint
]


def _for_web(exc: MsAgentError, paths: Mapping[Path, str], folder: str) -> MsAgentError:
    """``exc`` with its message as a web client should read it: the client's file names in
    place of the server's temporary paths, and no CLI flags."""
    text = str(exc)
    text = re.sub(r"\[(?:PosixPath|WindowsPath)\([^\]]*\]", "the upload", text)
    for path, name in sorted(paths.items(), key=lambda item: -len(str(item[0]))):
        text = text.replace(str(path), _shown(name))
    text = text.replace(folder, "the upload")
    for pattern, wording in _WEB_WORDING:
        text = pattern.sub(wording, text)
    if text == str(exc):
        return exc
    try:
        error = type(exc)(text)
    except TypeError:  # a subclass with another constructor
        error = InvalidImage(text)
    error.__dict__.update(exc.__dict__)
    return error


def read_volume_upload(files: Sequence[tuple[str, bytes]], max_bytes: int,
                       max_voxels: int | None = None) -> StoredVolume:
    """Read uploaded files (one NIfTI; or DICOM files, a .zip of them, or both) as a volume of
    at most ``max_voxels`` voxels (default: :func:`msagent.io.max_voxels_limit`). Files are
    written under generated names in a temporary folder deleted right after; errors name the
    client's files, never that folder."""
    if not files:
        raise InvalidImage("no files uploaded; send a .nii/.nii.gz file or a DICOM series")
    names = [name for name, _ in files]
    with tempfile.TemporaryDirectory(prefix="msagent-volume-") as tmp:
        paths: dict[Path, str] = {}
        try:
            paths = _write_files(files, Path(tmp), max_bytes)
            volume, kind = _read(list(paths), names, max_voxels)
        except MsAgentError as exc:
            raise _for_web(exc, paths, tmp) from None
    window = io.choose_window(volume)
    name = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} files)"
    return StoredVolume(id=uuid.uuid4().hex, volume=volume, kind=kind, name=name,
                        window=window.pair, window_source=window.source)


def _read(paths: list[Path], names: list[str],
          max_voxels: int | None) -> tuple[io.Volume, str]:
    nifti = [p for p in paths if io.is_nifti(p)]
    if nifti and len(paths) > 1:
        raise InvalidImage("upload one NIfTI file at a time (or the files of one DICOM series)")
    if nifti:
        return io.read_nifti(nifti[0], max_voxels=max_voxels), "nifti"
    dicom = [p for p in paths if io.is_dicom(p)]
    if not dicom:
        shown = ", ".join(_shown(n) for n in names[:5]) + (", …" if len(names) > 5 else "")
        raise InvalidImage(f"{shown}: not a volume; open a .nii/.nii.gz file, DICOM files "
                           "(.dcm) or a .zip of a DICOM series")
    return io.read_volume(dicom, max_voxels=max_voxels), "dicom"


# -- masks in and out ----------------------------------------------------------------------
def mask_from_rle(rle: Mapping[str, Any], shape: tuple[int, int], what: str = "mask") -> np.ndarray:
    """Decode msagent's run-length code, checking it covers exactly an H×W ``shape``."""
    size, counts = rle.get("size"), rle.get("counts")
    if list(size or ()) != list(shape):
        raise InvalidMask(f"{what} has size {size} but the slice is {list(shape)} (H, W)")
    if not isinstance(counts, list) or any(not isinstance(c, int) or c < 0 for c in counts) \
            or sum(counts) != shape[0] * shape[1]:
        raise InvalidMask(f"{what}: counts must be non-negative integers summing to H×W")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(shape)


def export_mask(stored: StoredVolume, mask: np.ndarray, fmt: str, label: str) -> tuple[bytes, str, str]:
    """(file bytes, media type, suggested file name) of a mask volume in ``fmt``."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    media, suffix = EXPORT_FORMATS[fmt]
    name = f"{_stem(stored.name)}-mask{suffix}"
    if fmt == "nifti":
        return mask_nifti_bytes(mask, stored.volume), media, name
    if stored.kind != "dicom":
        raise InvalidInput("DICOM SEG needs DICOM input; this volume is NIfTI: export NIfTI")
    with tempfile.TemporaryDirectory(prefix="msagent-export-") as tmp:
        path = io.write_dicom_seg(mask, stored.volume, Path(tmp) / f"mask{suffix}",
                                  label=label or "target")
        return Path(path).read_bytes(), media, name


def _stem(name: str) -> str:
    base = Path(name.split(" (+")[0]).name
    for suffix in (".nii.gz", ".nii", ".dcm", ".zip"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)] or "volume"
    return base or "volume"


def ground_truth_upload(data: bytes, name: str, image_size: tuple[int, int], *,
                        volume: StoredVolume | None = None, plane: str = "axial",
                        index: int | None = None, max_pixels: int,
                        max_voxels: int | None = None) -> np.ndarray:
    """An H×W bool ground truth from an uploaded file: a 2-D mask (PNG, TIFF, BMP, .npy;
    nonzero = foreground) or, for a slice of ``volume``, a label volume on its voxel grid."""
    if not data:
        raise InvalidMask("the ground-truth upload is empty")
    if is_volume_name(name) or data[128:132] == b"DICM":
        if volume is None or index is None:
            raise InvalidMask("a ground-truth volume needs the image volume: open the NIfTI/DICOM "
                              "image in the page first (or upload a 2-D mask)")
        limit = io.max_voxels_limit(max_voxels, DEFAULT_SERVER_MAX_VOXELS)
        labels = read_volume_upload([(name, data)], 4 * len(data) + 2**20, limit).volume
        mismatch = io.grid_mismatch(labels, volume.volume)  # the shapes, else the affines
        if mismatch:
            raise InvalidMask(f"the ground-truth volume is not on the image's voxel grid: "
                              f"{mismatch}; resample it onto the image first")
        return io.to_mask(labels.slice(index, plane), image_size, what=f"ground truth ({plane} {index})")
    if data.startswith(b"\x93NUMPY"):
        try:
            array = load_npy_bytes(data, max_pixels)  # the header checked before allocating
        except InvalidImage as exc:
            raise InvalidMask(f"ground truth: {exc}") from None
        return io.to_mask(array, image_size)
    try:
        image = Image.open(_io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise InvalidMask(f"ground truth: {image.width}×{image.height} is over the pixel limit")
        check_mask_size((image.height, image.width), image_size, "ground truth")  # before decoding
        image.load()
    except InvalidMask:
        raise
    except Exception as exc:
        raise InvalidMask(f"ground truth: {name} is not a readable mask image "
                          f"({type(exc).__name__}: {exc}); use PNG, TIFF, BMP or .npy") from None
    return io.to_mask(image, image_size)


Plane = Literal["axial", "coronal", "sagittal"]


def volume_store(request: Request) -> VolumeStore:
    return request.app.state.msagent_volumes
