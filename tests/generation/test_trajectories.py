import numpy as np
import pytest

import msagent
from msagent import clicker, protocol
from msagent.errors import InvalidInput
from msagent.generation import HybridConfig, HybridGenerator
from msagent.policies import rationale
from msagent.policies.expert import mask_bbox
from msagent.testing import ComponentBackbone
from msagent.types import Case, Point


def blobs():
    """Three bright squares; the target is the two on the left (a box around them also
    catches part of the third)."""
    image = np.full((96, 128, 3), 30, np.uint8)
    gt = np.zeros((96, 128), bool)
    for y, x in ((10, 10), (60, 30)):
        gt[y:y + 24, x:x + 24] = True
    image[gt] = 200
    image[38:56, 10:28] = 200  # a distractor inside the targets' box
    return Case("blobs/0", image, "left squares", gt, {"dataset": "toy", "class": "squares"})


# -- the clicker on known geometry ------------------------------------------------------
def test_first_click_lands_at_the_center_of_a_square():
    gt = np.zeros((50, 60), bool)
    gt[10:31, 20:41] = True  # 21×21 square centred at (30, 20)
    assert clicker.next_click(gt, None) == Point(30, 20, True)


def test_corrective_click_goes_to_the_larger_error_and_its_interior():
    gt = np.zeros((60, 100), bool)
    gt[10:50, 10:70] = True
    pred = np.zeros_like(gt)
    pred[10:50, 10:30] = True        # misses a 40×40 square on the right
    pred[20:26, 80:86] = True        # and adds a small false positive
    click = clicker.next_click(gt, pred)
    assert click.positive and click.x in (49, 50) and click.y in (29, 30)  # the square's centre
    pred2 = gt.copy()
    pred2[0:60, 74:100] = True       # a false-positive band, wider than any miss
    click2 = clicker.next_click(gt, pred2)
    regions = clicker.error_regions(gt, pred2)
    assert not click2.positive and regions.fp_max > regions.fn_max
    assert regions.fp_distance[click2.y, click2.x] == regions.fp_max and click2.x in (86, 87)
    again = clicker.next_click(gt, pred2, exclude=[click2])
    assert again != click2 and not again.positive


def test_candidates_start_with_the_standard_click_and_stay_in_the_error_regions():
    gt = np.zeros((60, 80), bool)
    gt[10:50, 10:50] = True
    pred = np.zeros_like(gt)
    pred[10:50, 10:30] = True
    pred[5:15, 60:75] = True
    found = clicker.click_candidates(gt, pred, count=6, rng=np.random.default_rng(0))
    assert found[0] == clicker.next_click(gt, pred) and len(set(found)) == 6
    assert not found[1].positive  # the best click of the other region comes second
    for p in found:
        assert (gt[p.y, p.x] and not pred[p.y, p.x]) if p.positive else (pred[p.y, p.x] and not gt[p.y, p.x])


# -- the hybrid generator with a segmenter of known behaviour ---------------------------------
def test_sequential_click_adds_the_second_square_and_stops_when_perfect():
    gen = HybridGenerator(box_ratio=0.0, min_final_iou=0.9)
    attempt = next(gen.attempt(blobs(), ComponentBackbone()))
    steps = attempt.trajectory.steps
    assert attempt.kept and [s.action.kind for s in steps] == ["add_point", "add_point", "stop_action"]
    assert [s.iou for s in steps[:2]] == [pytest.approx(0.5), 1.0]
    assert "accurately" in steps[2].raw_text or "well" in steps[2].raw_text or "closely" in steps[2].raw_text


def test_box_to_point_removes_the_distractor_with_a_negative_click():
    gen = HybridGenerator(box_ratio=1.0, box_jitter=0.0)
    trajectory = next(gen.generate(blobs(), ComponentBackbone()))
    kinds = [(s.action.kind, s.action.arguments.get("point_type")) for s in trajectory.steps]
    assert kinds == [("add_bbox", None), ("add_point", "negative"), ("stop_action", None)]
    assert trajectory.steps[1].iou == 1.0
    negative = trajectory.steps[1]
    point = protocol.action_to_prompt(negative.action, (96, 128))
    assert 10 <= point.x < 28 and 38 <= point.y < 56  # inside the distractor
    where = rationale.where(point.x, point.y, 128, 96)
    assert where in negative.raw_text  # the rationale names where the error is


def test_click_fallback_runs_box_to_point_on_box_only_backbones():
    case = blobs()
    fallback = next(HybridGenerator(box_ratio=0.0).attempt(case, ComponentBackbone(clicks_alone=False)))
    assert fallback.trajectory.meta["strategy"] == "box"
    assert fallback.trajectory.meta["requested_strategy"] == "click"
    assert fallback.trajectory.steps[0].action.kind == "add_bbox" and fallback.kept
    strict = next(HybridGenerator(box_ratio=0.0, click_fallback=False).attempt(
        case, ComponentBackbone(clicks_alone=False)))
    assert not strict.kept and strict.reason == "no_first_action"
    assert strict.trajectory.steps[0].usage == {"expert_previews": 6, "expert_accepted": 0}


def test_filters_budget_and_empty_ground_truth():
    case = blobs()
    low = next(HybridGenerator(box_ratio=0.0, max_actions=1, min_final_iou=0.9).attempt(case, ComponentBackbone()))
    assert not low.kept and low.reason == "low_final_iou"
    assert [s.action.kind for s in low.trajectory.steps] == ["add_point", "stop_action"]
    no_stop = next(HybridGenerator(box_ratio=0.0, max_actions=1, end_with_stop=False,
                                   min_final_iou=0.0).attempt(case, ComponentBackbone()))
    assert no_stop.trajectory.stop_reason == "max_turns" and no_stop.kept
    empty = Case("e", case.image, "nothing", np.zeros((96, 128), bool))
    assert next(HybridGenerator().attempt(empty, ComponentBackbone())).reason == "empty_ground_truth"


def test_strategy_mix_follows_the_ratio_and_the_options_are_checked():
    gen = msagent.load_trajectory_generator("hybrid", box_ratio=0.3, seed=7)
    assert isinstance(gen, HybridGenerator) and gen.config == HybridConfig(box_ratio=0.3, seed=7)
    share = np.mean([gen.strategy(f"case/{i}") == "box" for i in range(2000)])
    assert abs(share - 0.3) < 0.04
    assert gen.strategy("case/1") == HybridGenerator(box_ratio=0.3, seed=7).strategy("case/1")
    with pytest.raises(InvalidInput, match="unknown hybrid generator option"):
        HybridGenerator(jitter=0.2)
    with pytest.raises(InvalidInput, match="invalid hybrid generator option"):
        HybridGenerator(box_ratio=1.5)


def test_rationales_are_varied_and_fill_every_field():
    rng = np.random.default_rng(0)
    fields = {"target": "liver", "where": "upper left", "size": "small", "extent": "a small"}
    for group in (rationale.BOX, rationale.FIRST_CLICK, rationale.POSITIVE, rationale.NEGATIVE,
                  rationale.STOP_GOOD, rationale.STOP_STUCK, rationale.STOP_BUDGET):
        texts = {rationale.pick(group, rng, **fields) for _ in range(60)}
        assert len(texts) == len(group) >= 3 and not any("{" in t for t in texts)


# -- with the real LiteMedSAM --------------------------------------------------------------
@pytest.fixture
def one_thread():
    """One torch thread: the generation jobs' default, and much faster on a busy 2-core box."""
    from msagent.generation.shards import torch_threads

    with torch_threads(1):
        yield


def _case(which, phantom, mni_slice):
    if which == "phantom":
        image, gt = phantom
        return Case("phantom/0", image, "bright ellipse", gt, {"dataset": "phantom"})
    image, gt = mni_slice
    return Case("mni/brain", msagent.io.to_rgb_uint8(image), "brain", gt, {"dataset": "mni"})


@pytest.mark.slow
def test_litemedsam_trajectories_are_deterministic_for_a_seed(litemedsam, phantom, mni_slice, one_thread):
    case = _case("mni", phantom, mni_slice)
    options = {"box_ratio": 1.0, "max_actions": 2, "min_final_iou": 0.0}
    runs = [next(HybridGenerator(seed=5, **options).attempt(case, litemedsam)) for _ in range(2)]
    assert runs[0].trajectory.to_json() == runs[1].trajectory.to_json()
    assert [s.action.kind for s in runs[0].trajectory.steps] == ["add_bbox", "add_point", "stop_action"]
    other = next(HybridGenerator(seed=6, **{**options, "max_actions": 1}).attempt(case, litemedsam))
    assert other.trajectory.steps[0].action != runs[0].trajectory.steps[0].action  # another jitter


@pytest.mark.slow
@pytest.mark.parametrize("which", ["phantom", "mni"])
def test_every_accepted_litemedsam_step_gains_at_least_tau(litemedsam, phantom, mni_slice, which,
                                                           one_thread):
    case = _case(which, phantom, mni_slice)
    tau = 0.01
    gen = HybridGenerator(box_ratio=1.0, box_jitter=0.1, tau=tau, target_iou=0.99, max_actions=3,
                          resamples=2, min_final_iou=0.0, seed=1)
    trajectory = next(gen.attempt(case, litemedsam)).trajectory
    ious = [s.iou for s in trajectory.executed_steps]
    assert ious[0] >= tau and all(b - a >= tau for a, b in zip(ious, ious[1:]))
    assert trajectory.steps[-1].action.kind == "stop_action"
    box = protocol.action_to_prompt(trajectory.steps[0].action, case.image.shape[:2])
    tight = mask_bbox(case.ground_truth)
    for got, want, side in zip(box.as_tuple(), tight.as_tuple(),
                               (tight.x2 - tight.x1 + 1, tight.y2 - tight.y1 + 1) * 2):
        assert abs(got - want) <= 0.1 * side + 1  # jitter up to 10% of the box side
    for step in trajectory.executed_steps[1:]:
        assert step.usage["expert_accepted"] == 1 and 1 <= step.usage["expert_previews"] <= 3


@pytest.mark.slow
def test_the_refine_strategy_starts_from_a_degraded_ground_truth(litemedsam, mni_slice):
    from msagent.export.conversation import conversation

    image, gt = mni_slice
    rgb = msagent.io.to_rgb_uint8(image)
    case = Case("brain-40", rgb, "brain", gt)
    plain, refining = HybridGenerator(seed=3), HybridGenerator(seed=3, refine_ratio=0.6)
    ids = [f"c{i}" for i in range(200)]
    strategies = [refining.strategy(i) for i in ids]
    assert 0.5 < strategies.count("refine") / len(ids) < 0.7
    assert all(plain.strategy(i) == s for i, s in zip(ids, strategies) if s != "refine")  # same draws
    assert "refine_ratio" not in plain.options() and refining.options()["refine_kinds"] == list(
        msagent.agent.refine.DEGRADATIONS)
    refine_id = next(i for i in ids if refining.strategy(i) == "refine")
    attempt = next(refining.attempt(attrs_evolve(case, refine_id), litemedsam))
    trajectory = attempt.trajectory
    assert trajectory.meta["strategy"] == "refine" and trajectory.meta["degradation"] in msagent.agent.refine.DEGRADATIONS
    assert trajectory.initial is not None and trajectory.initial.source.startswith("degraded:")
    assert msagent.metrics.iou(trajectory.final_mask, gt) >= trajectory.initial.iou
    again = next(refining.attempt(attrs_evolve(case, refine_id), litemedsam)).trajectory
    assert again.to_json() == trajectory.to_json()  # deterministic for a seed
    chat = conversation(trajectory, rgb)
    assert chat.messages[1]["content"].endswith(protocol.FIRST_USER_TEXT_REFINE.format(target="brain"))
    expected = protocol.policy_image(rgb, trajectory.initial.mask)
    assert np.array_equal(np.asarray(chat.images[0]), np.asarray(expected))


def attrs_evolve(case, case_id):
    import attrs

    return attrs.evolve(case, id=case_id)
