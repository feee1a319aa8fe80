"""3-D volumes, how a 2-D slice is taken from them, and CT windowing.

A :class:`Volume` holds a 3-D array in the file's voxel order ``data[i, j, k]`` and the 4×4
``affine`` that maps voxel indices to world millimetres in **RAS+** (x to the patient's right,
y anterior, z superior: the NIfTI convention; DICOM's LPS positions are converted).

Slices "as displayed" (the orientation every 2-D call sees, and the one DICOM viewers use):

- the slice axis is the voxel axis closest to the anatomical axis of the plane (axial: S–I,
  coronal: A–P, sagittal: L–R); the slice index is the **voxel index along that axis** of the
  file, as a viewer such as ITK-SNAP shows it;
- in-plane, the slice is transposed and flipped so that it looks as in the radiological
  convention: axial — anterior at the top, the patient's right on the image's left;
  coronal — superior at the top, the patient's right on the left; sagittal — superior at the
  top, anterior on the left. (A standard axial DICOM slice comes out exactly as its pixel data.)

:meth:`Volume.slice` returns that 2-D view and :meth:`Volume.put_slice` writes a 2-D mask back
into the voxel grid, so a mask volume built slice by slice is aligned with the input.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from msagent.errors import InvalidImage, InvalidInput

PLANES = ("axial", "coronal", "sagittal")
# For each plane: (slice axis letters, row axis letters with the "down" letter first,
#                  column axis letters with the "right" letter first)
_PLANE_AXES = {
    "axial": ("SI", "PA", "LR"),
    "coronal": ("AP", "IS", "LR"),
    "sagittal": ("LR", "IS", "PA"),
}
#: CT window presets (width, level) in Hounsfield units (common radiology values).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (400.0, 40.0),
    "soft_tissue": (400.0, 50.0),
    "liver": (150.0, 30.0),
    "mediastinum": (350.0, 50.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
    "subdural": (200.0, 75.0),
    "stroke": (40.0, 40.0),
}


@attrs.frozen(eq=False)
class SliceView:
    """How a 2-D slice sits in its volume: ``axis`` (voxel axis sliced), ``index``, and the
    in-plane transform to the displayed view (``transpose`` then ``flip_rows``/``flip_cols``)."""

    axis: int
    index: int
    transpose: bool
    flip_rows: bool
    flip_cols: bool

    def to_display(self, plane: np.ndarray) -> np.ndarray:
        """The voxel-order 2-D array (remaining axes in order) → displayed H×W."""
        out = plane.T if self.transpose else plane
        if self.flip_rows:
            out = out[::-1, :]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def from_display(self, image: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_display`."""
        out = image
        if self.flip_cols:
            out = out[:, ::-1]
        if self.flip_rows:
            out = out[::-1, :]
        return np.ascontiguousarray(out.T if self.transpose else out)


@attrs.frozen(eq=False)
class Volume:
    """A 3-D image: ``data[i, j, k]`` (file voxel order), ``affine`` voxel → RAS+ mm.

    ``header`` is the nibabel header of a NIfTI file (kept for writing aligned masks);
    ``datasets`` the pydicom datasets of a DICOM series, one per k (sorted by position), kept
    for DICOM SEG; ``modality`` e.g. "CT", "MR" (DICOM) or "" when unknown. ``irregular``
    says why the slices are not evenly spaced (a DICOM series read with
    ``allow_irregular=True``; "" when they are): the affine then cannot place every slice,
    so such a volume is written as DICOM SEG only, never as NIfTI.
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any = None
    datasets: tuple = ()
    modality: str = ""
    irregular: str = ""

    def __attrs_post_init__(self) -> None:
        if self.data.ndim != 3:
            raise InvalidImage(f"a volume must be 3-D, got shape {self.data.shape}; 4-D series: "
                               "pick a time point first (volume.data[..., t])")
        if np.asarray(self.affine).shape != (4, 4):
            raise InvalidImage(f"affine must be 4×4, got {np.asarray(self.affine).shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        i, j, k = (float(v) for v in np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0))
        return i, j, k

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """The anatomical direction each voxel axis increases toward, e.g. ("R", "A", "S")."""
        import nibabel as nib

        return tuple(nib.aff2axcodes(self.affine))

    def view(self, index: int, plane: str = "axial") -> SliceView:
        """The :class:`SliceView` of slice ``index`` in ``plane``."""
        if plane not in _PLANE_AXES:
            raise InvalidInput(f"unknown plane {plane!r}; use one of {', '.join(PLANES)}")
        codes = self.axcodes
        slice_letters, row_letters, col_letters = _PLANE_AXES[plane]
        axis = _axis_of(codes, slice_letters)
        if not 0 <= index < self.data.shape[axis]:
            raise InvalidInput(f"{plane} slice {index} is outside 0..{self.data.shape[axis] - 1}")
        rest = [a for a in range(3) if a != axis]
        row_axis = _axis_of(codes, row_letters)
        transpose = rest[0] != row_axis
        col_axis = rest[0] if transpose else rest[1]
        # rows should increase toward row_letters[0] (down), columns toward col_letters[0]
        flip_rows = codes[row_axis] != row_letters[0]
        flip_cols = codes[col_axis] != col_letters[0]
        return SliceView(axis, int(index), transpose, flip_rows, flip_cols)

    def slice(self, index: int, plane: str = "axial") -> np.ndarray:
        """The 2-D slice ``index`` of ``plane`` as displayed (see the module docstring): a new
        C-contiguous array; only the slice is copied, whatever the data's memory order."""
        return self.slice_of(self.data, index, plane)

    def slice_of(self, data: np.ndarray, index: int, plane: str = "axial") -> np.ndarray:
        """:meth:`slice` of another array on this volume's voxel grid (a label map, a mask)."""
        view = self.view(index, plane)
        return view.to_display(take_slice(data, view.index, view.axis))

    def slice_spacing(self, plane: str = "axial") -> tuple[float, float]:
        """(row, column) pixel size in mm of a displayed slice of ``plane``."""
        view = self.view(0, plane)
        rest = [self.spacing[a] for a in range(3) if a != view.axis]
        return (rest[1], rest[0]) if view.transpose else (rest[0], rest[1])

    def n_slices(self, plane: str = "axial") -> int:
        return int(self.data.shape[self.view(0, plane).axis])

    def put_slice(self, target: np.ndarray, image: np.ndarray, index: int,
                  plane: str = "axial") -> None:
        """Write the displayed 2-D ``image`` into slice ``index`` of ``target`` (a 3-D array
        shaped like :attr:`data`), undoing the display transform."""
        view = self.view(index, plane)
        plane_array = view.from_display(np.asarray(image))
        where = take_slice(target, view.index, view.axis)  # a view: written in place
        if where.shape != plane_array.shape:
            raise InvalidInput(f"slice of shape {image.shape} does not fit {plane} slices of a "
                               f"{self.shape} volume")
        where[...] = plane_array


def take_slice(data: np.ndarray, index: int, axis: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` of the 3-D ``data`` as a **view** (basic indexing): O(1),
    whatever the array's memory order, and writable when ``data`` is.

    Every slicing of a volume goes through here. ``np.take(data, index, axis)`` is not used:
    on a Fortran-ordered array (what nibabel returns for a NIfTI file) it first copies the whole
    volume into C order, so one slice of a 512×512×300 int16 volume cost seconds."""
    indexer: list[slice | int] = [slice(None)] * data.ndim
    indexer[axis] = index
    return data[tuple(indexer)]


def grid_mismatch(other: Volume, volume: Volume, *, atol: float = 1e-3) -> str:
    """Why ``other`` (a label map, a mask) is not on ``volume``'s voxel grid, "" when it is:
    the two shapes when they differ, else the two affines (voxel → RAS+ mm) when they differ
    by more than ``atol`` (mm), both shown, so the message says what to resample."""
    if other.shape != volume.shape:
        return f"its shape {other.shape} differs from the image's {volume.shape}"
    mine, theirs = np.asarray(other.affine, float), np.asarray(volume.affine, float)
    if np.allclose(mine, theirs, atol=atol):
        return ""
    return (f"the shapes agree ({volume.shape}) but the affines (voxel → RAS+ mm) differ by up to "
            f"{float(np.max(np.abs(mine - theirs))):.4g}: its affine {_affine_text(mine)}, the "
            f"image's {_affine_text(theirs)}")


def _affine_text(affine: np.ndarray) -> str:
    rows = ("[" + ", ".join(f"{v:.4g}" for v in row) + "]" for row in affine[:3])
    return "[" + ", ".join(rows) + "]"


def _axis_of(codes: tuple[str, ...], letters: str) -> int:
    for axis, code in enumerate(codes):
        if code in letters:
            return axis
    raise InvalidImage(f"the volume's orientation {''.join(codes)} has no {letters} axis")


def parse_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """(width, level) from a preset name (:data:`CT_WINDOWS`), "W/L" text or a (width, level)
    pair (a tuple of two numbers); both finite and the width positive. Anything else is
    :class:`InvalidInput` naming the accepted forms."""
    pair: Any = None
    if isinstance(window, str):
        if window in CT_WINDOWS:
            return CT_WINDOWS[window]
        width, sep, level = window.partition("/")
        if sep:
            try:
                pair = (float(width), float(level))
            except ValueError:
                pass
    elif isinstance(window, tuple) and len(window) == 2 and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            for v in window):
        pair = (float(window[0]), float(window[1]))
    if pair is not None and np.isfinite(pair).all() and pair[0] > 0:
        return pair
    raise InvalidInput(f"unknown window {_shown(window)}: use a preset ({', '.join(CT_WINDOWS)}), "
                       "WIDTH/LEVEL text in HU such as \"400/40\", or a (width, level) tuple of "
                       "finite numbers with width > 0")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:59]}…"


def apply_window(values: np.ndarray, width: float, level: float) -> np.ndarray:
    """Linear window to uint8: ``level - width/2`` → 0, ``level + width/2`` → 255, clipped.

    NaN and ±inf voxels (e.g. outside a brain mask in a float NIfTI) carry no intensity:
    they become 0 (black), whatever the window."""
    if not (np.isfinite(width) and np.isfinite(level)) or width <= 0:
        raise InvalidInput(f"window width must be a positive number and level finite, got "
                           f"{width}/{level}")
    low = level - width / 2.0
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    with np.errstate(over="ignore"):  # values near ±1e308 overflow to ±inf: clipped to 0/255
        scaled = (np.where(finite, values, low) - low) / width * 255.0
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


def percentile_window(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """(width, level) spanning the ``low``–``high`` percentiles of ``values`` (a whole volume,
    so every slice gets the same mapping). NaN/inf voxels are left out; a volume without
    any finite voxel, or one whose percentiles are too far apart for a float64 width (e.g.
    ±1e308), is refused with a hint."""
    # in memory order: a view of a Fortran-ordered (NIfTI) volume, not a C-ordered copy
    values = np.asarray(values).ravel(order="K")
    if values.dtype.kind in "iu":  # integers are finite and exact in float64: no float copy
        finite = values
    else:
        finite = values[np.isfinite(values)].astype(np.float64, copy=False)
    if finite.size == 0:
        raise InvalidImage("the volume has no finite values (all NaN or infinite); nothing to "
                           "window or segment")
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    with np.errstate(over="ignore"):
        width = max(hi - lo, 1e-6)
    if not np.isfinite(width):
        raise InvalidImage(f"the volume's values run from {lo:.3g} to {hi:.3g} (its {low}th to "
                           f"{high}th percentiles), too wide to window: their difference "
                           "overflows float64, so no slice could be shown. The data are probably "
                           "corrupt or not intensities; clip or rescale them (e.g. "
                           "np.clip(data, -1e4, 1e4)), or give a window (window='W/L', CLI "
                           "--window W/L)")
    return width, lo + width / 2.0
