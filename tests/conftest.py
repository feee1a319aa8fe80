"""Shared fixtures: phantoms (synthetic images with known masks), an MNI152 slice, backbones."""

from __future__ import annotations

import pytest

from msagent.testing import make_phantom, mni152_slice


@pytest.fixture
def phantom():
    return make_phantom()


@pytest.fixture(scope="session")
def mni_slice():
    """An axial MRI slice of the MNI152 T1 template (nilearn) with its brain mask."""
    return mni152_slice("brain", resolution=2)


@pytest.fixture(scope="session")
def litemedsam():
    import msagent

    return msagent.load_backbone("litemedsam", device="cpu")
