import numpy as np
import pytest

from msagent import clicker, metrics
from msagent.reward import MedSAMReward
from msagent.types import Action, Point, Step, Trajectory


def test_dice_and_iou_hand_computed():
    a = np.zeros((4, 4), bool); a[:2, :2] = True          # 4 px
    b = np.zeros((4, 4), bool); b[:2, :3] = True          # 6 px, overlap 4
    assert metrics.iou(a, b) == pytest.approx(4 / 6)
    assert metrics.dice(a, b) == pytest.approx(8 / 10)
    empty = np.zeros((4, 4), bool)
    assert metrics.dice(empty, empty) == 1.0 and metrics.iou(a, empty) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.iou(a, np.zeros((3, 3), bool))


def test_nsd_tolerance():
    gt = np.zeros((40, 40), bool); gt[10:30, 10:30] = True
    shifted = np.roll(gt, 2, axis=1)
    assert metrics.nsd(gt, gt, tolerance=0) == 1.0
    assert metrics.nsd(shifted, gt, tolerance=2) == 1.0
    partial = metrics.nsd(shifted, gt, tolerance=1)
    assert 0.5 < partial < 1.0  # the left/right borders are 2 px off, top/bottom mostly match
    assert metrics.nsd(np.zeros_like(gt), gt) == 0.0


def test_noc_and_auc():
    assert metrics.noc([0.5, 0.86, 0.95], 0.85) == 2
    assert metrics.noc([0.5] * 30, 0.9) == 20  # capped at 20
    assert metrics.noc([0.5] * 25 + [0.95], 0.9) == 20  # reached only after 20 clicks
    assert metrics.curve_auc([0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.curve_auc([0.0, 1.0]) == pytest.approx(0.5)


def test_aggregate_by_group():
    rows = [{"c": "a", "dice": 1.0}, {"c": "a", "dice": 0.5}, {"c": "b", "dice": 0.0}]
    out = metrics.aggregate(rows, ["dice"], by="c")
    assert out["a"] == {"n": 2, "dice": 0.75} and out["b"]["dice"] == 0.0


def traj(ious, dices, stop=True):
    steps = [Step(i, "", Action("add_point", {"point_2d": [1, 1], "point_type": "positive"}),
                  mask=np.ones((2, 2), bool), iou=v, dice=d) for i, (v, d) in enumerate(zip(ious, dices))]
    if stop:
        steps.append(Step(len(steps), "", Action("stop_action", {})))
    return Trajectory("t", (2, 2), tuple(steps))


def test_medsam_reward_hand_computed():
    reward = MedSAMReward()
    one = reward.score(traj([0.8], [0.9]))
    assert one.format == 1.0 and one.penalty == 0 and one.bonus == 0
    assert one.score == pytest.approx(0.2 + 0.8 * 0.85)
    three = reward.score(traj([0.5, 0.9, 0.8], [0.6, 0.95, 0.85]))
    penalty = (0.9 - 0.8) + 0.03
    bonus = 0.1 * 0.4
    assert three.penalty == pytest.approx(penalty) and three.bonus == pytest.approx(bonus)
    assert three.quality == pytest.approx(0.5 * 0.8 + 0.5 * 0.85 - penalty + bonus)
    no_stop = reward.score(traj([0.8], [0.9], stop=False))
    assert no_stop.format == 0.5
    nothing = reward.score(Trajectory("t", (2, 2), ()))
    assert nothing.score == 0.0 and nothing.turns == 0


def test_reward_needs_ground_truth_metrics():
    t = traj([0.5], [0.5])
    t = Trajectory("t", (2, 2), (Step(0, "", t.steps[0].action, mask=np.ones((2, 2), bool)),))
    with pytest.raises(ValueError, match="ground_truth"):
        MedSAMReward().score(t)


def test_click_lands_at_the_center_of_the_larger_error():
    gt = np.zeros((50, 50), bool); gt[10:31, 10:31] = True   # 21×21 square, centre (20, 20)
    click = clicker.next_click(gt, None)
    assert click == Point(20, 20, True)
    pred = gt.copy(); pred[35:48, 35:48] = True               # a 13×13 false positive blob
    pred[10:31, 10:31] = True
    assert clicker.next_click(gt, pred) == Point(41, 41, False)


def test_click_at_image_border_region_uses_padding():
    gt = np.zeros((20, 20), bool); gt[:, :5] = True            # touches the left border
    click = clicker.next_click(gt, None)
    assert click.positive and click.x == 2  # centre of the 5-px band: the border counts as boundary


def test_clicks_never_repeat_and_none_when_perfect():
    gt = np.zeros((9, 9), bool); gt[4, 4] = True
    assert clicker.next_click(gt, gt) is None
    assert clicker.next_click(gt, None, exclude=[Point(4, 4)]) is None
    candidates = clicker.click_candidates(np.pad(np.ones((10, 10), bool), 5), None, count=5,
                                          rng=np.random.default_rng(1))
    assert len(set(candidates)) == 5


# -- issue 15: RITM's tie rule, exact and reproducible distances, list inputs -------------------

def test_a_tie_between_error_regions_goes_to_the_false_positives():
    # RITM's Clicker: is_positive = fn_max > fp_max. msagent clicked positive (>=) before.
    gt = np.zeros((30, 30), bool); gt[2:7, 2:7] = True
    pred = np.zeros_like(gt); pred[20:25, 20:25] = True       # equal 5×5 FN and FP squares
    assert clicker.next_click(gt, pred) == Point(22, 22, False)


def test_a_shifted_prediction_ties_and_the_first_maximum_in_raster_order_wins():
    gt = np.zeros((14, 14), bool); gt[2:10, 2:10] = True
    pred = np.roll(gt, 2, axis=1)                              # FN cols 2-3, FP cols 10-11
    regions = clicker.error_regions(gt, pred)
    assert regions.fn_max == regions.fp_max == 1.0
    assert clicker.next_click(gt, pred) == Point(10, 2, False)  # RITM: np.where(...)[0]
    # with that pixel clicked the next tie goes to the next FP pixel in raster order
    assert clicker.next_click(gt, pred, [Point(10, 2)]) == Point(11, 2, False)


def test_a_strictly_larger_false_negative_still_clicks_positive():
    gt = np.zeros((30, 30), bool); gt[2:9, 2:9] = True         # 7×7 FN (depth 4)
    pred = np.zeros_like(gt); pred[20:25, 20:25] = True       # 5×5 FP (depth 3)
    assert clicker.next_click(gt, pred) == Point(5, 5, True)


def test_inner_distance_is_the_exact_edt_of_the_padded_image():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for _ in range(20):
        region = rng.random((37, 53)) < 0.6
        full = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        assert np.array_equal(clicker.inner_distance(region), full)
    assert clicker.inner_distance(np.zeros((3, 4), bool)).max() == 0


def test_same_inputs_give_the_same_clicks_at_one_and_two_threads():
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    rng = np.random.default_rng(7)
    pairs = []
    for _ in range(24):
        gt = np.zeros((300, 300), bool)
        y, x, s = *rng.integers(20, 200, 2), int(rng.integers(30, 90))
        gt[y:y + s, x:x + s] = True
        pairs.append((gt, np.roll(gt, int(rng.integers(-9, 10)), axis=int(rng.integers(0, 2)))))
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = [clicker.next_click(g, p) for g, p in pairs]
        cv2.setNumThreads(2)
        with ThreadPoolExecutor(2) as pool:
            two = list(pool.map(lambda gp: clicker.next_click(*gp), pairs * 2))
    finally:
        cv2.setNumThreads(before)
    assert two == one * 2


def test_list_inputs_are_converted():
    gt = [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert clicker.next_click(gt, None) == Point(1, 1, True)
    found = clicker.click_candidates(gt, [[0] * 4] * 4, count=3, rng=np.random.default_rng(0))
    assert found[0] == Point(1, 1, True) and len(found) == 3


def test_curve_auc_is_the_challenges_cumulative_trapezoid_bit_for_bit(monkeypatch):
    from scipy import integrate

    monkeypatch.delattr(np, "trapezoid", raising=False)  # NumPy 1.26 (the declared floor) has none
    rng = np.random.default_rng(11)
    for n in (2, 5, 9, 20, 33):
        for _ in range(50):
            curve = rng.random(n)
            challenge = integrate.cumulative_trapezoid(curve, np.arange(n))[-1]
            assert metrics.curve_auc(curve, normalize=False) == challenge


@pytest.mark.slow
def test_empty_mask_conventions_are_monai_ignore_empty_false():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    assert metrics.dice(empty, empty) == metrics.iou(empty, empty) == 1.0
    assert metrics.dice(empty, full) == metrics.iou(full, empty) == 0.0
    assert metrics.nsd(empty, empty) == 1.0 and metrics.nsd(full, empty) == 0.0
