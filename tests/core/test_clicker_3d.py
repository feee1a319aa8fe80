"""The CVPR 2025 challenge's 3-D click and initial box, against a transcription of its script
(CVPR25_iter_eval.py, get_boxes.py in JunMa11/CVPR-MedSegFMCompetition)."""

import itertools

import numpy as np
import pytest
from scipy import ndimage

from msagent import clicker
from msagent.clicker import VoxelClick, cvpr_click_3d, cvpr_initial_box_3d
from msagent.types import BBox, Point

try:
    import cc3d
except ImportError:  # the challenge's labels; scipy's with 26-connectivity are the same
    cc3d = None


# -- the challenge's code, transcribed (numpy/scipy only; cc3d and skimage when installed) -----

def _label26(mask):
    if cc3d is not None:
        return cc3d.connected_components(mask, connectivity=26)
    return ndimage.label(mask, structure=np.ones((3, 3, 3)))[0]


def _block_reduce_max(image):
    try:
        from skimage.measure import block_reduce
    except ImportError:
        image = np.pad(image, [(0, s % 2) for s in image.shape])
        out = np.zeros([s // 2 for s in image.shape], image.dtype)
        for dz, dy, dx in itertools.product((0, 1), repeat=3):
            out = np.maximum(out, image[dz::2, dy::2, dx::2])
        return out
    return block_reduce(image, block_size=(2, 2, 2), func=np.max)


def _challenge_compute_edt(error_component, roi_limit):
    coords = np.argwhere(error_component)
    min_coords = coords.min(axis=0)
    max_coords = coords.max(axis=0) + 1
    crop_shape = max_coords - min_coords
    padding = np.maximum((crop_shape * 0.25).astype(int), 1)
    center_crop = np.zeros(crop_shape + 2 * padding, dtype=np.uint8)
    center_crop[padding[0]:padding[0] + crop_shape[0], padding[1]:padding[1] + crop_shape[1],
                padding[2]:padding[2] + crop_shape[2]] = error_component[
        min_coords[0]:max_coords[0], min_coords[1]:max_coords[1], min_coords[2]:max_coords[2]]
    large_roi = center_crop.shape[0] * center_crop.shape[1] * center_crop.shape[2] > roi_limit
    if large_roi:
        center_crop = _block_reduce_max(center_crop)
    edt = ndimage.distance_transform_edt(center_crop)
    if large_roi:
        edt = edt.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    dist_cropped = edt[padding[0]:padding[0] + crop_shape[0], padding[1]:padding[1] + crop_shape[1],
                       padding[2]:padding[2] + crop_shape[2]]
    dist_full = np.zeros_like(error_component, dtype=dist_cropped.dtype)
    dist_full[min_coords[0]:max_coords[0], min_coords[1]:max_coords[1],
              min_coords[2]:max_coords[2]] = dist_cropped
    return dist_full


def challenge_click(gts_cls, segs_cls, roi_limit=60_000_000):
    error_mask = (segs_cls != gts_cls).astype(np.uint8)
    if np.sum(error_mask) == 0:
        return None
    errors = _label26(error_mask)
    component_sizes = np.bincount(errors.flat)
    component_sizes[0] = 0
    largest_component = errors == np.argmax(component_sizes)
    edt = _challenge_compute_edt(largest_component, roi_limit)
    edt *= largest_component
    if np.sum(edt) == 0:
        edt = largest_component
    state = np.random.get_state()
    try:  # sample_coord
        np.random.seed(42)
        max_coords = np.argwhere(edt == edt.max())
        center = tuple(int(v) for v in max_coords[np.random.choice(len(max_coords))])
    finally:
        np.random.set_state(state)
    return center, bool(gts_cls[center])


def challenge_box(gt3D, bbox_shift):
    z_indices, _, _ = np.where(gt3D > 0)
    z_min, z_max = np.min(z_indices), np.max(z_indices)
    z_indices = np.unique(z_indices)
    z_middle = z_indices[len(z_indices) // 2]
    gt2D = gt3D[z_middle]
    y_indices, x_indices = np.where(gt2D > 0)
    x_min, x_max = np.min(x_indices), np.max(x_indices)
    y_min, y_max = np.min(y_indices), np.max(y_indices)
    H, W = gt2D.shape
    scale_y, scale_x = gt2D.shape
    bbox_shift_x, bbox_shift_y = int(bbox_shift * scale_x / 256), int(bbox_shift * scale_y / 256)
    return {"z_min": z_min, "z_max": z_max, "z_mid": z_middle,
            "z_mid_x_min": max(0, x_min - bbox_shift_x), "z_mid_y_min": max(0, y_min - bbox_shift_y),
            "z_mid_x_max": min(W - 1, x_max + bbox_shift_x), "z_mid_y_max": min(H - 1, y_max + bbox_shift_y)}


def random_cases(seed, count):
    rng = np.random.default_rng(seed)
    for case in range(count):
        shape = tuple(int(v) for v in rng.integers(6, 30, 3))
        gt = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.5
        kind = case % 4
        if kind == 0:
            pred = np.roll(gt, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 3)))
        elif kind == 1:
            pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(1, 3)))
        elif kind == 2:
            pred = gt ^ (rng.random(shape) < 0.02)           # many 1-voxel errors: size and centre ties
        else:
            pred = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.5
        yield gt, pred


# -- the click ----------------------------------------------------------------------------------

def test_cvpr_click_3d_equals_the_challenges_rule_on_random_volumes():
    clicks = 0
    for gt, pred in random_cases(0, 160):
        expected = challenge_click(gt.astype(np.uint8), pred.astype(np.uint8))
        click = cvpr_click_3d(gt, pred)
        if expected is None:
            assert click is None
            continue
        assert (click.index, click.positive) == expected
        clicks += 1
    assert clicks > 150


def test_the_halved_edt_of_large_error_regions_is_the_challenges(monkeypatch):
    # The challenge downsamples a padded crop of > 60M voxels 2×2×2 for the EDT; a low limit
    # runs that branch on small volumes
    monkeypatch.setattr(clicker, "CVPR_EDT_ROI_LIMIT", 200)
    for gt, pred in random_cases(1, 120):
        expected = challenge_click(gt.astype(np.uint8), pred.astype(np.uint8), roi_limit=200)
        click = cvpr_click_3d(gt, pred)
        assert (None if click is None else (click.index, click.positive)) == expected


def test_scipy_labels_with_26_connectivity_are_cc3ds():
    if cc3d is None:
        pytest.skip("connected-components-3d is not installed")
    rng = np.random.default_rng(2)
    for _ in range(100):
        mask = rng.random(tuple(rng.integers(3, 25, 3))) < rng.uniform(0.05, 0.5)
        ours = ndimage.label(mask, structure=np.ones((3, 3, 3)))[0]
        assert np.array_equal(ours, cc3d.connected_components(mask.astype(np.uint8), connectivity=26))


def test_the_largest_component_wins_not_the_deepest():
    gt = np.zeros((20, 40, 40), bool); pred = np.zeros_like(gt)
    gt[10, 2:38, 2:38] = True               # a missed 1-voxel-thick sheet: 1296 voxels, depth 1
    pred[2:8, 2:12, 2:12] = True            # a 600-voxel false-positive block, depth 3
    click = cvpr_click_3d(gt, pred)
    assert click.positive and click.z == 10
    pred[2:8, 2:30, 2:30] = True            # now 4704 voxels: the block wins
    click = cvpr_click_3d(gt, pred)
    assert not click.positive and click.z in (4, 5) and pred[click.index]  # depth 3: the middle slices


def test_diagonal_voxels_are_one_component_and_fn_fp_share_one_error_mask():
    gt = np.zeros((5, 5, 5), bool); pred = np.zeros_like(gt)
    gt[1, 1, 1] = True                       # FN
    pred[2, 2, 2] = True                     # FP, corner-adjacent: one 26-connected component
    gt[4, 4, 0] = pred[4, 4, 0] = True       # correct
    pred[0, 4, 4] = True; pred[0, 4, 3] = True   # a separate 2-voxel FP: the largest is the pair
    click = cvpr_click_3d(gt, pred)           # sizes 2 and 2: the first in raster order, (0, 4, 3)-(0, 4, 4)
    assert click.z == 0 and not click.positive
    pred[0, 4, 3] = False                     # sizes 2 (FN+FP) and 1
    click = cvpr_click_3d(gt, pred)
    assert click.index in {(1, 1, 1), (2, 2, 2)} and click.positive == (click.index == (1, 1, 1))


def test_ties_are_drawn_with_seed_42_in_raster_order():
    gt = np.ones((1, 2, 4), bool)            # 8 voxels at depth 1
    assert cvpr_click_3d(gt, None) == VoxelClick(0, 1, 2, True)   # RandomState(42).choice(8) = 6
    assert cvpr_click_3d(gt, gt) is None


def test_voxel_click_fields_and_input_checks():
    click = VoxelClick(3, 4, 5, False)
    assert click.index == (3, 4, 5) and click.point == Point(5, 4, False)
    with pytest.raises(ValueError, match="Z×Y×X"):
        cvpr_click_3d(np.zeros((4, 4), bool), None)
    with pytest.raises(ValueError, match="one shape"):
        cvpr_click_3d(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool))


# -- the initial box ----------------------------------------------------------------------------

def test_cvpr_initial_box_3d_equals_the_challenges_get_boxes():
    rng = np.random.default_rng(3)
    for _ in range(80):
        shape = (int(rng.integers(3, 20)), int(rng.integers(8, 600)), int(rng.integers(8, 600)))
        gt = np.zeros(shape, bool)
        for _ in range(int(rng.integers(1, 4))):   # parts, possibly with empty slices between
            z, y, x = (int(rng.integers(0, s)) for s in shape)
            gt[z:z + int(rng.integers(1, 4)), y:y + int(rng.integers(1, 60)), x:x + int(rng.integers(1, 60))] = True
        shift = int(rng.integers(0, 6))
        box = cvpr_initial_box_3d(gt, shift)
        assert box.to_challenge() == {k: int(v) for k, v in challenge_box(gt, shift).items()}


def test_the_key_slice_is_the_middle_of_the_slices_with_ground_truth():
    gt = np.zeros((30, 512, 512), bool)
    gt[2:4, 100:120, 200:260] = True         # slices 2, 3
    gt[20:25, 90:130, 190:270] = True        # slices 20..24: 7 slices with ground truth
    box = cvpr_initial_box_3d(gt)
    assert (box.z_min, box.z_max, box.z_mid) == (2, 24, 21)   # not (2 + 24) // 2 = 13, which is empty
    assert box.box == BBox(190, 90, 269, 129)
    shifted = cvpr_initial_box_3d(gt, shift=5)                 # 5 px at 256 → 10 px at 512
    assert shifted.box == BBox(180, 80, 279, 139)
    edge = np.zeros((3, 64, 64), bool); edge[1, 0:5, 60:64] = True
    assert cvpr_initial_box_3d(edge, 5).box == BBox(59, 0, 63, 5)  # kept inside the image
    with pytest.raises(ValueError, match="empty"):
        cvpr_initial_box_3d(np.zeros((3, 4, 4), bool))
    with pytest.raises(ValueError, match=">= 0"):
        cvpr_initial_box_3d(gt, -1)
