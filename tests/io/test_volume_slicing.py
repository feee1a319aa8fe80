"""A slice of a volume costs O(slice), whatever the array's memory order (issue 26, item 1).

nibabel returns a NIfTI's data in Fortran order; ``np.take`` on such an array copies the whole
volume into C order before taking one slice. These tests read a NIfTI written to disk back
with nibabel and measure the memory one slice allocates (``tracemalloc`` sees NumPy's
allocations): deterministic, unlike a timing."""

import tracemalloc

import numpy as np
import pytest

from msagent import io

nib = pytest.importorskip("nibabel")

SHAPE = (64, 48, 200)  # int16: 1.2 MB; the largest slice is 25 KB


def peak_bytes(fn):
    """(fn(), the bytes allocated at most while it ran)."""
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
def nifti_volume(tmp_path_factory):
    data = np.random.default_rng(0).integers(-1000, 1000, size=SHAPE, dtype=np.int16)
    path = tmp_path_factory.mktemp("slicing") / "ct.nii.gz"
    io.write_nifti(data, path, affine=np.diag([0.8, 0.9, 2.0, 1.0]))
    volume = io.read_volume(path)
    assert volume.data.flags.f_contiguous and not volume.data.flags.c_contiguous  # as nibabel reads
    assert np.array_equal(volume.data, data)
    return volume


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_a_slice_of_a_fortran_ordered_nifti_copies_only_the_slice(nifti_volume, plane):
    c_ordered = io.Volume(np.ascontiguousarray(nifti_volume.data), nifti_volume.affine)
    for index in (0, nifti_volume.n_slices(plane) // 2, nifti_volume.n_slices(plane) - 1):
        image, peak = peak_bytes(lambda i=index: nifti_volume.slice(i, plane))
        assert np.array_equal(image, c_ordered.slice(index, plane))
        assert image.flags.c_contiguous
        # the slice itself and at most one scratch copy of it, never the volume
        assert peak <= 2 * image.nbytes + 4096 < nifti_volume.data.nbytes // 8, (plane, peak)


def test_take_slice_is_a_view_in_either_memory_order(nifti_volume):
    from msagent.io.volume import take_slice

    for data in (nifti_volume.data, np.ascontiguousarray(nifti_volume.data)):
        for axis in range(3):
            plane = take_slice(data, 5, axis)
            assert np.shares_memory(plane, data)
            assert np.array_equal(plane, np.take(data, 5, axis=axis))


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_put_slice_into_a_fortran_ordered_target_writes_in_place(nifti_volume, plane):
    target = np.zeros(SHAPE, dtype=bool, order="F")
    mask = nifti_volume.slice(3, plane) > 0
    _, peak = peak_bytes(lambda: nifti_volume.put_slice(target, mask, 3, plane))
    assert np.array_equal(nifti_volume.slice(3, plane) > 0, io.Volume(target, nifti_volume.affine).slice(3, plane))
    assert peak < target.nbytes // 8


def test_the_percentile_window_of_a_fortran_ordered_volume_copies_it_once(nifti_volume):
    (width, level), peak = peak_bytes(lambda: io.percentile_window(nifti_volume.data))
    assert (width, level) == io.percentile_window(np.ascontiguousarray(nifti_volume.data))
    assert peak < 1.5 * nifti_volume.data.nbytes  # np.percentile's own sorted copy, no C-order one
