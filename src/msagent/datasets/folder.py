"""A plain folder of image/mask pairs with a CSV of targets, and the MNI152 example dataset.

Layout: a CSV (default ``targets.csv``) with the columns ``image``, ``mask``, ``target`` and
optionally ``id``, ``class``, ``modality``, ``dataset``, ``split``; paths are relative to
the CSV's folder (e.g. ``images/a.png``, ``masks/a_liver.png``). One row is one case. Case
ids are ``{dataset}/{id}``, with ``id`` defaulting to ``{image stem}/{class or target}``.
"""

from __future__ import annotations

import csv
import io as _io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from msagent.datasets._base import CaseRef, Dataset, ImageMaskFiles, slug, unique_ids
from msagent.errors import InvalidInput
from msagent.io.atomic import atomic_write

REQUIRED = ("image", "mask", "target")
DEFAULT_CSV = "targets.csv"


def read_folder(root: str | os.PathLike, csv_name: str = DEFAULT_CSV, *, dataset: str | None = None,
                modality: str = "") -> Dataset:
    """Cases listed in ``root/csv_name`` (or ``root`` itself when it is the CSV file)."""
    path = Path(root)
    csv_path = path if path.is_file() else path / csv_name
    if not csv_path.is_file():
        raise InvalidInput(f"no {csv_name} in {path}; a plain dataset folder needs a CSV with "
                           f"the columns {', '.join(REQUIRED)}")
    folder = csv_path.parent
    name = dataset or folder.name
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{csv_path} lacks the column(s) {missing}; it needs "
                               f"{', '.join(REQUIRED)} (optional: id, class, modality, dataset, split)")
        refs = [_row_ref(row, folder, name, modality) for row in reader]
    return Dataset(tuple(unique_ids(refs)), name)


def _row_ref(row: dict, folder: Path, dataset: str, modality: str) -> CaseRef:
    target = (row.get("target") or "").strip()
    if not target:
        raise InvalidInput(f"row for {row.get('image')!r} has an empty target")
    name = (row.get("dataset") or "").strip() or dataset
    klass = (row.get("class") or "").strip() or target
    local_id = (row.get("id") or "").strip() or f"{Path(row['image']).stem}/{slug(klass)}"
    meta = {"dataset": name, "split": (row.get("split") or "").strip(),
            "modality": (row.get("modality") or "").strip() or modality, "class": klass,
            "image": row["image"], "mask": row["mask"]}
    loader = ImageMaskFiles(str(folder / row["image"]), str(folder / row["mask"]))
    return CaseRef(f"{name}/{local_id}", target, loader, meta)


def write_folder(out_dir: str | os.PathLike, rows: Sequence[dict], csv_name: str = DEFAULT_CSV) -> Path:
    """Write the CSV of a plain dataset folder (rows with at least image, mask, target)."""
    out = Path(out_dir)
    columns = list(REQUIRED) + sorted({k for row in rows for k in row} - set(REQUIRED))
    text = _io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / csv_name, text.getvalue().encode())
    return out / csv_name


MNI_TARGETS = ("brain", "white matter", "gray matter")


def _mni152_labels(resolution: int) -> dict[str, np.ndarray]:
    """Voxel masks: the brain mask, and each tissue where its probability template is at
    least 0.5 and above the other tissue's (exclusive, unlike nilearn's dilated tissue masks)."""
    from nilearn import datasets as nl

    gm = np.asarray(nl.load_mni152_gm_template(resolution=resolution).get_fdata())
    wm = np.asarray(nl.load_mni152_wm_template(resolution=resolution).get_fdata())
    brain = np.asarray(nl.load_mni152_brain_mask(resolution=resolution).get_fdata()) > 0
    return {"brain": brain, "gray matter": (gm >= 0.5) & (gm > wm) & brain,
            "white matter": (wm >= 0.5) & (wm >= gm) & brain}


def make_mni152_dataset(out_dir: str | os.PathLike, slices: Sequence[int] = (30, 40, 50),
                        targets: Sequence[str] = MNI_TARGETS, resolution: int = 2) -> Path:
    """A small real dataset in the plain-folder layout: axial slices of the MNI152 T1 template
    (nilearn's copy, no download) with the masks of "brain" (nilearn's brain mask), "white
    matter" and "gray matter" (nilearn's tissue probability templates, each voxel given to the
    more likely tissue when its probability is at least 0.5).

    Slices are displayed as every msagent volume slice (radiological convention, see
    :mod:`msagent.io.volume`), windowed once for the volume. Returns the folder. Needs nilearn.
    """
    from nilearn import datasets as nl

    from msagent import io

    unknown = [t for t in targets if t not in MNI_TARGETS]
    if unknown:
        raise InvalidInput(f"unknown MNI152 target(s) {unknown}; choose from {list(MNI_TARGETS)}")
    template = nl.load_mni152_template(resolution=resolution)
    volume = io.Volume(data=np.asarray(template.get_fdata()), affine=np.asarray(template.affine))
    labels = {t: io.Volume(data=m, affine=volume.affine)
              for t, m in _mni152_labels(resolution).items() if t in targets}
    width, level = io.choose_window(volume).pair
    out = Path(out_dir)
    rows = []
    for z in slices:
        image_rel = f"images/mni152_z{z:03d}.png"
        io.save_png(io.apply_window(volume.slice(z), width, level), out / image_rel)
        for target in targets:
            mask = labels[target].slice(z) > 0
            if not mask.any():
                continue
            mask_rel = f"masks/mni152_z{z:03d}_{slug(target)}.png"
            io.save_mask_png(mask, out / mask_rel)
            rows.append({"image": image_rel, "mask": mask_rel, "target": target,
                         "id": f"z{z:03d}/{slug(target)}", "class": target, "modality": "MRI",
                         "dataset": "mni152"})
    write_folder(out, rows)
    return out


def make_mni152_volumes(out_dir: str | os.PathLike, resolution: int = 2) -> Path:
    """The MNI152 T1 template as a one-volume MSD / nnU-Net folder for whole-volume cases:
    ``imagesTr/mni152_0000.nii.gz``, ``labelsTr/mni152.nii.gz`` and ``dataset.json``. The
    label map holds gray matter (1), white matter (2) and the rest of the brain mask (3), as
    :func:`make_mni152_dataset` defines them; "brain" is the nnU-Net v2 region [1, 2, 3], so
    :func:`msagent.datasets.read_nifti_folder` with ``volumes=True`` gives one 3-D case per
    target of the slice dataset. Returns the folder. Needs nilearn (its copy, no download)."""
    import json

    from nilearn import datasets as nl

    from msagent import io

    template = nl.load_mni152_template(resolution=resolution)
    affine = np.asarray(template.affine, dtype=np.float64)
    masks = _mni152_labels(resolution)
    labels = np.zeros(masks["brain"].shape, np.uint8)
    labels[masks["brain"]] = 3
    labels[masks["gray matter"]] = 1
    labels[masks["white matter"]] = 2
    out = Path(out_dir)
    io.write_nifti(np.asarray(template.get_fdata(), dtype=np.float32),
                   out / "imagesTr" / "mni152_0000.nii.gz", affine=affine)
    io.write_nifti(labels, out / "labelsTr" / "mni152.nii.gz", affine=affine)
    info = {"name": "mni152", "channel_names": {"0": "MRI"}, "file_ending": ".nii.gz",
            "labels": {"background": 0, "gray matter": 1, "white matter": 2, "brain": [1, 2, 3]},
            "numTraining": 1, "description": "MNI152 T1 template (nilearn), msagent"}
    atomic_write(out / "dataset.json", json.dumps(info, indent=1).encode())  # last: built
    return out
