"""3-D surface metrics: NSD against MONAI (DeepMind's table), the reach-limited transform,
empty-mask conventions, volume_metrics."""

import warnings

import numpy as np
import pytest
from scipy import ndimage

from msagent import metrics


def blob(rng, shape, sigma=2.5, level=0.5):
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


def monai_nsd(pred, gt, tolerance, spacing):
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from monai.metrics import compute_surface_dice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_surface_dice(torch.as_tensor(pred)[None, None], torch.as_tensor(gt)[None, None],
                                     [tolerance], include_background=True, spacing=list(spacing),
                                     use_subvoxels=True)
    return float(value.item())


@pytest.mark.slow
def test_the_surface_area_table_is_deepminds_as_monai_ships_it():
    pytest.importorskip("monai")
    from monai.metrics.utils import _get_neighbour_code_to_normals_table

    normals = _get_neighbour_code_to_normals_table().numpy().astype(np.float64)  # eighths: exact
    rng = np.random.default_rng(0)
    for spacing in [(1.0, 1.0, 1.0)] + [tuple(rng.uniform(0.2, 5.0, 3)) for _ in range(20)]:
        s0, s1, s2 = spacing
        reference = np.linalg.norm(normals * [s1 * s2, s0 * s2, s0 * s1], axis=-1).sum(-1)
        assert np.abs(metrics._surface_areas(spacing) - reference).max() < 1e-12


@pytest.mark.slow
def test_nsd_3d_equals_monai_subvoxel_surface_dice_on_random_blobs():
    # MONAI's compute_surface_dice(use_subvoxels=True) implements DeepMind's surface Dice; it
    # sums in float32, hence 1e-6 rather than bit equality.
    rng = np.random.default_rng(1)
    diffs = []
    for case in range(24):
        shape = tuple(int(v) for v in rng.integers(10, 36, 3))
        gt = blob(rng, shape)
        pred = blob(rng, shape) | (gt & (rng.random(shape) < 0.9)) if case % 2 else np.roll(gt, 2, axis=case % 3)
        spacing = (1.0, 1.0, 1.0) if case < 4 else tuple(float(v) for v in rng.uniform(0.3, 3.5, 3))
        tolerance = float(rng.uniform(0.5, 4.0))
        ours = metrics.nsd(pred, gt, tolerance, spacing)
        diffs.append(abs(ours - monai_nsd(pred, gt, tolerance, spacing)))
    assert max(diffs) < 1e-6


@pytest.mark.slow
def test_nsd_3d_equals_monai_with_far_apart_parts_and_strong_anisotropy():
    # scattered blobs far apart exercise the reach-limited transform (nsd computes distances
    # only where a surface within the tolerance can be)
    rng = np.random.default_rng(2)
    for spacing in [(5.0, 0.7, 0.7), (0.5, 0.5, 3.0), (2.0, 1.0, 0.25)]:
        gt = np.zeros((40, 60, 50), bool); pred = np.zeros_like(gt)
        gt[3:12, 5:20, 5:18] = True
        pred[4:12, 6:21, 4:17] = True
        pred[30:36, 45:55, 38:47] = True          # a distant false positive
        gt[25:30, 2:8, 40:48] = True              # a distant missed part
        pred |= blob(rng, gt.shape, 1.5, 0.56)
        for tolerance in (0.5, 1.0, 2.0, 3.3):
            assert abs(metrics.nsd(pred, gt, tolerance, spacing) - monai_nsd(pred, gt, tolerance, spacing)) < 1e-6


@pytest.mark.slow
def test_nsd_2d_equals_monai_subvoxel_surface_dice():
    rng = np.random.default_rng(3)
    for case in range(30):
        shape = tuple(int(v) for v in rng.integers(8, 70, 2))
        gt, pred = blob(rng, shape, 2.0), blob(rng, shape, 2.0)
        if not (gt.any() and pred.any()):
            continue
        spacing = (1.0, 1.0) if case < 5 else tuple(float(v) for v in rng.uniform(0.3, 3.5, 2))
        tolerance = float(rng.uniform(0.5, 4.0))
        assert abs(metrics.nsd(pred, gt, tolerance, spacing) - monai_nsd(pred, gt, tolerance, spacing)) < 1e-6


def test_the_reach_limited_nsd_equals_the_exact_distances():
    rng = np.random.default_rng(4)
    for case in range(30):
        ndim = 2 + case % 2
        shape = tuple(int(v) for v in rng.integers(20, 48, ndim))
        gt, pred = blob(rng, shape, 1.5, 0.55), blob(rng, shape, 1.5, 0.55)
        if not (gt.any() and pred.any()):
            continue
        spacing = tuple(float(v) for v in rng.uniform(0.3, 3.0, ndim))
        d = metrics.surface_distances(pred, gt, spacing)     # exact distances everywhere
        size = "lengths" if ndim == 2 else "areas"
        for tolerance in (0.0, 0.7, 2.0, 5.0):
            close = d[f"{size}_gt"][d["distances_gt_to_pred"] <= tolerance].sum() \
                + d[f"{size}_pred"][d["distances_pred_to_gt"] <= tolerance].sum()
            exact = close / (d[f"{size}_gt"].sum() + d[f"{size}_pred"].sum())
            assert metrics.nsd(pred, gt, tolerance, spacing) == pytest.approx(exact, abs=1e-12)


def test_3d_conventions_and_spacing_checks():
    empty, cube = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
    cube[1:4, 1:4, 1:4] = True
    assert metrics.nsd(empty, empty) == 1.0 and metrics.nsd(cube, empty) == 0.0 == metrics.nsd(empty, cube)
    assert metrics.nsd(cube, cube, 0.0, (3.0, 0.5, 0.5)) == 1.0
    d = metrics.surface_distances(empty, cube)
    assert set(d) == {"distances_gt_to_pred", "distances_pred_to_gt", "areas_gt", "areas_pred"}
    assert np.isinf(d["distances_gt_to_pred"]).all() and d["areas_pred"].size == 0
    with pytest.raises(ValueError, match="one per array axis"):
        metrics.nsd(cube, cube, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        metrics.nsd(cube, cube, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        metrics.nsd(np.ones((2, 2, 2, 2), bool), np.ones((2, 2, 2, 2), bool))


def test_spacing_scales_3d_distances_per_axis():
    gt = np.zeros((20, 20, 20), bool); gt[5:15, 5:15, 5:15] = True
    pred = np.roll(gt, 2, axis=0)                        # 2 slices off along z
    assert metrics.nsd(pred, gt, 2.0) == 1.0
    assert metrics.nsd(pred, gt, 2.0, spacing=(0.5, 3.0, 3.0)) == 1.0   # 2 slices of 0.5 mm
    assert metrics.nsd(pred, gt, 2.0, spacing=(3.0, 0.5, 0.5)) < 1.0    # 6 mm off
    assert metrics.nsd(pred, gt, 6.0, spacing=(3.0, 0.5, 0.5)) == 1.0


def test_volume_metrics_and_the_challenges_nsd_floor():
    gt = np.zeros((10, 12, 12), bool); gt[2:8, 2:10, 2:10] = True
    pred = np.zeros_like(gt); pred[2:8, 2:10, 2:4] = True    # Dice 0.4
    out = metrics.volume_metrics(pred, gt, (2.0, 1.0, 1.0))
    assert out["dice"] == pytest.approx(2 * 96 / (96 + 384)) and out["iou"] == pytest.approx(96 / 384)
    assert out["nsd"] == pytest.approx(metrics.nsd(pred, gt, 2.0, (2.0, 1.0, 1.0))) and out["nsd"] > 0
    assert metrics.volume_metrics(pred, gt, nsd_min_dice=0.2)["nsd"] > 0
    assert metrics.volume_metrics(pred, gt, nsd_min_dice=0.4)["nsd"] == 0.0   # DSC ≤ floor: 0
    assert metrics.volume_metrics(gt, gt) == {"dice": 1.0, "iou": 1.0, "nsd": 1.0}
