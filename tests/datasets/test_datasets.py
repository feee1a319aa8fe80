import json
import pickle

import numpy as np
import pytest

from msagent import io
from msagent.datasets import (
    Dataset,
    concat,
    make_mni152_dataset,
    open_dataset,
    read_biomedparse,
    read_folder,
    read_nifti_pair,
    write_folder,
)
from msagent.datasets.biomedparse import find_split_files
from msagent.errors import InvalidInput
from msagent.testing import make_phantom
from msagent.types import Case


@pytest.fixture(scope="module")
def mni_folder(tmp_path_factory):
    return make_mni152_dataset(tmp_path_factory.mktemp("mni"), slices=(30, 45))


@pytest.mark.slow
def test_mni152_dataset_is_a_plain_folder_with_three_targets(mni_folder):
    dataset = open_dataset(mni_folder)
    assert dataset.ids == [f"mni152/z{z:03d}/{t}" for z in (30, 45)
                           for t in ("brain", "white-matter", "gray-matter")]
    cases = list(dataset)
    assert all(isinstance(c, Case) for c in cases)
    brain, wm, gm = cases[:3]
    assert brain.image.shape == (117, 99, 3) and brain.image.dtype == np.uint8
    assert brain.meta == {"dataset": "mni152", "split": "", "modality": "MRI", "class": "brain",
                          "image": "images/mni152_z030.png", "mask": "masks/mni152_z030_brain.png"}
    assert [c.target for c in cases[:3]] == ["brain", "white matter", "gray matter"]
    # the tissue masks lie inside the brain mask and do not overlap each other
    assert not (wm.ground_truth & ~brain.ground_truth).any()
    assert not (wm.ground_truth & gm.ground_truth).any()
    assert wm.ground_truth.sum() > 500 and gm.ground_truth.sum() > 1000
    # the image is brighter inside the brain than outside
    assert brain.image[brain.ground_truth].mean() > 3 * brain.image[~brain.ground_truth].mean()


def _write_case(root, split, name, mask_name, seed, center=(40, 50)):
    image, mask = make_phantom(80, 96, center=center, radii=(15, 20), seed=seed)
    io.save_png(image, root / split / name)
    io.save_mask_png(mask, root / f"{split}_mask" / mask_name)
    return mask


def _coco(images_and_masks, split):
    images = [{"id": i, "file_name": img} for i, (img, _, _) in enumerate(images_and_masks)]
    annotations = [{"id": 10 + i, "image_id": i, "mask_file": mask, "split": split,
                    "sentences": [{"idx": 0, "sent": text, "raw": text}]}
                   for i, (_, mask, text) in enumerate(images_and_masks)]
    return {"images": images, "annotations": annotations, "categories": []}


@pytest.fixture
def biomedparse_root(tmp_path):
    """A collection with a COCO-like dataset and a nested entry-list dataset."""
    a = tmp_path / "amos" / "CT"
    _write_case(a, "train", "amos_0001_CT_abdomen.png", "amos_0001_CT_abdomen_liver.png", 1)
    _write_case(a, "train", "amos_0002_CT_abdomen.png", "amos_0002_CT_abdomen_left+kidney.png", 2)
    _write_case(a, "test", "amos_0003_CT_abdomen.png", "amos_0003_CT_abdomen_liver.png", 3)
    (a / "train.json").write_text(json.dumps(_coco([
        ("amos_0001_CT_abdomen.png", "amos_0001_CT_abdomen_liver.png", "liver in abdomen CT"),
        ("amos_0002_CT_abdomen.png", "amos_0002_CT_abdomen_left+kidney.png",
         "left kidney in abdomen CT")], "train")))
    (a / "test.json").write_text(json.dumps(_coco([
        ("amos_0003_CT_abdomen.png", "amos_0003_CT_abdomen_liver.png", "liver in abdomen CT")],
        "test")))
    b = tmp_path / "isic"
    _write_case(b, "train", "img1.png", "img1_lesion.png", 4)
    (b / "train.json").write_text(json.dumps([{"file_name": "img1.png", "modality": "dermoscopy",
                                              "annotations": [{"mask_file": "img1_lesion.png",
                                                               "sentences": [{"sent": "skin lesion"}]}]}]))
    return tmp_path


def test_biomedparse_reads_nested_datasets_and_their_metadata(biomedparse_root):
    dataset = open_dataset(biomedparse_root, split="train")
    assert dataset.ids == ["amos/CT/train/amos_0001_CT_abdomen_liver",
                           "amos/CT/train/amos_0002_CT_abdomen_left+kidney",
                           "isic/train/img1_lesion"]
    liver, kidney, lesion = list(dataset)
    assert liver.target == "liver in abdomen CT" and kidney.target == "left kidney in abdomen CT"
    assert kidney.meta["class"] == "left kidney" and kidney.meta["modality"] == "CT"
    assert kidney.meta["site"] == "abdomen" and kidney.meta["dataset"] == "amos/CT"
    assert lesion.meta["modality"] == "dermoscopy" and lesion.meta["class"] == "lesion"
    expected = make_phantom(80, 96, center=(40, 50), radii=(15, 20), seed=2)
    assert np.array_equal(kidney.image, expected[0]) and np.array_equal(kidney.ground_truth, expected[1])
    assert len(open_dataset(biomedparse_root)) == 4  # all splits
    assert read_biomedparse(biomedparse_root / "amos" / "CT" / "test.json").ids == \
        ["CT/test/amos_0003_CT_abdomen_liver"]


def test_biomedparse_errors_say_what_is_missing(tmp_path, biomedparse_root):
    path = biomedparse_root / "amos" / "CT" / "train.json"
    data = json.loads(path.read_text())
    del data["annotations"][0]["sentences"]
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match=r"sentences\[0\]\.sent"):
        read_biomedparse(biomedparse_root, "train")
    with pytest.raises(InvalidInput, match="no BiomedParse split file"):
        read_biomedparse(tmp_path / "isic", "valid")
    assert find_split_files(tmp_path / "isic", "train") == [tmp_path / "isic" / "train.json"]


def test_plain_folder_csv_and_its_errors(tmp_path):
    for i in range(2):
        image, mask = make_phantom(40, 50, center=(20, 25), radii=(8, 10), seed=i)
        io.save_png(image, tmp_path / "images" / f"p{i}.png")
        io.save_mask_png(mask, tmp_path / "masks" / f"p{i}.png")
    write_folder(tmp_path, [{"image": f"images/p{i}.png", "mask": f"masks/p{i}.png",
                             "target": "bright ellipse", "split": "train" if i == 0 else "test"}
                            for i in range(2)])
    dataset = read_folder(tmp_path, dataset="phantoms", modality="synthetic")
    assert dataset.ids == ["phantoms/p0/bright-ellipse", "phantoms/p1/bright-ellipse"]
    assert dataset[1].meta["modality"] == "synthetic" and dataset[1].meta["class"] == "bright ellipse"
    assert open_dataset(tmp_path, split="test").ids == [f"{tmp_path.name}/p1/bright-ellipse"]
    (tmp_path / "bad.csv").write_text("image,target\nimages/p0.png,x\n")
    with pytest.raises(InvalidInput, match=r"lacks the column\(s\) \['mask'\]"):
        read_folder(tmp_path / "bad.csv")
    with pytest.raises(InvalidInput, match="cannot tell the layout"):
        open_dataset(tmp_path / "images")


def _label_volume(tmp_path):
    from nilearn import datasets as nl

    template = nl.load_mni152_template(resolution=2)
    gm = nl.load_mni152_gm_mask(resolution=2).get_fdata() > 0
    wm = nl.load_mni152_wm_mask(resolution=2).get_fdata() > 0
    labels = np.zeros(gm.shape, np.uint8)
    labels[gm] = 1
    labels[wm] = 2
    labels[:, :, :40] = 0  # only slices 40.. carry labels
    labels[:, :, 60:] = 0
    affine = np.asarray(template.affine)
    ref = io.Volume(data=np.asarray(template.get_fdata()), affine=affine)
    io.write_nifti(ref.data.astype(np.float32), tmp_path / "imagesTr" / "mni_0000.nii.gz", ref)
    io.write_nifti(labels, tmp_path / "labelsTr" / "mni.nii.gz", ref)
    return ref, labels


@pytest.mark.slow
def test_nifti_slices_with_targets_become_cases(tmp_path):
    ref, labels = _label_volume(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "mni", "labels": {"background": 0, "gray_matter": 1, "white_matter": 2},
        "channel_names": {"0": "MRI"}, "file_ending": ".nii.gz"}))
    dataset = open_dataset(tmp_path, slice_step=5, target_template="{label} in brain {modality}")
    assert dataset.ids == [f"mni/mni_0000/axial{z:03d}/{t}" for z in (40, 45, 50, 55)
                           for t in ("gray-matter", "white-matter")]
    case = dataset[3]  # z=45, white matter
    assert case.target == "white matter in brain MRI" and case.meta["slice"] == 45
    assert case.meta["class"] == "white matter" and case.meta["modality"] == "MRI"
    assert np.array_equal(case.ground_truth, io.Volume(labels, ref.affine).slice(45) == 2)
    saved = io.read_nifti(tmp_path / "imagesTr" / "mni_0000.nii.gz")
    width, level = io.percentile_window(saved.data)  # one window for the whole volume
    assert np.array_equal(case.image[:, :, 0], io.apply_window(saved.slice(45), width, level))
    single = read_nifti_pair(tmp_path / "imagesTr" / "mni_0000.nii.gz", tmp_path / "labelsTr" / "mni.nii.gz",
                             {2: "white matter"}, dataset="x", min_pixels=10**6)
    assert len(single) == 0


@pytest.mark.slow
def test_datasets_are_lazy_sliceable_concatenable_and_picklable(mni_folder):
    dataset = open_dataset(mni_folder)
    head = dataset[:2]
    assert isinstance(head, Dataset) and len(head) == 2
    both = concat([head, dataset[4:5]])
    assert both.ids == dataset.ids[:2] + dataset.ids[4:5]
    assert both.fingerprint() == concat([dataset[:2], dataset[4:5]]).fingerprint()
    assert both.fingerprint() != head.fingerprint()
    ref = pickle.loads(pickle.dumps(dataset.refs[0]))  # Ray ships refs to workers
    assert np.array_equal(ref.load().ground_truth, dataset[0].ground_truth)
    with pytest.raises(ValueError, match="duplicate case id"):
        concat([head, head])
