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
