"""The stack builder slices a Fortran-ordered volume (a NIfTI as nibabel reads it) without
copying the whole volume per slice (issue 26, item 1): ``build_stack``, ``label_stack`` and
``SlicedVolume.to_display`` allocate their output and a slice's scratch, never a volume per
slice. Measured with ``tracemalloc`` (NumPy reports its allocations to it): deterministic."""

import tracemalloc

import numpy as np
import pytest

from msagent import io
from msagent.errors import InvalidMask
from msagent.volume.stack import build_stack, label_stack

nib = pytest.importorskip("nibabel")

SHAPE = (64, 60, 56)  # int16: 430 KB; a slice's float64 scratch stays well below it
SCRATCH = 48  # bytes per slice pixel: apply_window's float64 temporaries (a few alive at once)


def peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack-slicing")
    rng = np.random.default_rng(1)
    data = rng.integers(-1000, 1000, size=SHAPE, dtype=np.int16)
    labels = (rng.random(SHAPE) > 0.7).astype(np.uint8) * 2
    affine = np.diag([0.8, 0.9, 2.0, 1.0])
    io.write_nifti(data, folder / "ct.nii.gz", affine=affine)
    io.write_nifti(labels, folder / "labels.nii.gz", affine=affine)
    volume, label_volume = io.read_volume(folder / "ct.nii.gz"), io.read_volume(folder / "labels.nii.gz")
    assert volume.data.flags.f_contiguous and label_volume.data.flags.f_contiguous
    return volume, label_volume


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_build_stack_on_a_fortran_ordered_nifti_allocates_the_stack_not_a_volume_per_slice(files, plane):
    volume, _ = files
    sliced, peak = peak_bytes(lambda: build_stack(volume, plane=plane, window="400/40"))
    c_ordered = build_stack(io.Volume(np.ascontiguousarray(volume.data), volume.affine),
                            plane=plane, window="400/40")
    assert np.array_equal(sliced.slices.gray, c_ordered.slices.gray)
    # the uint8 stack plus a slice's float scratch; a copy of the volume per slice adds 2× the stack
    gray = sliced.slices.gray
    assert peak < gray.nbytes + SCRATCH * gray[0].size < gray.nbytes + volume.data.nbytes, (plane, peak)


def test_build_stack_on_a_fortran_ordered_array_does_not_copy_it_per_slice(files):
    volume, _ = files
    array = volume.data  # Fortran order, sliced along axis 2
    sliced, peak = peak_bytes(lambda: build_stack(array, axis=2, spacing=(0.8, 0.9, 2.0), window="400/40"))
    assert np.array_equal(sliced.slices.gray[7], io.apply_window(array[:, :, 7], 400, 40))
    gray = sliced.slices.gray
    assert peak < gray.nbytes + SCRATCH * gray[0].size < gray.nbytes + array.nbytes, peak


@pytest.mark.parametrize("label", [None, 2])
def test_label_stack_and_to_display_on_fortran_ordered_labels(files, label):
    volume, labels = files
    sliced = build_stack(volume, plane="coronal", window="400/40")
    masks, peak = peak_bytes(lambda: label_stack(labels, sliced, "ground truth", label))
    expected = np.stack([labels.slice(j, "coronal") == 2 for j in range(sliced.slices.count)])
    assert masks.dtype == bool and np.array_equal(masks, expected)
    # the bool output and a slice's scratch: no bool volume, no C-ordered copy per slice
    assert peak < masks.nbytes + labels.data.nbytes // 4, peak
    display, peak = peak_bytes(lambda: sliced.to_display(labels.data))
    assert np.array_equal(display != 0, expected)
    assert peak < display.nbytes + labels.data.nbytes // 4, peak


def test_to_voxels_inverts_to_display_on_a_fortran_ordered_volume(files):
    volume, labels = files
    sliced = build_stack(volume, plane="sagittal", window="400/40")
    masks = label_stack(labels, sliced, "ground truth")
    assert np.array_equal(sliced.to_voxels(masks), labels.data != 0)


def test_a_float_label_volume_with_nan_is_refused(files):
    volume, labels = files
    sliced = build_stack(volume, plane="axial", window="400/40")
    bad = labels.data.astype(np.float32)
    bad[3, 4, 5] = np.nan
    with pytest.raises(InvalidMask, match="finite"):
        label_stack(bad, sliced, "ground truth")
