"""3-D runs with real LiteMedSAM weights on the MNI152 T1 volume (nilearn ships it with its
brain mask). LiteMedSAM is weak on this MRI (per-slice oracle boxes give a 3-D Dice near 0.5
for the brain), so the bounds are loose: these tests show the pieces work with a real model."""

from __future__ import annotations

import numpy as np
import pytest

import msagent
from msagent import io, metrics
from msagent.evaluation.volume_protocols import run_cvpr_3d
from msagent.volume.stack import build_stack, label_stack

pytestmark = pytest.mark.slow  # every test here runs real weights for seconds

SLICES = slice(34, 42)  # 8 axial slices through the middle of the brain


@pytest.fixture(scope="module")
def brain():
    from nilearn import datasets as nl

    from msagent.datasets.folder import _mni152_labels

    template = nl.load_mni152_template(resolution=2)
    volume = io.Volume(np.asarray(template.get_fdata())[:, :, SLICES], np.asarray(template.affine))
    return volume, _mni152_labels(2)["brain"][:, :, SLICES]


def test_expert_key_slice_propagation_and_review_on_mni152(brain, litemedsam, monkeypatch):
    volume, gt = brain
    encoded = []  # the image encoder's own calls (a run's slices bypass the 2-D cache)
    real_encode = litemedsam.encode_image
    monkeypatch.setattr(litemedsam, "encode_image", lambda image: encoded.append(1) or real_encode(image))
    result = msagent.segment_volume(volume, "brain", backbone=litemedsam, policy="expert",
                                    ground_truth=gt, review_slices=1)
    trajectory = result.trajectory
    assert trajectory.propagation == "generic" and trajectory.key_rule == "largest_gt_area"
    assert result.mask.shape == gt.shape and result.dice > 0.5
    assert result.dice == pytest.approx(metrics.dice(result.mask, gt))
    # each of the 8 slices encoded once, the key and review episodes included
    assert trajectory.counts["encodes"] == len(encoded) == 8
    review, *_ = [e for e in trajectory.episodes if e.role == "review"]  # unchanged ones are free
    key_dice = result.slice_dice[trajectory.key_slice]
    assert key_dice > 0.6 and review.slice != trajectory.key_slice


def test_cvpr_3d_protocol_on_mni152(brain, litemedsam):
    volume, gt = brain
    stack = build_stack(volume)
    outcome = run_cvpr_3d(litemedsam, stack.slices, label_stack(gt, stack, "gt"))
    dice = outcome.curves["dice"]
    assert len(dice) == 6 and all(0 <= d <= 1 for d in dice) and dice[0] > 0.3
    assert 0 <= outcome.values["dsc_auc"] <= 4 and outcome.turns == 6
