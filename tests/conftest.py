"""Shared fixtures: phantoms (synthetic images with known masks), an MNI152 slice, backbones."""

from __future__ import annotations

import numpy as np
import pytest


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


@pytest.fixture
def phantom():
    return make_phantom()


@pytest.fixture(scope="session")
def mni_slice():
    """An axial MRI slice of the MNI152 T1 template (nilearn) with its brain mask."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2).get_fdata()
    brain = datasets.load_mni152_brain_mask(resolution=2).get_fdata()
    z = template.shape[2] // 2
    return np.rot90(template[:, :, z]).copy(), np.rot90(brain[:, :, z] > 0).copy()


@pytest.fixture(scope="session")
def litemedsam():
    import msagent

    return msagent.load_segmenter("litemedsam", device="cpu")
