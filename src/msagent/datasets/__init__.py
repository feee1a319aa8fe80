"""Dataset readers: every reader returns a :class:`Dataset`, an ordered, lazily loaded
iterable of :class:`msagent.types.Case` (image H×W×3 uint8, target text, H×W bool ground
truth) with stable ids and ``meta`` holding ``dataset``, ``modality``, ``class`` and
``split`` (empty strings when unknown).

Layouts:

- BiomedParse / UniBioMed (``{split}.json``, ``{split}/``, ``{split}_mask/``, nested
  sub-datasets): :func:`read_biomedparse`;
- a plain folder of image/mask pairs with ``targets.csv``: :func:`read_folder`;
- NIfTI volumes with label maps: :func:`read_nifti_pair` (one volume) and
  :func:`read_nifti_folder` (MSD / nnU-Net ``dataset.json`` layout); with ``volumes=True``
  (or :func:`read_nifti_volumes`) whole-volume cases instead of slices: a
  :class:`VolumeCase` per (volume, label), loaded as a :class:`LoadedVolume` (the slices and
  the label's mask) for the 3-D protocols.

:func:`open_dataset` picks the reader from a path. :func:`make_mni152_dataset` writes a small
real dataset (MNI152 slices) in the plain-folder layout, :func:`make_mni152_volumes` the MNI152
volume in the MSD layout.
"""

from __future__ import annotations

import os
from pathlib import Path

from msagent.datasets._base import CaseRef, Dataset, ImageMaskFiles, concat
from msagent.datasets.biomedparse import find_split_files, read_biomedparse
from msagent.datasets.folder import (
    DEFAULT_CSV,
    make_mni152_dataset,
    make_mni152_volumes,
    read_folder,
    write_folder,
)
from msagent.datasets.nifti import NiftiSlice, read_nifti_folder, read_nifti_pair, read_nifti_volumes
from msagent.datasets.volumes import LoadedVolume, VolumeCase
from msagent.errors import InvalidInput

__all__ = ["CaseRef", "Dataset", "ImageMaskFiles", "LoadedVolume", "NiftiSlice", "VolumeCase",
           "concat", "make_mni152_dataset", "make_mni152_volumes", "open_dataset",
           "read_biomedparse", "read_folder", "read_nifti_folder", "read_nifti_pair",
           "read_nifti_volumes", "resolve_dataset", "write_folder"]

LAYOUTS = ("biomedparse", "folder", "nifti")
#: dataset names every command accepts in place of a path (built offline on first use):
#: ``mni152`` (the MNI152 T1 template, nilearn) and ``ct-phantom`` (a synthetic abdominal CT,
#: :func:`msagent.testing.make_ct_phantom`: NIfTI volumes whatever the form)
BUILTIN = ("mni152", "ct-phantom")


def resolve_dataset(spec: str | os.PathLike, build_in: str | os.PathLike | None = None, *,
                    volumes: bool = False) -> Path:
    """The path of dataset ``spec``: a path as given, or a built-in name (:data:`BUILTIN`) built
    once, offline, into the folder ``build_in`` or, without one, ``$MSAGENT_DATA_DIR/<name>``
    (default ``~/.cache/msagent/datasets/<name>``). Every command and reader resolves here.
    With ``volumes`` ``mni152`` is built as a NIfTI folder of whole volumes
    (``<name>-volumes``: :func:`make_mni152_volumes`); ``ct-phantom`` is one NIfTI folder
    (:func:`msagent.testing.write_ct_phantom`, 100 × 512 × 512) for both forms."""
    name = str(spec).lower()
    if name not in BUILTIN:
        return Path(spec)
    if build_in is None:
        root = os.environ.get("MSAGENT_DATA_DIR") or Path.home() / ".cache" / "msagent" / "datasets"
        build_in = Path(root) / (f"{name}-volumes" if volumes and name == "mni152" else name)
    folder = Path(build_in)
    if name == "ct-phantom":
        if not (folder / "dataset.json").is_file():
            from msagent.testing.data import write_ct_phantom

            write_ct_phantom(folder)
    elif volumes and not (folder / "dataset.json").is_file():
        make_mni152_volumes(folder)
    elif not volumes and not (folder / DEFAULT_CSV).is_file():
        make_mni152_dataset(folder)
    return folder


def detect_layout(path: str | os.PathLike) -> str:
    """"biomedparse", "folder" or "nifti" for a dataset path (see :func:`open_dataset`)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"dataset path not found: {path} (a dataset folder or file, or a "
                           f"built-in name: {', '.join(BUILTIN)})")
    if path.is_file():
        if path.suffix == ".csv":
            return "folder"
        if path.name == "dataset.json":
            return "nifti"
        if path.suffix == ".json":
            return "biomedparse"
    elif (path / DEFAULT_CSV).is_file():
        return "folder"
    elif (path / "dataset.json").is_file():
        return "nifti"
    elif find_split_files(path):
        return "biomedparse"
    raise InvalidInput(
        f"cannot tell the layout of {path}: expected a folder with {DEFAULT_CSV} (image/mask "
        "pairs), a BiomedParse folder ({split}.json with {split}/ and {split}_mask/), or an "
        "MSD/nnU-Net folder with dataset.json (NIfTI); for a single volume use read_nifti_pair")


def open_dataset(spec: str | os.PathLike, *, split: str | None = None, volumes: bool = False,
                 **options) -> Dataset:
    """The dataset at ``spec`` with the reader its layout needs. ``split`` selects a
    BiomedParse split (default: all) and is ignored by the other layouts unless their cases
    carry it; ``options`` go to the reader (e.g. ``modality=``, ``dataset=``). ``spec`` may be
    a built-in name (``mni152``, see :func:`resolve_dataset`). ``volumes``: whole-volume cases
    (:class:`VolumeCase`) of a NIfTI dataset instead of its slices."""
    path = resolve_dataset(spec, volumes=volumes)
    layout = detect_layout(path)
    if volumes and layout != "nifti":
        raise InvalidInput(f"{path} is a {layout} dataset of 2-D images; whole-volume cases "
                           "(volumes=True, msagent eval --volumes) need NIfTI volumes: an "
                           "MSD/nnU-Net folder with dataset.json, imagesTr/ and labelsTr/")
    if volumes:
        options["volumes"] = True
    if layout == "biomedparse":
        return read_biomedparse(path, split, **options)
    if layout == "folder":
        dataset = read_folder(path, **options)
    else:
        dataset = read_nifti_folder(path.parent if path.is_file() else path, **options)
    if split:
        dataset = Dataset(tuple(r for r in dataset.refs if r.meta.get("split") in ("", split)),
                          dataset.name)
    return dataset
