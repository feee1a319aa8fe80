"""Image ↔ model-input geometry on extreme aspect ratios: every side keeps at least one pixel."""

from __future__ import annotations

import numpy as np
import pytest

import msagent
from msagent.backbones.geometry import InputGeometry
from msagent.types import BBox, Prompts

EXTREME = [(1, 600), (600, 1), (1, 513), (3000, 2), (2, 3000), (1, 1)]


@pytest.mark.parametrize("shape", EXTREME)
@pytest.mark.parametrize("mode", ["longest_side", "stretch"])
def test_every_side_keeps_a_pixel(shape, mode):
    geometry = InputGeometry(shape, 256, mode)
    new_h, new_w = geometry.resized_hw
    assert new_h >= 1 and new_w >= 1 and max(new_h, new_w) <= 256
    image = np.full(shape + (3,), 200, np.uint8)
    resized = geometry.resize_image(image)
    assert resized.shape == (256, 256, 3) and resized[:new_h, :new_w].min() == 200
    crop_h, crop_w = geometry.low_res_crop()
    assert 1 <= crop_h <= 256 and 1 <= crop_w <= 256


@pytest.mark.slow
@pytest.mark.parametrize("shape", EXTREME[:5])
def test_litemedsam_segments_extreme_aspect_ratios(litemedsam, shape):
    image = np.random.default_rng(0).integers(0, 255, shape + (3,), dtype=np.uint8)
    height, width = shape
    prediction = litemedsam.decode(litemedsam.encode(image), Prompts(box=BBox(0, 0, width - 1, height - 1)))
    assert prediction.mask.shape == shape and prediction.low_res_logits.shape == (256, 256)
    assert np.isfinite(prediction.low_res_logits).all()


@pytest.mark.slow
def test_segment_on_a_one_pixel_row_ends_cleanly(litemedsam):
    image = np.random.default_rng(1).integers(0, 255, (1, 600, 3), dtype=np.uint8)
    gt = np.zeros((1, 600), bool)
    gt[0, 100:400] = True
    result = msagent.segment(image, "a line", backbone=litemedsam, policy="expert", ground_truth=gt)
    assert result.mask.shape == (1, 600)
    assert result.trajectory.stop_reason  # an ended episode, not an exception
