"""Hostile inputs to the 3-D features: odd options and arrays for segment_volume and the CLI,
the bounds of the web app's volume sessions, temporary folders, serialized runs. Each test is a
regression test for a bug found by attacking them (tiny volumes, the stand-in backbones)."""

from __future__ import annotations

import gc
import glob
import json
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import msagent
from msagent.errors import InvalidInput, MsAgentError
from msagent.types import MaskPrediction


class Bright(msagent.Segmenter):
    """As in tests/test_volume.py: a box selects the bright pixels inside it; a positive click
    adds a 2-px disk, a negative one removes one; the score is the bright fraction of the box."""

    name = "bright"
    multimask_default = False

    def __init__(self):
        super().__init__(cache_size=4)
        self.encodes = 0

    def encode_image(self, image):
        self.encodes += 1
        return image[:, :, 0] > 120

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        out = []
        for prompts in prompt_sets:
            bright = embedding.features
            mask = np.zeros_like(bright)
            box = prompts.box
            if box is not None:
                mask[box.y1:box.y2 + 1, box.x1:box.x2 + 1] = bright[box.y1:box.y2 + 1, box.x1:box.x2 + 1]
            yy, xx = np.mgrid[:bright.shape[0], :bright.shape[1]]
            for p in prompts.points:
                disk = (yy - p.y) ** 2 + (xx - p.x) ** 2 <= 4
                mask = mask | disk if p.positive else mask & ~disk
            area = 1 if box is None else (box.x2 - box.x1 + 1) * (box.y2 - box.y1 + 1)
            low = np.full((256, 256), -10.0, np.float32)
            low[:mask.shape[0], :mask.shape[1]] = np.where(mask, 10.0, -10.0)[:256, :256]
            out.append(MaskPrediction(mask, low, float(mask.sum()) / area))
        return out


def tube(count=8, size=(20, 30)):
    """A bright disk through ``count`` slices (D, H, W) on a background darkening slice by slice,
    and its mask."""
    volume = np.full((count, *size), 20.0) + np.arange(count)[:, None, None] * 2.0
    yy, xx = np.mgrid[:size[0], :size[1]]
    mask = np.stack([(yy - size[0] // 2) ** 2 + (xx - size[1] // 2) ** 2 <= (4 + z % 3) ** 2
                     for z in range(count)])
    volume[mask] = 200.0
    return volume, mask


# -- segment_volume and the CLI: bad options are InvalidInput, before any backbone loads -------
@pytest.mark.parametrize("options, name", [
    ({"max_turns": 0}, "max_turns"), ({"max_turns": "3"}, "max_turns"),
    ({"review_slices": -1}, "review_slices"), ({"review_slices": 1.5}, "review_slices"),
    ({"propagation": "3d"}, "propagation"), ({"survey_slices": 0}, "survey_slices"),
    ({"max_in_memory": "a"}, "max_in_memory"), ({"min_area": "a"}, "min_area"),
])
def test_segment_volume_refuses_bad_options_with_invalid_input(options, name):
    volume, mask = tube(count=4, size=(20, 30))
    with pytest.raises(InvalidInput, match=name):
        msagent.segment_volume(volume, "tube", backbone=Bright(), policy="expert",
                               ground_truth=mask, **options)


def test_a_ragged_ground_truth_is_invalid_input():
    volume, _ = tube(count=4, size=(20, 30))
    with pytest.raises(InvalidInput, match="ground truth"):
        msagent.segment_volume(volume, "tube", backbone=Bright(), policy="expert",
                               ground_truth=[[1], [1, 2]])


@pytest.mark.parametrize("extra", [["--review-slices", "-1"], ["--max-turns", "0"]])
def test_cli_3d_bad_counts_exit_2_without_a_traceback(tmp_path, capsys, extra):
    nib = pytest.importorskip("nibabel")
    from msagent.cli import main

    data = np.full((24, 20, 3), 100, np.int16)
    data[8:16, 6:14, :] = 900
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "vol.nii.gz")
    nib.save(nib.Nifti1Image((data > 500).astype(np.uint8), np.eye(4)), tmp_path / "gt.nii.gz")
    try:
        code = main(["segment", str(tmp_path / "vol.nii.gz"), "box", "--3d", "--backbone",
                     "mybackbone", "--policy", "oracle-box", "--ground-truth",
                     str(tmp_path / "gt.nii.gz"), *extra])
    except SystemExit as exc:  # argparse's refusal
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and extra[0] in err
