"""Edge cases of NIfTI and 2-D image I/O, checked with readers msagent does not use itself:
SimpleITK (ITK's NIfTI reader, which honours the qform) and tifffile.

qform ≠ sform, mask headers and dtypes, 16-bit colour PNG/TIFF, multi-page TIFF, int16 TIFF,
the voxel limit (decompression bombs) and NaN/inf voxels."""

import gzip
import logging
import tracemalloc

import numpy as np
import pytest

from msagent import io
from msagent.errors import InvalidImage, InvalidMask

nib = pytest.importorskip("nibabel")
sitk = pytest.importorskip("SimpleITK")


def rotated(degrees, offset):
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = offset
    return affine


def ct_with_forms(path, qform_code=1, sform_code=2):
    """A CT whose qform (10°, code 1) and sform (25°, code 2) disagree, with a display range."""
    data = (np.arange(9 * 10 * 6).reshape(9, 10, 6) % 500 - 100).astype(np.int16)
    image = nib.Nifti1Image(data, None)
    image.set_qform(rotated(10, [-55.0, -90.9, 7.0]), code=qform_code)
    image.set_sform(rotated(25, [-29.6, -102.1, 7.0]), code=sform_code)
    image.header["cal_min"], image.header["cal_max"] = -100.0, 400.0
    image.header["descrip"] = b"CT abdomen venous"
    nib.save(image, path)
    return data


def sitk_geometry(path):
    image = sitk.ReadImage(str(path))
    return image.GetOrigin(), image.GetDirection(), image.GetSpacing()


def sitk_meta(path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}


@pytest.mark.parametrize("qform_code, sform_code", [(1, 2), (0, 2), (1, 0)])
def test_mask_keeps_qform_and_sform_so_itk_places_it_on_the_image(tmp_path, qform_code, sform_code):
    ct_with_forms(tmp_path / "ct.nii.gz", qform_code, sform_code)
    volume = io.read_nifti(tmp_path / "ct.nii.gz")
    io.write_mask_nifti(volume.data > 100, tmp_path / "mask.nii.gz", volume)
    image_origin, image_direction, image_spacing = sitk_geometry(tmp_path / "ct.nii.gz")
    mask_origin, mask_direction, mask_spacing = sitk_geometry(tmp_path / "mask.nii.gz")
    assert mask_origin == pytest.approx(image_origin, abs=1e-4)
    assert mask_direction == pytest.approx(image_direction, abs=1e-6)
    assert mask_spacing == pytest.approx(image_spacing, abs=1e-6)
    meta = sitk_meta(tmp_path / "mask.nii.gz")
    assert (meta["qform_code"], meta["sform_code"]) == (str(qform_code), str(sform_code))
    written = nib.load(tmp_path / "mask.nii.gz").header
    source = nib.load(tmp_path / "ct.nii.gz").header
    for coded in ("get_qform", "get_sform"):
        if getattr(source, coded)(coded=True)[1]:
            assert np.allclose(getattr(written, coded)(), getattr(source, coded)(), atol=1e-5)


def test_mask_on_ground_truth_voxels_in_itk(tmp_path):
    """Every voxel SimpleITK reads as foreground in the mask is where msagent put it, and sits
    at the same physical point as that voxel of the image."""
    ct_with_forms(tmp_path / "ct.nii.gz")
    volume = io.read_nifti(tmp_path / "ct.nii.gz")
    mask = np.zeros(volume.shape, bool)
    mask[2:5, 3:8, 1:4] = True
    io.write_mask_nifti(mask, tmp_path / "mask.nii.gz", volume)
    itk_mask, itk_image = sitk.ReadImage(str(tmp_path / "mask.nii.gz")), sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(itk_mask).transpose(2, 1, 0) > 0, mask)
    index = (4, 7, 3)
    assert itk_mask.TransformIndexToPhysicalPoint(index) == \
        pytest.approx(itk_image.TransformIndexToPhysicalPoint(index), abs=1e-4)


def test_mask_header_has_no_image_display_range(tmp_path):
    ct_with_forms(tmp_path / "ct.nii.gz")
    volume = io.read_nifti(tmp_path / "ct.nii.gz")
    io.write_mask_nifti(volume.data > 100, tmp_path / "mask.nii.gz", volume)
    meta = sitk_meta(tmp_path / "mask.nii.gz")
    assert float(meta["cal_min"]) == 0 and float(meta["cal_max"]) == 0
    assert "CT abdomen" not in meta["descrip"]
    assert sitk_meta(tmp_path / "ct.nii.gz")["cal_max"] == "400"  # the image itself untouched


@pytest.mark.parametrize("labels, pixel_type", [
    (np.array([0, 1]), "8-bit unsigned integer"),
    (np.array([0, 255]), "8-bit unsigned integer"),
    (np.array([0, 300, 7]), "16-bit unsigned integer"),
    (np.array([0.0, 2.0]), "8-bit unsigned integer"),
])
def test_mask_dtype_follows_the_labels(tmp_path, labels, pixel_type):
    reference = io.Volume(np.zeros((4, 4, 4), np.int16), np.eye(4))
    mask = np.zeros((4, 4, 4), labels.dtype)
    mask[0, 0, : labels.size] = labels
    io.write_mask_nifti(mask, tmp_path / "m.nii.gz", reference)
    itk = sitk.ReadImage(str(tmp_path / "m.nii.gz"))
    assert itk.GetPixelIDTypeAsString() == pixel_type
    assert np.array_equal(sitk.GetArrayFromImage(itk).transpose(2, 1, 0), mask)


@pytest.mark.parametrize("value, message", [
    (-1, "negative"), (0.6, "non-integer"), (np.nan, "NaN"), (70000, "65535")])
def test_mask_values_that_would_be_cast_wrongly_are_refused(tmp_path, value, message):
    reference = io.Volume(np.zeros((3, 3, 3), np.int16), np.eye(4))
    mask = np.zeros((3, 3, 3), np.float64 if isinstance(value, float) else np.int64)
    mask[1, 1, 1] = value
    with pytest.raises(InvalidMask, match=message):
        io.write_mask_nifti(mask, tmp_path / "m.nii.gz", reference)
    assert not (tmp_path / "m.nii.gz").exists()


def test_two_d_and_four_d_nifti_errors_say_what_to_do(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 9), np.float32), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(InvalidImage, match="2-D image") as info:
        io.read_nifti(tmp_path / "flat.nii")
    assert "4-D" not in str(info.value)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(InvalidImage, match="split the 4-D"):
        io.read_nifti(tmp_path / "t.nii")


# -- 2-D images at full depth ----------------------------------------------------------------
def rgb16():
    yy, xx = np.mgrid[:24, :32]
    return np.stack([1000 + xx, 1000 + yy, 1100 - xx], axis=2).astype(np.uint16)


def test_16_bit_rgb_png_is_read_at_full_depth_and_windowed(tmp_path):
    rgb = rgb16()
    itk = sitk.GetImageFromArray(rgb, isVector=True)  # ITK's PNG writer: 16-bit RGB
    sitk.WriteImage(itk, str(tmp_path / "rgb16.png"))
    assert sitk.ReadImage(str(tmp_path / "rgb16.png")).GetPixelIDTypeAsString() == \
        "vector of 16-bit unsigned integer"
    loaded = io.load_array(tmp_path / "rgb16.png")
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, rgb)
    shown = io.to_rgb_uint8(tmp_path / "rgb16.png")
    assert shown.min() == 0 and shown.max() == 255   # windowed, not cut to values 3–4
    assert shown[0, -1, 0] > shown[0, 0, 0] and shown[0, -1, 2] < shown[0, 0, 2]  # colours kept


def test_16_bit_rgb_and_int16_tiff_at_full_depth(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16(), photometric="rgb")
    assert np.array_equal(io.load_array(tmp_path / "rgb16.tif"), rgb16())
    assert np.ptp(io.to_rgb_uint8(tmp_path / "rgb16.tif")) == 255
    hu = np.arange(-1024, 1024, dtype=np.int16).reshape(32, 64)
    io.save_tiff(hu, tmp_path / "hu.tif")
    with tifffile.TiffFile(tmp_path / "hu.tif") as tif:
        page = tif.pages[0]
        assert (page.bitspersample, page.sampleformat, page.dtype) == (16, 2, np.dtype(np.int16))
    assert np.array_equal(tifffile.imread(tmp_path / "hu.tif"), hu)
    back = io.load_array(tmp_path / "hu.tif")
    assert back.dtype == np.int16 and np.array_equal(back, hu)


def test_multi_page_tiff_is_refused_with_the_page_count(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 16, 16), np.uint16), photometric="minisblack")
    assert len(tifffile.TiffFile(tmp_path / "stack.tif").pages) == 5
    with pytest.raises(InvalidImage, match="5 pages"):
        io.load_array(tmp_path / "stack.tif")


# -- decompression bombs -----------------------------------------------------------------------
def header_only_nifti(path, shape, dtype=np.int16):
    """A .nii.gz whose header claims ``shape`` but holds almost no data (a few hundred bytes)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    return path


def test_nifti_bomb_is_refused_from_its_header(tmp_path):
    path = header_only_nifti(tmp_path / "bomb.nii.gz", (4000, 4000, 4000))
    assert path.stat().st_size < 1000 and nib.load(path).shape == (4000, 4000, 4000)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImage, match="64,000,000,000 voxels"):
            io.read_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20


def test_compressed_zeros_over_the_env_limit_are_refused(tmp_path, monkeypatch):
    nib.save(nib.Nifti1Image(np.zeros((160, 160, 80), np.uint8), np.eye(4)), tmp_path / "z.nii.gz")
    assert (tmp_path / "z.nii.gz").stat().st_size < 100_000      # 2 MB of voxels, compressed
    monkeypatch.setenv("MSAGENT_MAX_VOXELS", "1000000")
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImage, match="over the limit of 1,000,000"):
            io.read_nifti(tmp_path / "z.nii.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert io.read_nifti(tmp_path / "z.nii.gz", max_voxels=2_048_000).shape == (160, 160, 80)
    monkeypatch.setenv("MSAGENT_MAX_VOXELS", "lots")
    with pytest.raises(Exception, match="MSAGENT_MAX_VOXELS"):
        io.read_nifti(tmp_path / "z.nii.gz")


def test_default_voxel_limit_is_documented_value(monkeypatch):
    monkeypatch.delenv("MSAGENT_MAX_VOXELS", raising=False)
    assert io.max_voxels_limit() == io.DEFAULT_MAX_VOXELS == 2**29


# -- NaN and inf voxels ----------------------------------------------------------------------
def test_nan_and_inf_voxels_are_left_out_of_the_window_and_shown_black(tmp_path, caplog):
    rng = np.random.default_rng(3)
    data = rng.normal(100, 20, (12, 10, 4)).astype(np.float32)
    data[:3, :, :] = np.nan
    data[5, 5, 2], data[6, 6, 2] = np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "pet.nii.gz")
    with caplog.at_level(logging.WARNING, logger="msagent.io.nifti"):
        volume = io.read_nifti(tmp_path / "pet.nii.gz")
    assert "122 of 480 voxels are NaN or infinite" in caplog.text
    finite = data[np.isfinite(data)].astype(np.float64)
    low, high = np.percentile(finite, [0.5, 99.5])
    width, level = io.percentile_window(volume.data)
    assert width == pytest.approx(high - low) and level == pytest.approx((high + low) / 2)
    shown = io.apply_window(volume.data, width, level)
    assert not shown[:3].any() and shown[5, 5, 2] == 0 and shown[6, 6, 2] == 0
    assert shown[np.isfinite(data)].max() == 255
    everything_nan = io.Volume(np.full((2, 2, 2), np.nan, np.float32), np.eye(4))
    with pytest.raises(InvalidImage, match="no finite values"):
        io.percentile_window(everything_nan.data)


def test_two_d_images_with_nan_are_refused():
    with pytest.raises(InvalidImage, match="NaN"):
        io.to_rgb_uint8(np.array([[0.0, np.nan], [1.0, 2.0]]))


def test_every_writer_goes_through_one_atomic_rename_and_leaves_no_temporary(tmp_path, monkeypatch):
    """PNG, 16-bit PNG, TIFF, NIfTI and the dataset CSV are written by io.atomic (fsync, then
    os.replace); a failed write leaves the old file and no temporary behind."""
    import errno
    import os

    from msagent.datasets.folder import write_folder
    from msagent.errors import OutputError
    from msagent.io import atomic

    renames = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (renames.append(os.path.basename(b)), real_replace(a, b)))
    image = np.zeros((4, 5), np.uint8)
    io.save_png(image, tmp_path / "a.png")
    io.save_png16(np.zeros((4, 5), np.uint16), tmp_path / "b.png")
    io.save_tiff(np.zeros((4, 5), np.uint16), tmp_path / "c.tif")
    io.write_nifti(np.zeros((3, 4, 5), np.float32), tmp_path / "d.nii.gz", affine=np.eye(4))
    write_folder(tmp_path, [{"image": "a.png", "mask": "a.png", "target": "x"}])
    assert renames == ["a.png", "b.png", "c.tif", "d.nii.gz", "targets.csv"]
    assert io.read_nifti(tmp_path / "d.nii.gz").shape == (3, 4, 5)

    def full(a, b):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    for write in (lambda: io.save_png(image + 1, tmp_path / "a.png"),
                  lambda: io.write_nifti(np.ones((3, 4, 5), np.float32), tmp_path / "d.nii.gz",
                                         affine=np.eye(4))):
        with pytest.raises(OutputError, match="the disk is full"):
            write()
    assert not io.load_array(tmp_path / "a.png").any()  # the old file is intact
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_writer_error_that_is_not_the_file_system_propagates_as_it_is(tmp_path):
    from msagent.io.atomic import atomic_output

    with pytest.raises(ValueError, match="bad data"):
        with atomic_output(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"half")
            raise ValueError("bad data")
    assert list(tmp_path.iterdir()) == []
