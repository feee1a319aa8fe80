"""NIfTI volumes with label maps, sliced into 2-D cases (needs ``msagent[medical]``).

:func:`read_nifti_pair` reads one image volume and its label map: every slice of ``plane``
where a label has at least ``min_pixels`` pixels becomes one case per label, the target text
given by ``labels`` (label value → text). Slices are displayed as every msagent volume slice
(:mod:`msagent.io.volume`) and windowed once per volume (a CT preset or "W/L", else the
volume's 0.5–99.5th percentiles). :func:`read_nifti_folder` reads the Medical Segmentation
Decathlon / nnU-Net layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``). Case ids are
``{dataset}/{case}/{plane}{index:03d}/{label}``.

Whole volumes: :func:`read_nifti_volumes` (one pair) and ``read_nifti_folder(root,
volumes=True)`` list one :class:`~msagent.datasets.volumes.VolumeCase` per (volume, label),
ids ``{dataset}/{case}/{plane}/{label}``, reading only the image's header (shape, spacing).
Every label of ``dataset.json`` becomes a case, and so do nnU-Net v2 regions (``"brain": [1,
2, 3]``, the union of the values); a label absent from a volume is known only once the
volume is read, so the evaluation records that case as skipped (empty ground truth).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import attrs
import numpy as np

from msagent import io
from msagent.datasets._base import CaseRef, Dataset, slug
from msagent.datasets.volumes import Label, VolumeCase
from msagent.errors import InvalidInput
from msagent.io.limits import check_voxels

_CACHE_SIZE = 2


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _volume(path: str) -> io.Volume:
    """A cached 3-D volume (4-D images: the first channel), with the header's scaling."""
    import nibabel as nib

    image = nib.load(path)
    if len(image.shape) not in (3, 4):
        raise InvalidInput(f"{path} has shape {image.shape}; expected a 3-D (or 4-D) volume")
    slope, inter = image.dataobj.slope, image.dataobj.inter
    unscaled = (slope is None or not np.isfinite(slope) or slope == 1.0) and \
        (inter is None or not np.isfinite(inter) or inter == 0.0)
    check_voxels(image.shape[:3], 4, path)  # from the header, before any data are read
    first = image.dataobj if len(image.shape) == 3 else image.dataobj[..., 0]  # 4-D: channel 0 only
    data = np.asarray(first)  # the proxy applies scl_slope/scl_inter itself
    if not unscaled:
        data = data.astype(np.float32)
    return io.Volume(data=data, affine=np.asarray(image.affine, dtype=np.float64))


def _shape(path: str) -> tuple[int, ...]:
    import nibabel as nib

    return tuple(nib.load(path).shape[:3])


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _window(path: str, window: str | None) -> tuple[float, float]:
    return io.choose_window(_volume(path), window).pair


@attrs.frozen
class NiftiSlice:
    """Loader of one displayed slice of an image volume and one label of its label map."""

    image: str
    labels: str
    plane: str
    index: int
    label: int
    window: str | None = None

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        width, level = _window(self.image, self.window)
        gray = io.apply_window(_volume(self.image).slice(self.index, self.plane), width, level)
        mask = _volume(self.labels).slice(self.index, self.plane) == self.label
        return np.repeat(gray[:, :, None], 3, axis=2), np.ascontiguousarray(mask)


def read_nifti_pair(image: str | os.PathLike, labels: str | os.PathLike,
                    label_names: Mapping[int, str], *, dataset: str = "", modality: str = "",
                    case: str | None = None, plane: str = "axial", window: str | None = None,
                    min_pixels: int = 1, slice_step: int = 1,
                    target_template: str = "{label}") -> Dataset:
    """Cases from one volume: each slice (every ``slice_step``-th) where a label of
    ``label_names`` covers at least ``min_pixels`` pixels. ``target_template`` builds the
    target text from ``{label}`` and ``{modality}`` (e.g. "{label} in {modality}")."""
    image, labels = str(image), str(labels)
    for path in (image, labels):
        if not Path(path).is_file():
            raise InvalidInput(f"NIfTI file not found: {path}")
    label_volume = _volume(labels)
    if _shape(image) != label_volume.shape:
        raise InvalidInput(f"{labels} has shape {label_volume.shape} but {image} has "
                           f"{_shape(image)}; the label map must match the image")
    case = case or re.sub(r"\.nii(\.gz)?$", "", Path(image).name)
    name = dataset or Path(image).parent.name
    refs = []
    for index in range(0, label_volume.n_slices(plane), max(1, slice_step)):
        plane_labels = label_volume.slice(index, plane)
        for value, text in sorted(label_names.items()):
            if int(np.count_nonzero(plane_labels == value)) < min_pixels:
                continue
            target = target_template.format(label=text, modality=modality).strip()
            meta = {"dataset": name, "split": "", "modality": modality, "class": text,
                    "image": Path(image).name, "slice": index, "plane": plane, "label": int(value)}
            loader = NiftiSlice(image, labels, plane, index, int(value), window)
            refs.append(CaseRef(f"{name}/{case}/{plane}{index:03d}/{slug(text)}", target, loader, meta))
    return Dataset(tuple(refs), name)


def read_nifti_volumes(image: str | os.PathLike, labels: str | os.PathLike,
                       label_names: Mapping[Label, str], *, dataset: str = "", modality: str = "",
                       case: str | None = None, plane: str = "axial", window: str | None = None,
                       target_template: str = "{label}") -> Dataset:
    """Whole-volume cases of one pair: one :class:`VolumeCase` per label of ``label_names``
    (a value, or a tuple of values for a region), the target text as
    :func:`read_nifti_pair` builds it. Only the image's header is read (for ``meta``'s
    ``shape`` and ``spacing``); the voxels are read when a case is loaded."""
    image, labels = str(image), str(labels)
    case = case or re.sub(r"\.nii(\.gz)?$", "", Path(image).name)
    name = dataset or Path(image).parent.name
    header = _header_info(image)
    refs = []
    regions_last = sorted(label_names.items(), key=lambda kv: (not isinstance(kv[0], int), _values(kv[0])))
    for value, text in regions_last:
        target = target_template.format(label=text, modality=modality).strip()
        values = _values(value)
        meta = {"dataset": name, "split": "", "modality": modality, "class": text,
                "image": Path(image).name, "labels": Path(labels).name, "plane": plane,
                "window": window or "", "label": values[0] if len(values) == 1 else list(values),
                **header}
        refs.append(VolumeCase(f"{name}/{case}/{plane}/{slug(text)}", target, image, labels,
                               value, plane=plane, window=window, meta=meta))
    return Dataset(tuple(refs), name)


def _values(label: Label) -> tuple[int, ...]:
    return tuple(int(v) for v in label) if isinstance(label, (tuple, list)) else (int(label),)


def _header_info(path: str) -> dict:
    """``shape`` and ``spacing`` (mm, voxel axis order) from a NIfTI header; {} when it cannot
    be read (the case's load then says why)."""
    import nibabel as nib

    try:
        header = nib.load(path).header
        shape, zooms = header.get_data_shape()[:3], header.get_zooms()[:3]
    except Exception:  # noqa: BLE001 - reported when the case is loaded
        return {}
    return {"shape": [int(n) for n in shape], "spacing": [round(float(z), 6) for z in zooms]}


def read_nifti_folder(root: str | os.PathLike, *, volumes: bool = False, **options) -> Dataset:
    """A Medical Segmentation Decathlon / nnU-Net folder: ``dataset.json`` with ``labels``
    ({"1": "liver"} or nnU-Net v2's {"liver": 1}), ``modality``/``channel_names``, an
    optional ``window`` (a CT preset or "W/L": the default of ``window=``), and the pairs in
    ``training`` (MSD) or ``imagesTr/{case}_0000.nii.gz`` + ``labelsTr/{case}.nii.gz``.
    ``options`` go to :func:`read_nifti_pair`, or with ``volumes`` to
    :func:`read_nifti_volumes` (whole-volume cases; regions included)."""
    root = Path(root)
    info = _dataset_json(root)
    if volumes:
        unused = sorted(set(options) & {"min_pixels", "slice_step"})
        if unused:
            raise InvalidInput(f"{', '.join(unused)} choose slices; a volume case is the whole "
                               "volume: leave them out with volumes=True")
    label_names = _label_names(info, regions=volumes)
    if not options.get("window") and isinstance(info.get("window"), str):
        options["window"] = info["window"]  # the folder's own default (msagent's phantom)
    modality = options.pop("modality", None) or _modality(info)
    dataset = options.pop("dataset", None) or info.get("name") or root.name
    reader = read_nifti_volumes if volumes else read_nifti_pair
    out = Dataset((), dataset)
    for image, labels in _pairs(root, info):
        out = out + reader(image, labels, label_names,  # type: ignore[arg-type]  # keys per reader
                           dataset=dataset, modality=modality,
                           **options)
    return Dataset(out.refs, dataset)


def _dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None


def _label_names(info: dict, regions: bool = False) -> dict[Label, str]:
    """Label value (or, with ``regions``, a tuple of values) → target text, background left out."""
    labels = info.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InvalidInput("dataset.json needs 'labels', e.g. {\"0\": \"background\", \"1\": \"liver\"}")
    pairs = {}
    for key, value in labels.items():
        number, text = (key, value) if str(key).lstrip("-").isdigit() else (value, key)
        if isinstance(number, (list, tuple)):  # an nnU-Net v2 region: several values
            values = tuple(int(v) for v in number if int(v) != 0)
            if regions and values:
                pairs[values if len(values) > 1 else values[0]] = str(text).replace("_", " ")
            continue
        if int(number) != 0:
            pairs[int(number)] = str(text).replace("_", " ")
    return pairs


def _modality(info: dict) -> str:
    channels = info.get("modality") or info.get("channel_names") or {}
    return str(channels.get("0", "")) if isinstance(channels, dict) else ""


def _pairs(root: Path, info: dict) -> list[tuple[Path, Path]]:
    if isinstance(info.get("training"), list):
        return [(root / item["image"], root / item["label"]) for item in info["training"]]
    ending = info.get("file_ending", ".nii.gz")
    pairs = []
    for label in sorted((root / "labelsTr").glob(f"*{ending}")):
        case = label.name[: -len(ending)]
        pairs.append((root / "imagesTr" / f"{case}_0000{ending}", label))
    return pairs
