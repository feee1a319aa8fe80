"""Medical I/O: NIfTI round trip, slice orientation, DICOM series, DICOM SEG, windowing,
16-bit PNG/TIFF, and ``msagent segment VOLUME`` on NIfTI and DICOM input."""

import copy

import numpy as np
import pytest

import msagent
from msagent import io
from msagent.errors import InvalidInput

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")


def oblique_affine():
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-40.5, 12.25, 7.0]
    return affine


def test_nifti_round_trip_keeps_affine_header_and_values(tmp_path):
    data = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7) - 100
    image = nib.Nifti1Image(data, oblique_affine())
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(oblique_affine(), code=1)
    image.set_sform(oblique_affine(), code=2)
    nib.save(image, tmp_path / "ct.nii.gz")
    volume = io.read_nifti(tmp_path / "ct.nii.gz")
    assert volume.data.dtype == np.int16 and np.array_equal(volume.data, data)
    assert np.allclose(volume.affine, oblique_affine(), atol=1e-5)
    mask = volume.data > 50
    io.write_mask_nifti(mask, tmp_path / "mask.nii.gz", volume)
    back = nib.load(tmp_path / "mask.nii.gz")
    assert np.allclose(back.affine, oblique_affine(), atol=1e-5)
    assert back.get_data_dtype() == np.uint8 and np.array_equal(np.asanyarray(back.dataobj) > 0, mask)
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())   # no temp files left


def test_nifti_scaling_is_applied(tmp_path):
    image = nib.Nifti1Image(np.full((2, 2, 2), 10, np.int16), np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii")
    assert np.all(io.read_nifti(tmp_path / "scaled.nii").data == 20 - 1024)


def marker_volume(affine_codes="RAS"):
    """A 10×12×8 volume with distinct markers toward the patient's right, anterior, superior."""
    data = np.zeros((10, 12, 8), np.int16)
    data[9, 6, 4] = 1    # max i: right in RAS
    data[5, 11, 4] = 2   # max j: anterior
    data[5, 6, 7] = 3    # max k: superior
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    if affine_codes == "LPS":  # same anatomy stored with i and j flipped
        data = data[::-1, ::-1, :].copy()
        affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        affine[:3, 3] = [9, 11, 0]
    return io.Volume(data, affine)


@pytest.mark.parametrize("codes", ["RAS", "LPS"])
def test_slices_are_displayed_radiologically(codes):
    volume = marker_volume(codes)
    axial = volume.slice(4, "axial")            # rows: anterior→posterior, cols: right→left
    assert axial.shape == (12, 10)
    assert tuple(np.argwhere(axial == 1)[0]) == (12 - 1 - 6, 0)      # patient's right on the left
    assert tuple(np.argwhere(axial == 2)[0]) == (0, 10 - 1 - 5)      # anterior at the top
    # slice indices are the file's voxel indices: the LPS file counts j and i the other way
    coronal = volume.slice(6 if codes == "RAS" else 5, "coronal")  # rows S→I, cols R→L
    assert coronal.shape == (8, 10) and tuple(np.argwhere(coronal == 3)[0]) == (0, 4)
    sagittal = volume.slice(5 if codes == "RAS" else 4, "sagittal")  # rows S→I, cols A→P
    assert sagittal.shape == (8, 12) and tuple(np.argwhere(sagittal == 2)[0]) == (3, 0)
    assert volume.slice_spacing("axial") == (1.0, 1.0)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_put_slice_inverts_slice(plane):
    volume = io.Volume(np.random.default_rng(0).random((6, 7, 5)), oblique_affine())
    target = np.zeros(volume.shape)
    for index in range(volume.n_slices(plane)):
        volume.put_slice(target, volume.slice(index, plane), index, plane)
    assert np.array_equal(target, volume.data)
    with pytest.raises(InvalidInput, match="outside"):
        volume.slice(99, plane)


def test_windowing_presets():
    assert io.parse_window("abdomen") == (400, 40) and io.parse_window("lung") == (1500, -600)
    assert io.parse_window("350/50") == (350, 50)
    with pytest.raises(InvalidInput, match="preset"):
        io.parse_window("bogus")
    hu = np.array([-1000, -160, 40, 240, 3000])
    assert io.apply_window(hu, 400, 40).tolist() == [0, 0, 128, 255, 255]
    width, level = io.percentile_window(np.arange(1001.0))
    assert level == pytest.approx(500) and width == pytest.approx(990)


def test_png16_and_tiff_keep_values(tmp_path):
    ramp = (np.arange(200 * 300) % 65536).astype(np.uint16).reshape(200, 300)
    io.save_png16(ramp, tmp_path / "ramp.png")
    assert io.load_array(tmp_path / "ramp.png").dtype == np.uint16
    assert np.array_equal(io.load_array(tmp_path / "ramp.png"), ramp)
    hu = np.random.default_rng(1).normal(0, 300, (40, 50)).astype(np.float32)
    io.save_tiff(hu, tmp_path / "hu.tif")
    assert np.array_equal(io.load_array(tmp_path / "hu.tif"), hu)
    assert io.to_rgb_uint8(tmp_path / "ramp.png").dtype == np.uint8


def dicom_series(folder, slices=4, spacing=2.5):
    """A CT series made from pydicom's CT_small.dcm: same pixels, positions along z, written in
    reverse order; each slice gets a marker so the order can be checked."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = copy.deepcopy(source)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.InstanceNumber = k + 1
        position = [float(v) for v in source.ImagePositionPatient]
        position[2] += spacing * k
        ds.ImagePositionPatient = position
        pixels = source.pixel_array.copy()
        pixels[0, 0] = 1000 + k
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"img{slices - k:03d}.dcm")
    return source, series


def test_dicom_series_is_sorted_rescaled_and_placed(tmp_path):
    source, _ = dicom_series(tmp_path / "ct")
    volume = io.read_volume(tmp_path / "ct")
    assert volume.shape == (128, 128, 4) and volume.modality == "CT"
    slope, intercept = float(source.RescaleSlope), float(source.RescaleIntercept)
    assert [volume.data[0, 0, k] for k in range(4)] == [(1000 + k) * slope + intercept for k in range(4)]
    expected = source.pixel_array * slope + intercept
    assert np.array_equal(volume.slice(2)[1:, 1:], expected[1:, 1:])  # axial = pixel data as stored
    row, col = (float(v) for v in source.PixelSpacing)
    assert volume.spacing == pytest.approx((col, row, 2.5))
    x, y, z = (float(v) for v in source.ImagePositionPatient)
    assert volume.affine[:3, 3] == pytest.approx([-x, -y, z])       # LPS → RAS
    assert volume.axcodes == ("L", "P", "S")
    single = io.read_volume(pydicom.data.get_testdata_file("MR_small.dcm"))
    assert single.shape == (64, 64, 1) and single.modality == "MR"


def test_dicom_seg_references_the_source_series(tmp_path):
    hd = pytest.importorskip("highdicom")
    _, series = dicom_series(tmp_path / "ct")
    volume = io.read_volume(tmp_path / "ct")
    mask = np.zeros(volume.shape, bool)
    mask[30:70, 40:90, 1] = True
    mask[50:60, 50:60, 2] = True
    path = io.write_dicom_seg(mask, volume, tmp_path / "seg.dcm", label="liver")
    seg = hd.seg.segread(path)
    raw = pydicom.dcmread(path)
    assert raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and raw.Modality == "SEG"
    source_uids = {ds.SOPInstanceUID for ds in volume.datasets}
    referenced = {item.ReferencedSOPInstanceUID
                  for item in raw.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == series and referenced == source_uids
    first = volume.datasets[0]
    assert raw.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert raw.StudyInstanceUID == first.StudyInstanceUID and raw.PatientID == first.PatientID
    assert seg.get_segment_description(1).segment_label == "liver"
    for k, ds in enumerate(volume.datasets):
        frame = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[ds.SOPInstanceUID], segment_numbers=[1])[0, :, :, 0]
        assert np.array_equal(frame.astype(bool), mask[:, :, k].T)
    with pytest.raises(InvalidInput, match="DICOM series"):
        io.write_dicom_seg(mask, io.Volume(volume.data, volume.affine), tmp_path / "x.dcm")


def phantom_volume(slices=3):
    """Bright ellipses (growing with k) on a dark background: (volume data, label data)."""
    yy, xx = np.mgrid[:48, :64]
    labels = np.zeros((64, 48, slices), np.uint8)
    data = np.full((64, 48, slices), 100, np.int16)
    for k in range(slices):
        ellipse = ((yy - 24) / (8 + 2 * k)) ** 2 + ((xx - 30) / (12 + 2 * k)) ** 2 <= 1
        labels[:, :, k] = ellipse.T
        data[:, :, k][ellipse.T] = 900
    return data, labels


def run_cli(argv):
    from msagent.cli import main

    return main(argv)


def test_segment_nifti_volume_writes_an_aligned_mask(tmp_path, monkeypatch):
    data, labels = phantom_volume()
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "vol.nii.gz")
    nib.save(nib.Nifti1Image(labels * 3, oblique_affine()), tmp_path / "labels.nii.gz")
    out = tmp_path / "mask.nii.gz"
    code = run_cli(["segment", str(tmp_path / "vol.nii.gz"), "ellipse", "--slices", "0:2",
                    "--backbone", "mybackbone", "--policy", "oracle-box", "--label", "3",
                    "--backbone-option", "threshold=100",
                    "--ground-truth", str(tmp_path / "labels.nii.gz"), "--out", str(out),
                    "--trajectory", str(tmp_path / "slices.jsonl")])
    assert code == 0
    mask = nib.load(out)
    assert np.allclose(mask.affine, oblique_affine(), atol=1e-5) and mask.shape == data.shape
    result = np.asanyarray(mask.dataobj) > 0
    assert np.array_equal(result[:, :, :2], labels[:, :, :2] > 0) and not result[:, :, 2].any()
    assert len((tmp_path / "slices.jsonl").read_text().splitlines()) == 2


def test_segment_dicom_series_writes_dicom_seg(tmp_path):
    pytest.importorskip("highdicom")
    dicom_series(tmp_path / "ct", slices=2)
    volume = io.read_volume(tmp_path / "ct")
    labels = np.zeros(volume.shape, np.uint8)
    labels[40:80, 30:70, :] = 1
    io.write_mask_nifti(labels, tmp_path / "gt.nii.gz", io.Volume(volume.data, volume.affine))
    code = run_cli(["segment", str(tmp_path / "ct"), "organ", "--window", "abdomen",
                    "--backbone", "mybackbone", "--policy", "oracle-box",
                    "--ground-truth", str(tmp_path / "gt.nii.gz"),
                    "--out", str(tmp_path / "mask.nii.gz"), "--dicom-seg", str(tmp_path / "seg.dcm")])
    assert code == 0
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert seg.NumberOfFrames == 2
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.datasets[0].SeriesInstanceUID
    assert nib.load(tmp_path / "mask.nii.gz").shape == volume.shape


def _stored_windows(folder, width="350", level="50"):
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.WindowWidth, ds.WindowCenter = width, level
        ds.save_as(path)


@pytest.mark.parametrize("window", [None, "auto", "lung", "300/20"])
def test_the_cli_the_server_and_the_nifti_datasets_choose_the_same_window(tmp_path, window):
    """One rule (io.choose_window): a given window, else a CT's stored one, else percentiles."""
    from msagent.cli._volume import window_for
    from msagent.datasets.nifti import _window
    from msagent.webapp.volumes.store import read_volume_upload

    def server(paths):
        files = [(p.name, p.read_bytes()) for p in paths]
        return read_volume_upload(files, max_bytes=1 << 30).window_for(window)

    dicom_series(tmp_path / "ct")
    _stored_windows(tmp_path / "ct")
    ct = io.read_volume(tmp_path / "ct")
    chosen = io.choose_window(ct, window)
    assert chosen.source == ("dicom" if window in (None, "auto") else "given")
    assert window_for(ct, window) == server(sorted((tmp_path / "ct").glob("*.dcm"))) == chosen.pair

    nifti = tmp_path / "mr.nii.gz"
    io.write_nifti((np.random.default_rng(0).normal(size=(6, 7, 5)) * 100).astype(np.float32),
                   nifti, affine=np.eye(4))
    volume = io.read_nifti(nifti)
    expected = io.choose_window(volume, window)
    assert expected.source == ("percentile" if window in (None, "auto") else "given")
    assert window_for(volume, window) == server([nifti]) == _window(str(nifti), window) == expected.pair


def test_a_stored_window_is_used_for_ct_only(tmp_path):
    dicom_series(tmp_path / "ct")
    _stored_windows(tmp_path / "ct")
    ct = io.read_volume(tmp_path / "ct")
    assert io.choose_window(ct).pair == (350.0, 50.0)
    mr = io.Volume(ct.data, ct.affine, datasets=ct.datasets, modality="MR")
    assert io.choose_window(mr).source == "percentile"


def test_segment_3d_writes_an_aligned_nifti_and_the_run(tmp_path, capsys):
    data, labels = phantom_volume()
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "vol.nii.gz")
    nib.save(nib.Nifti1Image(labels * 3, oblique_affine()), tmp_path / "labels.nii.gz")
    out = tmp_path / "mask.nii.gz"
    code = run_cli(["segment", str(tmp_path / "vol.nii.gz"), "ellipse", "--3d",
                    "--backbone", "mybackbone", "--policy", "oracle-box", "--label", "3",
                    "--backbone-option", "threshold=100", "--review-slices", "1",
                    "--ground-truth", str(tmp_path / "labels.nii.gz"), "--out", str(out),
                    "--trajectory", str(tmp_path / "run.json")])
    assert code == 0
    mask = nib.load(out)
    assert np.allclose(mask.affine, oblique_affine(), atol=1e-5) and mask.shape == data.shape
    assert np.array_equal(np.asanyarray(mask.dataobj) > 0, labels > 0)
    run = msagent.VolumeTrajectory.from_json((tmp_path / "run.json").read_text())
    assert run.key_rule == "largest_gt_area" and run.propagation == "generic"
    printed = capsys.readouterr().out
    assert f"key slice {run.key_slice}" in printed and "3-D Dice 1.000" in printed


def test_segment_3d_dicom_series_writes_dicom_seg(tmp_path):
    pytest.importorskip("highdicom")
    dicom_series(tmp_path / "ct", slices=3)
    volume = io.read_volume(tmp_path / "ct")
    labels = np.zeros(volume.shape, np.uint8)
    labels[40:80, 30:70, :] = 1
    io.write_mask_nifti(labels, tmp_path / "gt.nii.gz", io.Volume(volume.data, volume.affine))
    code = run_cli(["segment", str(tmp_path / "ct"), "organ", "--3d", "--window", "abdomen",
                    "--backbone", "mybackbone", "--policy", "oracle-box",
                    "--ground-truth", str(tmp_path / "gt.nii.gz"), "--dicom-seg", str(tmp_path / "seg.dcm")])
    assert code == 0
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert seg.NumberOfFrames == 3
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.datasets[0].SeriesInstanceUID


@pytest.mark.parametrize("extra, message", [
    (["--slices", "0:2"], "--slices chooses slices"),
    (["--initial-mask", "x.nii.gz"], "--initial-mask is for slice-by-slice"),
])
def test_segment_3d_refuses_slice_options(tmp_path, capsys, extra, message):
    data, labels = phantom_volume()
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "vol.nii.gz")
    code = run_cli(["segment", str(tmp_path / "vol.nii.gz"), "ellipse", "--3d",
                    "--backbone", "mybackbone", "--policy", "oracle-box", *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_key_slice_needs_3d(tmp_path, capsys):
    data, _ = phantom_volume()
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "vol.nii.gz")
    assert run_cli(["segment", str(tmp_path / "vol.nii.gz"), "ellipse", "--key-slice", "1",
                    "--backbone", "mybackbone", "--policy", "oracle-box"]) == 2
    assert "add --3d" in capsys.readouterr().err
    assert run_cli(["segment", str(tmp_path / "x.png"), "ellipse", "--3d"]) == 2
