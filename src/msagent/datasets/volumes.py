"""Whole-volume cases: one (volume, label) segmented and scored in 3-D (``msagent eval --volumes``).

A :class:`VolumeCase` names its image and label volume (paths, :class:`msagent.io.Volume` objects
or 3-D arrays) and reads nothing until :meth:`VolumeCase.load`. Loading checks the size
against the voxel limit from the header (:mod:`msagent.io.limits`) before any data are
decoded, then reads, windows and slices the image once
(:func:`msagent.volume.stack.build_stack`) and takes the label's mask on the same grid. So a
dataset of 100 CTs lists without reading any voxels, and an evaluation holds one volume at a
time. The NIfTI readers list such cases: :func:`msagent.datasets.read_nifti_volumes` (one
pair) and :func:`msagent.datasets.read_nifti_folder` with ``volumes=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from msagent import io
from msagent.errors import InvalidMask
from msagent.io.limits import check_voxels
from msagent.volume.stack import SlicedVolume, build_stack, label_stack

#: a label value, or an nnU-Net v2 region (the union of several values)
Label = int | tuple[int, ...]


@attrs.frozen(eq=False)
class VolumeCase:
    """A whole-volume case not loaded yet.

    ``image``: a NIfTI path (a 4-D file: its first channel, as the slice reader), a DICOM
    series (folder or file), an :class:`msagent.io.Volume` or a 3-D array. ``labels``: the
    label volume on the same grid (same kinds). ``label`` picks the target's value, or a
    tuple of values (an nnU-Net v2 region: their union), None for every nonzero voxel.
    Volumes are sliced along the anatomical ``plane``; arrays along ``axis`` (default 0) with
    ``spacing`` (mm per array axis). ``window``: a CT preset or "W/L" (default: the volume's
    percentiles). ``meta``: JSON-safe strings/numbers (``dataset``, ``modality``, ``class``,
    ``plane``, ``spacing`` in the file's voxel order, ...)."""

    kind: ClassVar[str] = "volume"

    id: str
    target: str
    image: Any
    labels: Any
    label: Label | None = None
    plane: str = "axial"
    axis: int | None = None
    spacing: Sequence[float] | None = None
    window: str | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    def load(self, max_voxels: int | None = None) -> "LoadedVolume":
        """Read, window and slice the image and take the label's mask; refuses a volume over
        the voxel limit (``max_voxels``, else ``$MSAGENT_MAX_VOXELS``) before decoding it."""
        image = _open(self.image, max_voxels)
        if isinstance(image, io.Volume):
            stack = build_stack(image, plane=self.plane, window=self.window, max_voxels=max_voxels)
        else:
            stack = build_stack(image, axis=self.axis, spacing=self.spacing, window=self.window,
                                max_voxels=max_voxels)
        labels = _select(_open(self.labels, max_voxels), self.label)
        return LoadedVolume(self, stack, label_stack(labels, stack, "label map"))


@attrs.frozen(eq=False)
class LoadedVolume:
    """A loaded :class:`VolumeCase`: ``sliced`` (its slices, window, plane and source volume)
    and ``ground_truth``, the label's mask as slices × H × W bool in display order."""

    kind: ClassVar[str] = "volume"

    case: VolumeCase
    sliced: SlicedVolume
    ground_truth: np.ndarray

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def target(self) -> str:
        return self.case.target

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.case.meta


def _open(source: Any, max_voxels: int | None) -> Any:
    """A path read as an :class:`msagent.io.Volume`; a Volume or an array as it is."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        path = os.fsdecode(source)
        return read_first_channel(path, max_voxels) if io.is_nifti(path) else \
            io.read_volume(path, max_voxels=max_voxels)
    return source


def read_first_channel(path: str | os.PathLike, max_voxels: int | None = None) -> io.Volume:
    """A NIfTI file as a 3-D :class:`msagent.io.Volume` with its header: a 3-D file through
    :func:`msagent.io.read_nifti`, a 4-D one (MSD's multi-channel MRI) as its first channel,
    checked against the voxel limit from the header first."""
    import nibabel as nib

    try:
        image = nib.load(os.fsdecode(path))
    except Exception:  # noqa: BLE001 - read_nifti says why (missing, unreadable)
        return io.read_nifti(path, max_voxels=max_voxels)
    if len(image.shape) != 4 or image.shape[3] == 1:
        return io.read_nifti(path, max_voxels=max_voxels)
    check_voxels(image.shape[:3], 4, os.fsdecode(path), max_voxels)
    data = np.asarray(image.dataobj[..., 0])  # the proxy applies scl_slope/scl_inter itself
    header = image.header.copy()
    header.set_data_shape(data.shape)
    return io.Volume(data=data, affine=np.asarray(image.affine, dtype=np.float64), header=header)


def _select(labels: Any, label: Label | None) -> Any:
    """The label volume reduced to the target: nonzero where it holds ``label`` (or one of
    the region's values); None keeps it as it is (every nonzero voxel)."""
    if label is None:
        return labels
    volume = labels if isinstance(labels, io.Volume) else None
    data = np.asarray(volume.data if volume is not None else labels)
    if data.dtype.kind not in "biuf":
        raise InvalidMask(f"the label map must hold numbers (0 = background), got {data.dtype}")
    values = list(label) if isinstance(label, (tuple, list)) else [label]
    mask = np.isin(data, values).astype(np.uint8)
    return mask if volume is None else io.Volume(mask, volume.affine)
