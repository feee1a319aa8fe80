import numpy as np

from msagent import render
from msagent.types import BBox, Point


def test_overlay_blends_only_mask_pixels_with_green():
    image = np.full((4, 4, 3), 200, np.uint8)
    mask = np.zeros((4, 4), bool); mask[0, 0] = True
    out = render.overlay(image, mask)
    assert tuple(out[0, 0]) == (100, 227, 100) and tuple(out[1, 1]) == (200, 200, 200)
    assert np.array_equal(render.overlay(image, None), image)


def test_strip_and_prompt_drawing():
    image = np.zeros((50, 80, 3), np.uint8)
    boxed = render.draw_prompt(image, BBox(5, 5, 40, 30))
    clicked = render.draw_prompt(image, Point(20, 20, False))
    assert boxed.any() and clicked[20, 20, 0] > 200
    sheet = render.strip([image, boxed, clicked], ["a", "b", "c"], height=100)
    assert sheet.shape[0] == 100 and sheet.shape[1] == 3 * 160 + 2 * 4


def test_annotate_enlarges_small_images_and_draws_ground_truth_and_both_click_kinds():
    from msagent.types import Prompts

    image = np.full((60, 50, 3), 128, np.uint8)
    mask = np.zeros((60, 50), bool); mask[10:40, 10:40] = True
    gt = np.zeros((60, 50), bool); gt[15:45, 15:45] = True
    prompts = Prompts(box=BBox(10, 10, 40, 40), points=(Point(20, 20, True), Point(35, 35, False)))
    out = render.annotate(image, mask, gt, prompts, current=prompts.points[-1])
    assert min(out.shape[:2]) >= render.READABLE                 # a size a reader can judge
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert render.GT_COLOR in colours and render.BOX_COLOR in colours
    scale = out.shape[0] // 60
    positive, negative = out[20 * scale + 5, 20 * scale + 5], out[35 * scale + 5, 35 * scale + 5]
    assert tuple(positive) == render.POSITIVE and tuple(negative) == render.NEGATIVE


def test_trajectory_strip_has_a_legend_and_readable_tiles(phantom):
    import msagent

    image, gt = phantom
    result = msagent.segment(image, "blob", backbone="mybackbone", policy="expert",
                             ground_truth=gt, backbone_options={"threshold": 120})
    sheet = render.trajectory_strip(np.dstack([image] * 3) if image.ndim == 2 else image,
                                    result.trajectory,
                                    ground_truth=gt)
    assert sheet.shape[0] == render.READABLE + 22
