"""Medical inputs refused clearly, at read time, with what to do (issue 26, "Also"): a ground
truth on another grid, DICOM PixelSpacing 0, duplicate SOPInstanceUIDs, mixed modalities,
DICOM SEG segment labels, a volume too wide to window, masks larger than their image."""

import numpy as np
import pytest

from msagent import io
from msagent.errors import InvalidImage, InvalidInput, InvalidMask
from msagent.testing import write_dicom_series
from msagent.volume.stack import build_stack, label_stack

nib = pytest.importorskip("nibabel")


def run_cli(argv):
    from msagent.cli import main

    return main(argv)


# -- a ground truth on another grid ---------------------------------------------------------
def shifted(affine, mm=5.0):
    out = np.array(affine, float)
    out[0, 3] += mm
    return out


def test_a_ground_truth_with_another_affine_is_named_with_both_affines():
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    volume = io.Volume(np.zeros((8, 8, 4), np.int16), affine)
    labels = io.Volume(np.ones((8, 8, 4), np.uint8), shifted(affine))
    assert io.grid_mismatch(io.Volume(labels.data, affine), volume) == ""
    message = io.grid_mismatch(labels, volume)
    assert "affines" in message and "differ by up to 5" in message
    assert "[0.8, 0, 0, 5]" in message and "[0.8, 0, 0, 0]" in message  # both shown
    sliced = build_stack(volume, window="400/40")
    with pytest.raises(InvalidMask, match=r"the shapes agree \(\(8, 8, 4\)\) but the affines"):
        label_stack(labels, sliced, "ground truth")
    with pytest.raises(InvalidMask, match=r"its shape \(8, 8, 5\) differs from the image's \(8, 8, 4\)"):
        label_stack(io.Volume(np.ones((8, 8, 5), np.uint8), affine), sliced, "ground truth")


def test_the_cli_says_the_ground_truth_affine_differs(tmp_path, capsys):
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), shifted(affine)), tmp_path / "gt.nii.gz")
    code = run_cli(["segment", str(tmp_path / "ct.nii.gz"), "organ", "--3d", "--backbone",
                    "mybackbone", "--policy", "oracle-box", "--ground-truth", str(tmp_path / "gt.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "the affines (voxel → RAS+ mm) differ" in err and "its affine" in err


# -- DICOM series ---------------------------------------------------------------------------
pydicom = pytest.importorskip("pydicom")


def rewrite(path, **values):
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


@pytest.mark.parametrize("spacing, shown", [((0, 0.9), "0"), ((0.7, -1), "-1"), ((0.7, float("nan")), "nan")])
def test_a_pixel_spacing_that_is_not_positive_is_refused_at_read_time(tmp_path, spacing, shown):
    write_dicom_series(tmp_path / "ct", [0, 2, 4], spacing=spacing)
    with pytest.raises(InvalidImage, match=rf"PixelSpacing \[.*{shown}.*\] is not two positive"):
        io.read_volume(tmp_path / "ct")


def test_an_unreadable_or_mixed_pixel_spacing_is_refused(tmp_path):
    write_dicom_series(tmp_path / "ct", [0, 2, 4])
    files = sorted((tmp_path / "ct").glob("*.dcm"))
    rewrite(files[0], PixelSpacing=[0.5, 0.5])
    with pytest.raises(InvalidImage, match=r"mixes pixel spacings .*0\.5, 0\.5.*0\.7, 0\.9"):
        io.read_volume(tmp_path / "ct")
    rewrite(files[0], PixelSpacing=[0.7])
    with pytest.raises(InvalidImage, match=r"PixelSpacing \[0\.7\] is not two positive"):
        io.read_volume(tmp_path / "ct")


def test_two_different_images_with_one_sop_instance_uid_are_refused(tmp_path):
    write_dicom_series(tmp_path / "ct", [0, 2, 4])
    first, second, _ = sorted((tmp_path / "ct").glob("*.dcm"))
    uid = pydicom.dcmread(first).SOPInstanceUID
    rewrite(second, SOPInstanceUID=uid)
    with pytest.raises(InvalidImage, match=rf"{first.name} and {second.name} .*SOPInstanceUID {uid}"):
        io.read_volume(tmp_path / "ct")


def test_an_exact_copy_of_an_instance_is_read_once(tmp_path, caplog):
    write_dicom_series(tmp_path / "ct", [0, 2, 4])
    first = sorted((tmp_path / "ct").glob("*.dcm"))[0]
    (tmp_path / "ct" / "copy").mkdir()
    (tmp_path / "ct" / "copy" / first.name).write_bytes(first.read_bytes())
    with caplog.at_level("WARNING"):
        assert io.read_volume(tmp_path / "ct").shape == (128, 128, 3)
    assert "a copy of" in caplog.text and first.name in caplog.text


def test_a_series_mixing_modalities_is_refused(tmp_path):
    write_dicom_series(tmp_path / "ct", [0, 2, 4])
    first = sorted((tmp_path / "ct").glob("*.dcm"))[0]
    rewrite(first, Modality="MR")
    with pytest.raises(InvalidImage, match=rf"mixes modalities CT .*and MR \({first.name}\)"):
        io.read_volume(tmp_path / "ct")


# -- DICOM SEG segment labels -----------------------------------------------------------------
@pytest.fixture
def series_volume(tmp_path):
    pytest.importorskip("highdicom")
    write_dicom_series(tmp_path / "ct", [0, 2, 4])
    volume = io.read_volume(tmp_path / "ct")
    mask = np.zeros(volume.shape, bool)
    mask[30:60, 30:60, 1] = True
    return volume, mask


@pytest.mark.parametrize("label, message", [
    ("liver\\spleen", "backslash"),
    ("x" * 65, "65 characters"),
    ("tab\there", "control character"),
    ("line\nbreak", "control character"),
    ("   ", "empty"),
])
def test_a_segment_label_that_dicom_cannot_hold_is_refused_before_writing(tmp_path, series_volume,
                                                                         label, message):
    from msagent.io.dicom_seg import check_segment_label

    volume, mask = series_volume
    with pytest.raises(InvalidInput, match=message):
        check_segment_label(label)
    with pytest.raises(InvalidInput, match=message):
        io.write_dicom_seg(mask, volume, tmp_path / "seg.dcm", label=label)
    assert not (tmp_path / "seg.dcm").exists()


@pytest.mark.parametrize("label", ["肝臓", "Leber (größte)", "печень", "x" * 64])
def test_a_segment_label_is_written_as_given(tmp_path, series_volume, label):
    volume, mask = series_volume
    io.write_dicom_seg(mask, volume, tmp_path / "seg.dcm", label=label)
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert ds.SegmentSequence[0].SegmentLabel == label
    if not label.isascii() and not all(ord(c) < 256 for c in label):
        assert ds.SpecificCharacterSet == "ISO_IR 192"  # UTF-8: what the source's set cannot hold
    assert ds.PatientName == volume.datasets[0].PatientName


def test_the_cli_refuses_a_target_dicom_seg_cannot_label_before_the_run(tmp_path, capsys):
    write_dicom_series(tmp_path / "ct", [0, 2, 4])
    code = run_cli(["segment", str(tmp_path / "ct"), "liver\\spleen", "--3d", "--backbone",
                    "mybackbone", "--policy", "oracle-box", "--dicom-seg", str(tmp_path / "seg.dcm")])
    err = capsys.readouterr().err
    assert code == 2 and "backslash" in err and "--dicom-seg" in err


# -- a volume too wide to window ---------------------------------------------------------------
def test_a_volume_whose_range_overflows_is_refused_with_a_hint():
    data = np.zeros((16, 16, 8))
    data[:8], data[8:] = -1e308, 1e308
    with pytest.raises(InvalidImage, match=r"-1e\+308 to 1e\+308.*clip.*--window"):
        io.percentile_window(data)
    with pytest.raises(InvalidImage, match="too wide to window"):
        build_stack(io.Volume(data, np.eye(4)))
    sliced = build_stack(io.Volume(data, np.eye(4)), window="400/40")  # a window given: fine
    assert sliced.slices.gray.min() == 0 and sliced.slices.gray.max() == 255


# -- a mask larger than its image is refused from its header ----------------------------------
@pytest.fixture
def big_mask_png(tmp_path):
    """A 4000×3000 8-bit PNG of zeros: 12 MB decoded, a few KB on disk."""
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(path)
    return path


@pytest.fixture
def decodes(monkeypatch):
    """How many times PIL decoded an image's pixels."""
    from PIL import ImageFile

    calls = []
    load = ImageFile.ImageFile.load

    def counting(self):
        calls.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    return calls


def test_a_mask_file_of_another_size_is_refused_before_decoding(big_mask_png, decodes):
    with pytest.raises(InvalidMask, match=r"has size 4000×3000 \(W×H\) but the image is 64×48"):
        io.to_mask(big_mask_png, (48, 64))
    assert decodes == []
    with pytest.raises(InvalidMask, match="4000×3000"):
        io.images.mask_array(big_mask_png, size=(48, 64))
    from PIL import Image

    with Image.open(big_mask_png) as lazy, pytest.raises(InvalidMask, match="4000×3000"):
        io.to_mask(lazy, (48, 64))
    assert decodes == []
    assert io.to_mask(big_mask_png, (3000, 4000), allow_empty=True).shape == (3000, 4000)  # fits: read


def test_a_mask_upload_of_another_size_is_refused_before_decoding(big_mask_png, decodes):
    from msagent.io.wire import decode_mask_upload
    from msagent.server.services import initial_mask_upload

    data = big_mask_png.read_bytes()
    with pytest.raises(InvalidMask, match=r"4000×3000 \(W×H\) but the image is 64×48"):
        decode_mask_upload(data, max_pixels=64_000_000, size=(48, 64))
    with pytest.raises(InvalidMask, match=r"initial_mask has size 4000×3000"):
        initial_mask_upload(data, 64_000_000, size=(48, 64))
    assert decodes == []


def test_a_web_ground_truth_is_checked_for_size_before_decoding_and_for_its_affine(
        tmp_path, big_mask_png, decodes):
    from msagent.webapp.volumes.store import StoredVolume, ground_truth_upload

    with pytest.raises(InvalidMask, match=r"4000×3000 \(W×H\) but the image is 64×48"):
        ground_truth_upload(big_mask_png.read_bytes(), "gt.png", (48, 64), max_pixels=64_000_000)
    assert decodes == []
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    stored = StoredVolume("v", io.Volume(np.zeros((8, 8, 4), np.int16), affine), "nifti",
                          "ct.nii.gz", (400.0, 40.0), "given")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), shifted(affine)), tmp_path / "gt.nii.gz")
    with pytest.raises(InvalidMask, match=r"the shapes agree \(\(8, 8, 4\)\) but the affines"):
        ground_truth_upload((tmp_path / "gt.nii.gz").read_bytes(), "gt.nii.gz", (8, 8),
                            volume=stored, index=1, max_pixels=10_000)
