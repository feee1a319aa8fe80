"""``msagent eval --volumes``: whole-volume cases from an MSD-layout NIfTI folder, run under the
3-D protocols (agent through VolumeAgent, cvpr in 3-D; noc skipped), one record per volume,
NIfTI masks on the input's grid, resume, the report's volume table. The stand-in backbone of
tests/volume/test_volume.py makes every expected score exact."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from msagent.datasets import (
    LoadedVolume,
    VolumeCase,
    open_dataset,
    read_nifti_folder,
    resolve_dataset,
)
from msagent.errors import InvalidImage, InvalidInput
from msagent.evaluation import EvalConfig, RecordStore, evaluate
from msagent.evaluation.units import NOC_ON_VOLUME, REFINE_ON_VOLUME
from msagent.testing import TUBE_AFFINE, BrightBackbone, make_tube, zyx_to_nifti
from msagent.volume.trajectory import VolumeTrajectory

AFFINE = TUBE_AFFINE  # RAS: k (the tube's slices) is axial


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))


_to_voxels = zyx_to_nifti


def test_the_reader_lists_volume_cases_without_reading_voxels(msd, monkeypatch):
    from msagent.datasets import volumes

    def never(*args, **kwargs):
        raise AssertionError("listing read a volume")

    monkeypatch.setattr(volumes, "_open", never)
    dataset = read_nifti_folder(msd, volumes=True)
    assert dataset.ids == ["tubes/tube_a/axial/tube", "tubes/tube_a/axial/cyst",
                           "tubes/tube_b/axial/tube", "tubes/tube_b/axial/cyst"]
    case = dataset.refs[0]
    assert isinstance(case, VolumeCase) and case.target == "tube" and case.label == 1
    assert case.meta == {"dataset": "tubes", "split": "", "modality": "CT", "class": "tube",
                         "image": "tube_a.nii.gz", "labels": "tube_a.nii.gz", "plane": "axial",
                         "window": "", "label": 1, "shape": [80, 40, 16],
                         "spacing": [0.8, 0.8, 3.0]}
    monkeypatch.undo()
    loaded = dataset[0]
    assert isinstance(loaded, LoadedVolume) and loaded.sliced.slices.count == 16
    assert loaded.sliced.slices.spacing == pytest.approx((3.0, 0.8, 0.8))
    _, mask = make_tube(16)
    assert loaded.ground_truth.sum() == mask.sum() and loaded.ground_truth.shape[0] == 16
    assert open_dataset(msd, volumes=True).ids == dataset.ids
    assert len(open_dataset(msd)) == 16 + 12  # the slice reader: one case per slice with a tube
    with pytest.raises(InvalidInput, match="choose slices"):
        read_nifti_folder(msd, volumes=True, slice_step=2)


def test_the_voxel_limit_is_checked_from_the_header(msd, monkeypatch):
    monkeypatch.setenv("MSAGENT_MAX_VOXELS", "1000")
    case = read_nifti_folder(msd, volumes=True).refs[0]
    with pytest.raises(InvalidImage, match="over the limit of 1,000"):
        case.load()


def test_eval_volumes_agent_and_cvpr_one_row_per_volume(msd, tmp_path):
    out = tmp_path / "out"
    summary = evaluate(read_nifti_folder(msd, volumes=True), out, backbones=[BrightBackbone()],
                       policies=["expert"], protocols=["cvpr", "noc"], progress=False)
    agent, cvpr = summary["bright/expert (volumes)"], summary["bright/cvpr (volumes)"]
    assert agent["kind"] == "volume" and agent["n_ok"] == 2 and agent["n_skipped"] == 2
    assert agent["dice"] == 1.0 and agent["iou"] == 1.0 and agent["nsd"] == 1.0
    assert agent["skipped"] == {"empty ground truth": 2}      # "cyst" is in neither volume
    assert agent["slices_mean"] == 14 and agent["encodes_mean"] == 14
    assert cvpr["dice"] == 1.0 and cvpr["dsc_auc"] == 4.0 and cvpr["dsc_by_step"] == [1.0] * 6
    noc = summary["bright/noc (volumes)"]
    assert noc["n_ok"] == 0 and noc["skipped"] == {NOC_ON_VOLUME: 4}
    records = {(r.method, r.case_id): r for r in RecordStore(out / "records.jsonl").records()}
    assert len(records) == 3 * 4
    row = records["expert", "tubes/tube_a/axial/tube"]
    _, mask = make_tube(16)
    assert row.kind == "volume" and row.slices == 16 and row.height * row.width == 40 * 80
    assert row.label == "tube" and row.dataset == "tubes" and row.modality == "CT"
    assert row.values["key_slice"] == int(np.argmax(mask.sum(axis=(1, 2))))
    assert row.values["count_encodes"] == 16 and row.values["propagation"] == "generic"
    saved = nib.load(str(out / row.mask_file))                # NIfTI on the input's grid
    assert row.mask_file.endswith(".nii.gz") and np.allclose(saved.affine, AFFINE)
    assert np.array_equal(np.asarray(saved.dataobj), _to_voxels(mask).astype(np.uint8))
    assert (out / row.overlay_file).is_file()
    trajectory = VolumeTrajectory.from_json((out / row.trajectory_file).read_text())
    assert trajectory.key_slice == row.values["key_slice"] and trajectory.case_id == row.case_id
    box = records["cvpr", "tubes/tube_b/axial/tube"]
    assert box.curves["dice"] == [1.0] * 6 and box.trajectory_file is None
    assert (out / box.mask_file).is_file()
    page = (out / "report.html").read_text()
    assert "<h2>Volumes</h2>" in page and "<h3>Per volume</h3>" in page
    assert "<h2>Summary</h2>" not in page                     # no slice cases in this run
    assert page.count("tubes/tube_b/axial/cyst") == 3         # one row per method, skipped
    assert "kind" in (out / "results.csv").read_text().splitlines()[0]


def test_resume_runs_only_the_missing_volume(msd, tmp_path, monkeypatch):
    out = tmp_path / "out"
    kwargs = dict(backbones=[BrightBackbone()], policies=["expert"], protocols=["noc"], progress=False,
                  report=False)
    evaluate(read_nifti_folder(msd, volumes=True), out, **kwargs)
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    kept = [line for line in lines if not ('"tubes/tube_b/axial/tube"' in line and '"expert"' in line)]
    assert len(kept) == len(lines) - 1
    (out / "records.jsonl").write_text("".join(kept))
    run = json.loads((out / "run.json").read_text())         # a run.json from before the 3-D
    del run["config"]["review_slices"], run["config"]["propagation"]  # settings: their defaults
    (out / "run.json").write_text(json.dumps(run))
    loads = []
    original = VolumeCase.load
    monkeypatch.setattr(VolumeCase, "load", lambda self, *a: loads.append(self.id) or original(self, *a))
    again = BrightBackbone()
    evaluate(read_nifti_folder(msd, volumes=True), out, **{**kwargs, "backbones": [again]})
    assert loads == ["tubes/tube_b/axial/tube"]               # skipped units are done too
    assert len(again.encoded) == 12
    assert len(RecordStore(out / "records.jsonl").records()) == len(lines)
    with pytest.raises(InvalidInput, match="other settings"):
        evaluate(read_nifti_folder(msd, volumes=True), out, config=EvalConfig(review_slices=1),
                 **kwargs)


def test_array_volumes_a_failed_load_and_refine(tmp_path):
    volume, mask = make_tube(12)
    cases = [VolumeCase("array/tube", "tube", volume, mask, spacing=(3.0, 0.8, 0.8)),
             VolumeCase("missing", "tube", tmp_path / "none.nii.gz", tmp_path / "none.nii.gz")]
    out = tmp_path / "out"
    summary = evaluate(cases, out, backbones=[BrightBackbone()], protocols=["cvpr"], progress=False,
                       report=False, concurrency=2)
    group = summary["bright/cvpr (volumes)"]
    assert group["n_ok"] == 1 and group["n_errors"] == 1 and group["errors"] == {"InvalidImage": 1}
    row = next(r for r in RecordStore(out / "records.jsonl").records() if r.ok)
    assert row.mask_file.endswith(".npz")                     # an array has no geometry
    assert np.array_equal(np.load(out / row.mask_file)["mask"], mask)
    refine = evaluate(cases[:1], tmp_path / "refine", backbones=[BrightBackbone()], policies=["expert"],
                      config=EvalConfig(refine_from="degrade:erode"), progress=False, report=False)
    assert refine["bright/expert (volumes)"]["skipped"] == {REFINE_ON_VOLUME: 1}


def test_a_4d_image_is_read_as_its_first_channel(tmp_path):
    volume, mask = make_tube(10)
    channels = np.stack([_to_voxels(volume), np.zeros_like(_to_voxels(volume))], axis=-1)
    _write(tmp_path / "img.nii.gz", channels.astype(np.float32))   # MSD's multi-channel MRI
    _write(tmp_path / "lab.nii.gz", _to_voxels(mask).astype(np.uint8))
    case = VolumeCase("4d", "tube", tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz", 1)
    out = tmp_path / "out"
    summary = evaluate([case], out, backbones=[BrightBackbone()], protocols=["cvpr"], progress=False,
                       report=False)
    assert summary["bright/cvpr (volumes)"]["dice"] == 1.0
    row = RecordStore(out / "records.jsonl").records()[0]
    saved = nib.load(str(out / row.mask_file))
    assert saved.shape == mask.T.shape and np.array_equal(np.asarray(saved.dataobj), _to_voxels(mask))


def test_cli_eval_volumes(msd, tmp_path, capsys):
    from msagent.cli import main

    out = tmp_path / "out"
    argv = ["eval", str(msd), "--volumes", "--out", str(out), "--backbone", "mybackbone",
            "--policy", "expert", "--protocol", "cvpr", "--protocol", "noc",
            "--review-slices", "1", "--propagation", "generic", "--no-report"]
    assert main(argv) == 0                                    # skips are not errors
    text = capsys.readouterr().out
    assert "Volumes (3-D scores):" in text and "| mybackbone | expert | 2 | 1.000 |" in text
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["review_slices"] == 1 and config["propagation"] == "generic"
    assert main(argv + ["--refine-from", "degrade:erode"]) == 2
    assert "--refine-from has no 3-D form" in capsys.readouterr().err


@pytest.mark.slow
def test_mni152_volumes_built_in(tmp_path):
    folder = resolve_dataset("mni152", tmp_path / "mni", volumes=True)
    dataset = open_dataset(folder, volumes=True)
    assert dataset.ids == ["mni152/mni152_0000/axial/gray-matter",
                           "mni152/mni152_0000/axial/white-matter",
                           "mni152/mni152_0000/axial/brain"]
    gm, wm, brain = (dataset.refs[i].load().ground_truth for i in range(3))
    assert brain.sum() > gm.sum() + wm.sum() and not (gm & wm).any()
    assert not ((gm | wm) & ~brain).any()
