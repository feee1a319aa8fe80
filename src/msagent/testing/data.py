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


#: The organs of :func:`make_ct_phantom`: label value → (name, HU). Distinct intensities under
#: the abdomen window (400/40): fat −100, body soft tissue 30, and each organ brighter.
CT_PHANTOM_ORGANS = {1: ("liver", 90), 2: ("spleen", 130), 3: ("left kidney", 190),
                     4: ("right kidney", 190), 5: ("aorta", 230)}
#: The voxel spacing of :func:`make_ct_phantom` in mm (slice, row, column).
CT_PHANTOM_SPACING = (2.5, 0.8, 0.8)


def make_ct_phantom(shape: tuple[int, int, int] = (100, 512, 512), *, seed: int = 0,
                    noise: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic abdominal CT: (int16 HU volume, uint8 label volume), both (slices, H, W)
    in display order (anterior up, the patient's right on the image's left).

    An elliptic body (soft tissue in a fat rim, air outside) holds the organs of
    :data:`CT_PHANTOM_ORGANS`, each a union of ellipsoids (the liver has two lobes, so its
    outline changes shape from slice to slice), and a bony vertebra (700 HU) behind the aorta.
    Edges are partial-volume: a voxel's intensity mixes the organ's and its surroundings' by
    the fraction of the voxel inside (a linear ramp one voxel wide across the surface); the
    label is where that fraction is at least 0.5. Gaussian noise of ``noise`` HU is added.
    Sizes scale with ``shape`` (the geometry is defined on the unit cube), so a smaller
    ``shape`` is the same phantom at a coarser resolution. Deterministic for a ``seed``."""
    depth, height, width = (int(v) for v in shape)
    if depth < 8 or height < 32 or width < 32:
        raise ValueError(f"a CT phantom needs at least 8×32×32 voxels, got {shape}")
    rng = np.random.default_rng(seed)
    zz = (np.arange(depth) + 0.5) / depth
    yy = (np.arange(height) + 0.5) / height
    xx = (np.arange(width) + 0.5) / width
    hu = np.full((depth, height, width), -1000.0, np.float32)
    labels = np.zeros((depth, height, width), np.uint8)
    step = np.array([1 / depth, 1 / height, 1 / width])

    def paint(parts, value: float, label: int = 0) -> None:
        """Blend ``value`` into the voxels of a union of ellipsoids ``parts``: each
        ((cz, cy, cx), (rz, ry, rx)) on the unit cube."""
        lo = np.min([np.subtract(c, r) for c, r in parts], axis=0)
        hi = np.max([np.add(c, r) for c, r in parts], axis=0)
        box = tuple(slice(max(0, int(a * n) - 2), min(n, int(np.ceil(b * n)) + 2))
                    for a, b, n in zip(lo, hi, (depth, height, width)))
        z, y, x = np.meshgrid(zz[box[0]], yy[box[1]], xx[box[2]], indexing="ij")
        inside = np.zeros(z.shape, np.float32)
        for (cz, cy, cx), (rz, ry, rx) in parts:
            radius = np.sqrt(((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
            # distance to the surface in voxels, along the ellipsoid's smallest in-plane radius
            voxels = min(ry / step[1], rx / step[2])
            inside = np.maximum(inside, np.clip((1.0 - radius) * voxels + 0.5, 0.0, 1.0))
        region = hu[box]
        region[...] = region * (1 - inside) + value * inside
        if label:
            labels[box][inside >= 0.5] = label

    paint([((0.5, 0.5, 0.5), (0.75, 0.36, 0.46))], -100.0)  # fat
    paint([((0.5, 0.5, 0.5), (0.75, 0.33, 0.43))], 30.0)  # soft tissue
    organs = {
        1: [((0.55, 0.42, 0.32), (0.32, 0.16, 0.15)), ((0.40, 0.36, 0.42), (0.22, 0.10, 0.12))],
        2: [((0.58, 0.50, 0.74), (0.18, 0.09, 0.06))],
        3: [((0.40, 0.60, 0.68), (0.16, 0.07, 0.045))],
        4: [((0.35, 0.60, 0.32), (0.16, 0.07, 0.045))],
        5: [((0.50, 0.55, 0.50), (0.45, 0.028, 0.028))],
    }
    for label, parts in organs.items():
        paint(parts, float(CT_PHANTOM_ORGANS[label][1]), label)
    paint([((0.5, 0.66, 0.5), (0.45, 0.045, 0.05))], 700.0)  # a vertebra, no label
    hu += rng.normal(0.0, noise, hu.shape).astype(np.float32)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), labels


def write_ct_phantom(root: Path, shape: tuple[int, int, int] = (100, 512, 512), *,
                     seed: int = 0) -> Path:
    """:func:`make_ct_phantom` as a one-volume MSD / nnU-Net NIfTI folder at ``root`` (needs
    nibabel): ``imagesTr/ct_phantom_0000.nii.gz``, ``labelsTr/ct_phantom.nii.gz`` (RAS, the
    spacing of :data:`CT_PHANTOM_SPACING` scaled to ``shape``) and ``dataset.json`` (written
    last: a folder with it is complete; its ``window`` is the abdomen preset). Read back
    axially it shows the arrays as made."""
    import nibabel as nib

    root = Path(root)
    volume, labels = make_ct_phantom(shape, seed=seed)
    scale = [base * full / n for base, full, n in zip(CT_PHANTOM_SPACING, (100, 512, 512), shape)]
    # the radiological display flips a RAS volume's rows and columns: flip them here, so that
    # the slices read back show the arrays as made
    affine = np.diag([scale[2], scale[1], scale[0], 1.0])
    for folder, data in (("imagesTr", volume), ("labelsTr", labels)):
        name = "ct_phantom_0000.nii.gz" if folder == "imagesTr" else "ct_phantom.nii.gz"
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(zyx_to_nifti(data[:, ::-1, ::-1]), affine), str(path))
    info = {"name": "ct_phantom", "channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
            "labels": {"background": 0, **{name: label for label, (name, _) in
                                            CT_PHANTOM_ORGANS.items()}},
            "window": "abdomen", "numTraining": 1,
            "description": "synthetic abdominal CT phantom, msagent.testing"}
    (root / "dataset.json").write_text(json.dumps(info, indent=1))
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
