"""Medical inputs refused clearly, at read time, with what to do (issue 26, "Also"): a ground
truth on another grid, DICOM PixelSpacing 0, duplicate SOPInstanceUIDs, mixed modalities,
DICOM SEG segment labels, a volume too wide to window, masks larger than their image."""

import numpy as np
import pytest

from msagent import io
from msagent.errors import InvalidMask
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
