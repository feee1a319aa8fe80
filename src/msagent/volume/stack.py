"""A volume as a stack of 2-D slices for a 3-D run, and masks back into its voxel order.

Two kinds of input:

- an :class:`msagent.io.Volume` (NIfTI, DICOM series) sliced along an anatomical ``plane``:
  each slice as displayed (:meth:`msagent.io.Volume.slice`), masks written back with
  :meth:`~msagent.io.Volume.put_slice`;
- a NumPy array with its ``spacing`` (mm per array axis), sliced along the array ``axis``
  (0 by default, the (D, H, W) layout of the CVPR challenges' ``.npz`` files): slice ``i`` is
  ``data[i]`` along that axis, as stored.

A slice costs O(slice) whatever the array's memory order (a NIfTI is Fortran-ordered as
nibabel reads it): slices are views (:func:`msagent.io.volume.take_slice`), and only each
displayed slice is copied, into one preallocated stack.

Either way the whole volume is windowed once (:func:`msagent.io.choose_window`: a preset or
"W/L", else a DICOM CT's stored window, else the volume's 0.5–99.5th percentiles), so every
slice gets the same mapping, and its size is checked against the voxel limit first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from msagent import io
from msagent.backbones.propagation import SliceStack
from msagent.errors import InvalidImage, InvalidInput, InvalidMask
from msagent.io.limits import check_voxels
from msagent.io.volume import take_slice


@attrs.frozen(eq=False)
class SlicedVolume:
    """A volume's ``slices`` (a :class:`SliceStack`) and how they sit in the source volume.

    ``volume`` is the :class:`msagent.io.Volume` (None for a NumPy input), ``plane`` the plane
    name or ``axis`` the array axis sliced; ``window`` the (width, level) used."""

    slices: SliceStack
    shape: tuple[int, int, int]  # the source's voxel shape
    volume: io.Volume | None = None
    plane: str | None = None
    axis: int = 0
    window: tuple[float, float] = (0.0, 0.0)

    @property
    def where(self) -> str:
        """How the slices were taken, for messages and trajectories: "axial" or "axis 0"."""
        return self.plane or f"axis {self.axis}"

    def to_display(self, data: np.ndarray) -> np.ndarray:
        """A voxel-order array of the source's shape → count × H × W in slice display order."""
        data = np.asarray(data)
        if data.shape != self.shape:
            raise InvalidInput(f"array of shape {data.shape} is not on the volume's grid {self.shape}")
        if self.volume is None:
            return np.moveaxis(data, self.axis, 0)
        return stacked(self.slices.count, lambda i: self.slice_of(data, i))

    def slice_of(self, data: np.ndarray, index: int) -> np.ndarray:
        """Slice ``index`` of a voxel-order array of the source's shape, as displayed: a view
        for a NumPy source, else a copy of that slice only (:meth:`msagent.io.Volume.slice_of`)."""
        if self.volume is None:
            return take_slice(data, index, self.axis)
        assert self.plane is not None  # a volume is sliced in a plane (_from_volume sets both)
        return self.volume.slice_of(data, index, self.plane)

    def to_voxels(self, masks: np.ndarray) -> np.ndarray:
        """count × H × W display-order masks → a bool array in the source's voxel order."""
        masks = np.asarray(masks, dtype=bool)
        if self.volume is None:
            return np.ascontiguousarray(np.moveaxis(masks, 0, self.axis))
        assert self.plane is not None  # a volume is sliced in a plane (_from_volume sets both)
        out = np.zeros(self.shape, dtype=bool)
        for index in range(masks.shape[0]):
            self.volume.put_slice(out, masks[index], index, self.plane)
        return out


def build_stack(source: Any, *, plane: str = "axial", axis: int | None = None,
                spacing: Sequence[float] | None = None, window: Any = None,
                max_voxels: int | None = None) -> SlicedVolume:
    """A :class:`SlicedVolume` from a path (NIfTI file, DICOM series folder or file), an
    :class:`msagent.io.Volume` or a 3-D NumPy array (with ``spacing`` and ``axis``)."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        source = io.read_volume(source, max_voxels=max_voxels)
    if isinstance(source, io.Volume):
        if axis is not None or spacing is not None:
            raise InvalidInput("a Volume carries its own geometry: pass plane= (axial, coronal, "
                               "sagittal), not axis= or spacing=")
        check_voxels(source.shape, source.data.dtype.itemsize, "the volume", max_voxels)
        return _from_volume(source, plane, window)
    return _from_array(source, 0 if axis is None else axis, spacing, window, max_voxels)


def _from_volume(volume: io.Volume, plane: str, window: Any) -> SlicedVolume:
    width, level = io.choose_window(volume, window).pair
    # slice by slice, so the float copy apply_window makes is one slice, not the volume
    gray = stacked(volume.n_slices(plane), lambda i: io.apply_window(volume.slice(i, plane), width, level))
    view = volume.view(0, plane)
    row, col = volume.slice_spacing(plane)
    stack = SliceStack(gray, (volume.spacing[view.axis], row, col))
    return SlicedVolume(stack, volume.shape, volume=volume, plane=plane, axis=view.axis,
                       window=(width, level))


def _from_array(data: Any, axis: int, spacing: Sequence[float] | None, window: Any,
                max_voxels: int | None) -> SlicedVolume:
    if not isinstance(data, np.ndarray):
        raise InvalidImage(f"a volume is a path, an msagent.io.Volume or a 3-D NumPy array, got "
                           f"{type(data).__name__}")
    if data.ndim != 3:
        raise InvalidImage(f"a volume must be 3-D, got shape {data.shape}"
                           + ("; for a 2-D image use msagent.segment" if data.ndim == 2 else ""))
    if data.dtype.kind not in "biuf":
        raise InvalidImage(f"volume voxels must be numeric, got {data.dtype}")
    check_voxels(data.shape, data.dtype.itemsize, "the volume", max_voxels)
    if not isinstance(axis, (int, np.integer)) or not -3 <= axis < 3:
        raise InvalidInput(f"axis must be 0, 1 or 2 (the array axis to slice along), got {axis!r}")
    axis = int(axis) % 3
    spacing = check_spacing(spacing)
    volume = io.Volume(data.astype(np.float32) if data.dtype == bool else data, np.diag([*spacing, 1.0]))
    width, level = io.choose_window(volume, window).pair
    gray = stacked(data.shape[axis], lambda i: io.apply_window(take_slice(data, i, axis), width, level))
    rest = [spacing[a] for a in range(3) if a != axis]
    return SlicedVolume(SliceStack(gray, (spacing[axis], rest[0], rest[1])), tuple(data.shape),
                       axis=axis, window=(width, level))


def stacked(count: int, one: Callable[[int], np.ndarray]) -> np.ndarray:
    """count × H × W from the 2-D slices ``one(0)``, ``one(1)``, ..., each written into the one
    output array as it comes (no list of slices stacked into a second copy)."""
    first = one(0)
    out = np.empty((count, *first.shape), dtype=first.dtype)
    out[0] = first
    for index in range(1, count):
        out[index] = one(index)
    return out


def check_spacing(spacing: Sequence[float] | None) -> tuple[float, float, float]:
    """Three positive finite voxel sizes in mm (array axis order); None → 1 mm isotropic."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise InvalidInput(f"spacing must be three numbers (mm per array axis), got {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InvalidInput(f"spacing must be three positive finite numbers (mm per array axis), "
                           f"got {spacing!r}")
    return values


def label_stack(labels: Any, sliced: SlicedVolume, what: str, label: int | None = None) -> np.ndarray:
    """A label volume on the source's grid (a path, an io.Volume or an array; ``label``, a
    whole number, picks one value, else nonzero) as count × H × W bool slices in display
    order."""
    if label is not None and (isinstance(label, (bool, np.bool_))
                              or not isinstance(label, (int, np.integer))):
        raise InvalidMask(f"label must be a whole number (the value of the target in the "
                          f"{what}) or None for any nonzero value, got {label!r:.40}")
    if isinstance(labels, (str, bytes)) or hasattr(labels, "__fspath__"):
        labels = io.read_volume(labels)
    if isinstance(labels, io.Volume):
        mismatch = "" if sliced.volume is None else io.grid_mismatch(labels, sliced.volume)
        if mismatch:
            raise InvalidMask(f"the {what} is not on the image's voxel grid: {mismatch}; "
                              "resample it onto the image first")
        labels = labels.data
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError):  # a ragged or otherwise unreadable nested list
        raise InvalidMask(f"the {what} must be an array of the volume's shape {sliced.shape}, got "
                          f"{type(labels).__name__}") from None
    if array.shape != sliced.shape:
        raise InvalidMask(f"the {what} has shape {array.shape} but the volume {sliced.shape}; they "
                          "must match voxel for voxel")
    if array.dtype.kind not in "biuf":
        raise InvalidMask(f"the {what} must hold finite numbers (0 = background), got {array.dtype}")
    if label is not None and array.dtype.kind in "iu" and not (
            np.iinfo(array.dtype).min <= label <= np.iinfo(array.dtype).max):
        raise InvalidMask(f"label {label} cannot occur in the {what}: it holds {array.dtype} "
                          "values; give the label of the target")

    def target(index: int) -> np.ndarray:  # one slice at a time: no bool copy of the volume
        plane = sliced.slice_of(array, index)
        if plane.dtype.kind == "f" and not np.isfinite(plane).all():
            raise InvalidMask(f"the {what} must hold finite numbers (0 = background); slice "
                              f"{index} ({sliced.where}) has NaN or infinite values")
        return plane == label if label is not None else plane != 0

    return stacked(sliced.slices.count, target)
