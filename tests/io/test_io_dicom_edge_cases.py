"""DICOM series edge cases, checked against readers msagent does not use itself: SimpleITK
(ITK/GDCM's series reader) for geometry and values, pydicom/highdicom for what a DICOM SEG
records. Missing and duplicate slices, several series, nested and mixed folders, the voxel
limit, and ``msagent segment`` refusing impossible outputs before any slice is segmented."""

import numpy as np
import pytest

from msagent import io
from msagent.errors import InvalidImage, InvalidInput
from msagent.testing import write_dicom_series as write_series

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")
nib = pytest.importorskip("nibabel")
LPS = np.diag([-1.0, -1.0, 1.0])


def sitk_series(folder, uid=None, recursive=False):
    reader = sitk.ImageSeriesReader()
    uid = uid or reader.GetGDCMSeriesIDs(str(folder))[0]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid, False, recursive))
    return reader.Execute()


def assert_matches_itk(volume, itk):
    """msagent's RAS affine and data against SimpleITK's LPS origin/direction/spacing/array."""
    assert volume.affine[:3, 3] * [-1, -1, 1] == pytest.approx(itk.GetOrigin(), abs=1e-4)
    assert volume.spacing == pytest.approx(itk.GetSpacing(), abs=1e-4)
    directions = LPS @ volume.affine[:3, :3] / np.array(volume.spacing)
    assert directions.ravel() == pytest.approx(itk.GetDirection(), abs=1e-5)
    assert np.array_equal(volume.data, sitk.GetArrayFromImage(itk).transpose(2, 1, 0).astype(np.float32))


def test_oblique_unsorted_series_matches_simpleitk(tmp_path):
    write_series(tmp_path / "ct", [0, 2.5, 5, 7.5, 10], oblique=True, spacing=(0.6, 0.8))
    assert_matches_itk(io.read_volume(tmp_path / "ct"), sitk_series(tmp_path / "ct"))


@pytest.mark.parametrize("offsets, message", [
    ([0, 2.5, 5, 10, 12.5], r"5\.000 mm between"),        # slice at 7.5 missing
    ([0, 2.5, 5, 5, 7.5], "same position"),               # a duplicate position
    ([0, 0, 0, 0], "same position"),                      # zero spacing throughout
])
def test_missing_or_duplicate_slices_are_refused_with_the_positions(tmp_path, offsets, message):
    write_series(tmp_path / "ct", offsets)
    with pytest.raises(InvalidImage, match=message) as info:
        io.read_volume(tmp_path / "ct")
    assert "allow_irregular" in str(info.value)


def test_missing_slice_opt_in_writes_a_seg_with_true_positions_and_no_nifti(tmp_path):
    hd = pytest.importorskip("highdicom")
    offsets = [0, 2.5, 5, 10, 12.5]
    write_series(tmp_path / "ct", offsets)
    volume = io.read_volume(tmp_path / "ct", allow_irregular=True)
    assert "5.000 mm" in volume.irregular and volume.shape[2] == 5
    # SimpleITK stacks the same five files with one uniform step: slice 3 lands 1.9 mm off
    itk = sitk_series(tmp_path / "ct")
    true_z = [float(ds.ImagePositionPatient[2]) for ds in volume.datasets]
    itk_z = [itk.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(5)]
    assert max(abs(a - b) for a, b in zip(true_z, itk_z)) > 1.0
    mask = np.zeros(volume.shape, bool)
    mask[20:60, 30:80, :] = True
    with pytest.raises(InvalidImage, match="DICOM SEG instead"):
        io.write_mask_nifti(mask, tmp_path / "m.nii.gz", volume)
    assert not (tmp_path / "m.nii.gz").exists()
    path = io.write_dicom_seg(mask, volume, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    source_z = {ds.SOPInstanceUID: float(ds.ImagePositionPatient[2]) for ds in volume.datasets}
    frame_z = {}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        frame_z[uid] = float(frame.PlanePositionSequence[0].ImagePositionPatient[2])
    assert frame_z == pytest.approx(source_z)
    assert hd.seg.segread(path).number_of_segments == 1


def test_several_series_are_listed_and_one_is_picked(tmp_path):
    first = write_series(tmp_path / "study", [0, 2.5, 5], description="arterial", number=3,
                         names=["a1.dcm", "a2.dcm", "a3.dcm"])
    second = write_series(tmp_path / "study", [0, 5], description="venous", number=4,
                          names=["v1.dcm", "v2.dcm"])
    with pytest.raises(InvalidInput, match="--series-uid") as info:
        io.read_volume(tmp_path / "study")
    text = str(info.value)
    assert first in text and second in text and "'arterial'" in text and "'venous'" in text
    assert set(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(tmp_path / "study"))) == {first, second}
    picked = io.read_volume(tmp_path / "study", series_uid=second)
    assert_matches_itk(picked, sitk_series(tmp_path / "study", second))
    with pytest.raises(InvalidInput, match="venous"):
        io.read_volume(tmp_path / "study", series_uid="1.2.3")


def test_nested_and_mixed_folders(tmp_path):
    write_series(tmp_path / "patient", [0, 2.5, 5],
                 names=["study/series/s1", "study/series/s2", "study/series/s3"])  # no suffix
    (tmp_path / "patient" / "README.txt").write_text("exported from PACS")
    assert io.is_dicom(tmp_path / "patient")
    volume = io.read_volume(tmp_path / "patient")
    assert_matches_itk(volume, sitk_series(tmp_path / "patient" / "study" / "series"))
    # a DICOM SEG written next to its series is not a second series
    io.write_dicom_seg(np.ones(volume.shape, bool), volume, tmp_path / "patient" / "seg.dcm")
    assert io.read_volume(tmp_path / "patient").shape == volume.shape


def test_empty_and_non_dicom_folders_have_their_own_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidImage, match="is empty"):
        io.read_volume(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(InvalidImage, match=r"no DICOM files .* a\.txt"):
        io.read_volume(tmp_path / "notes")


def test_dicom_series_over_the_voxel_limit_is_refused_before_pixels(tmp_path, monkeypatch):
    write_series(tmp_path / "ct", [0, 2.5, 5, 7.5])
    reads = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: reads.append(k) or real(*a, **k))
    with pytest.raises(InvalidImage, match="65,536 voxels"):
        io.read_volume(tmp_path / "ct", max_voxels=128 * 128 * 3)
    assert reads and all(k.get("stop_before_pixels") for k in reads)
    assert io.read_volume(tmp_path / "ct", max_voxels=128 * 128 * 4).shape == (128, 128, 4)


# -- msagent segment: options and outputs are checked before the work ------------------------
def run_cli(argv):
    from msagent.cli import main

    return main(argv)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any slice or image is segmented."""
    import msagent.agent

    def refuse(*args, **kwargs):
        raise AssertionError("an episode ran before the outputs were checked")

    monkeypatch.setattr(msagent.agent.Agent, "run", refuse)


def nifti_volume(tmp_path):
    data = np.zeros((16, 16, 3), np.int16)
    data[4:10, 5:12, :] = 900
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "vol.nii.gz")
    return str(tmp_path / "vol.nii.gz")


@pytest.mark.parametrize("outputs, message", [
    (["--dicom-seg", "seg.dcm"], "needs DICOM input"),
    (["--out", "seg.dcm"], "needs DICOM input"),
    (["--out", "mask.png"], "PNG masks are for 2-D images"),
    (["--overlay", "o.png"], "--overlay is for 2-D images"),
    (["--dicom-seg", "seg.nii.gz"], "ends in .dcm"),
])
def test_volume_outputs_are_checked_before_segmenting(tmp_path, capsys, no_work, outputs, message):
    argv = ["segment", nifti_volume(tmp_path), "x", "--backbone", "mybackbone", "--policy",
            "oracle-box", *[str(tmp_path / v) if v.count(".") else v for v in outputs]]
    assert run_cli(argv) == 2
    assert message in capsys.readouterr().err


def test_image_outputs_are_checked_before_segmenting(tmp_path, capsys, no_work):
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "img.png")
    for extra, message in ((["--out", str(tmp_path / "m.nii.gz")], "written as PNG"),
                           (["--series-uid", "1.2"], "apply to volumes"),
                           (["--out", str(tmp_path)], "is a folder")):
        argv = ["segment", str(tmp_path / "img.png"), "x", "--backbone", "mybackbone", *extra]
        assert run_cli(argv) == 2
        assert message in capsys.readouterr().err


def test_cli_irregular_series_refuses_nifti_output_first(tmp_path, capsys, no_work):
    write_series(tmp_path / "ct", [0, 2.5, 5, 10])
    base = ["segment", str(tmp_path / "ct"), "x", "--backbone", "mybackbone", "--policy", "oracle-box"]
    assert run_cli([*base, "--out", str(tmp_path / "m.nii.gz")]) == 2
    assert "--allow-irregular-slices" in capsys.readouterr().err
    assert run_cli([*base, "--allow-irregular-slices", "--out", str(tmp_path / "m.nii.gz")]) == 2
    assert "write a DICOM SEG instead" in capsys.readouterr().err


def test_cli_series_uid_picks_the_series(tmp_path, capsys):
    pytest.importorskip("highdicom")
    write_series(tmp_path / "study", [0, 2.5], description="arterial", names=["a1.dcm", "a2.dcm"])
    venous = write_series(tmp_path / "study", [0, 2.5, 5], description="venous", number=5,
                          names=["v1.dcm", "v2.dcm", "v3.dcm"])
    base = ["segment", str(tmp_path / "study"), "organ", "--backbone", "mybackbone", "--policy",
            "oracle-box", "--window", "abdomen", "--out", str(tmp_path / "seg.dcm")]
    assert run_cli(base) == 2
    err = capsys.readouterr().err
    assert "'arterial'" in err and "'venous'" in err and "--series-uid" in err
    volume = io.read_volume(tmp_path / "study", series_uid=venous)
    labels = np.zeros(volume.shape, np.uint8)
    labels[40:80, 30:70, :] = 1
    io.write_mask_nifti(labels, tmp_path / "gt.nii.gz", volume)
    assert run_cli([*base, "--series-uid", venous, "--ground-truth", str(tmp_path / "gt.nii.gz")]) == 0
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == venous and seg.NumberOfFrames == 3
