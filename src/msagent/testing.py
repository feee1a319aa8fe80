"""Test and demo data: synthetic phantoms with known masks, and real MRI slices.

``mni152_slice`` needs nilearn (``pip install nilearn``), which ships the MNI152 T1 template
and its brain, grey- and white-matter masks, so no download is involved.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

MNI_TARGETS = {"brain": "brain", "gray matter": "gm", "white matter": "wm"}


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
    revision = "0123456789abcdef0123456789abcdef01234567"
    target = repo / "snapshots" / revision / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copyfile(source, target)
    return target
