"""Test and demo data: synthetic phantoms with known masks, real MRI slices, a fake Hugging Face
cache.

``mni152_slice`` needs nilearn (``pip install nilearn``), which ships the MNI152 T1 template
and its brain, grey- and white-matter masks, so no download is involved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

MNI_TARGETS = {"brain": "brain", "gray matter": "gm", "white matter": "wm"}
#: The revision every file put in a cache by :func:`add_to_hf_cache` is filed under.
HF_REVISION = "0123456789abcdef0123456789abcdef01234567"


def make_phantom(height: int = 160, width: int = 224, center=(90, 120), radii=(40, 55),
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipse on a dark noisy background: (H×W×3 uint8 image, H×W bool mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    cy, cx = center
    ry, rx = radii
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    gray = np.where(mask, 190, 50) + rng.normal(0, 8, (height, width))
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2), mask


def make_tube(count: int = 16, size: tuple[int, int] = (40, 80), shift_at: int | None = None,
              shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D phantom: a bright disk through ``count`` slices (radius 5→9→7), optionally jumping
    ``shift`` px sideways from slice ``shift_at`` on; the float volume and its bool mask, both
    (D, H, W). The background darkens slice by slice, so that no two slices are alike (one
    encode per slice, not per distinct content)."""
    volume = np.full((count, *size), 20.0) + np.arange(count)[:, None, None] * 2.0
    mask = np.zeros(volume.shape, bool)
    yy, xx = np.mgrid[:size[0], :size[1]]
    for z in range(count):
        radius = 5 + 4 * np.sin(np.pi * z / (count + 4))  # no two slices alike
        cx = 20 + (shift if shift_at is not None and z >= shift_at else 0)
        mask[z] = (yy - 20) ** 2 + (xx - cx) ** 2 <= radius ** 2
    volume[mask] = 200.0
    return volume, mask


#: The affine of :func:`write_msd_tubes`' NIfTI files (RAS; k, the tube's slices, is axial).
TUBE_AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])


def zyx_to_nifti(zyx: np.ndarray) -> np.ndarray:
    """(slices, y, x) → NIfTI voxel order (i=x, j=y, k=slice)."""
    return np.ascontiguousarray(np.transpose(zyx, (2, 1, 0)))


def write_msd_tubes(root: Path) -> Path:
    """An MSD-layout NIfTI folder at ``root`` (needs nibabel): two :func:`make_tube` volumes
    (16 and 12 slices) in ``imagesTr``/``labelsTr``, labels 1 "tube" and 2 "cyst" (absent)."""
    import nibabel as nib

    root = Path(root)
    training = []
    for name, count in (("tube_a", 16), ("tube_b", 12)):
        volume, mask = make_tube(count)
        for folder, data in (("imagesTr", volume.astype(np.float32)), ("labelsTr", mask.astype(np.uint8))):
            path = root / folder / f"{name}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(zyx_to_nifti(data), TUBE_AFFINE), str(path))
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "tubes", "modality": {"0": "CT"}, "training": training,
        "labels": {"0": "background", "1": "tube", "2": "cyst"}}))
    return root


def mni152_slice(target: str = "brain", z: int | None = None,
                 resolution: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """An axial slice of the MNI152 T1 template (float image, as displayed: anterior up) and
    the mask of ``target`` ("brain", "gray matter" or "white matter")."""
    from nilearn import datasets

    if target not in MNI_TARGETS:
        raise ValueError(f"unknown MNI152 target {target!r}; choose from {sorted(MNI_TARGETS)}")
    loader = {"brain": datasets.load_mni152_brain_mask, "gm": datasets.load_mni152_gm_mask,
              "wm": datasets.load_mni152_wm_mask}[MNI_TARGETS[target]]
    volume = datasets.load_mni152_template(resolution=resolution).get_fdata()
    labels = loader(resolution=resolution).get_fdata()
    z = volume.shape[2] // 2 if z is None else z
    return np.rot90(volume[:, :, z]).copy(), np.rot90(labels[:, :, z] > 0).copy()


def add_to_hf_cache(root: Path, repo_id: str, filename: str, source: Path) -> Path:
    """Copy ``source`` into a Hugging Face cache at ``root`` the way huggingface_hub lays it
    out (``models--org--name/snapshots/<rev>/filename`` plus ``refs/main``), so weight
    resolution can be tested offline."""
    repo = Path(root) / f"models--{repo_id.replace('/', '--')}"
    target = repo / "snapshots" / HF_REVISION / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(HF_REVISION)
    shutil.copyfile(source, target)
    return target


def write_dicom_series(folder: Path, offsets, *, description: str = "CT abdomen", number: int = 2,
                       oblique: bool = False, spacing=(0.7, 0.9), names=None) -> str:
    """Write a CT series into ``folder`` (needs pydicom): pydicom's CT_small.dcm with slices at
    ``offsets`` (mm along the normal), files written in reverse order; pixel [0, 0] of slice k
    is 1000 + k. Returns the SeriesInstanceUID."""
    import copy

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = generate_uid()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    if oblique:
        angle = np.deg2rad(20)
        row, col = np.array([np.cos(angle), np.sin(angle), 0]), np.array([0, np.cos(0.3), np.sin(0.3)])
        col = col - (col @ row) * row
        col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    origin = np.array([float(v) for v in source.ImagePositionPatient])
    for k, offset in enumerate(offsets):
        ds = copy.deepcopy(source)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = series, description, number
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [*map(float, row), *map(float, col)]
        ds.ImagePositionPatient = [float(v) for v in origin + offset * normal]
        ds.PixelSpacing = list(spacing)
        pixels = source.pixel_array.copy()
        pixels[0, 0] = 1000 + k
        ds.PixelData = pixels.tobytes()
        name = names[k] if names else f"img{len(offsets) - k:03d}.dcm"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / name)
    return series
