import json

import numpy as np
import pytest
from PIL import Image

import msagent
from msagent import render
from msagent.cli import main
from msagent.errors import InvalidImage, InvalidMask, InvalidTarget, PluginNotFound


def test_segment_with_names_instances_and_env_defaults(monkeypatch, phantom):
    image, gt = phantom
    result = msagent.segment(image, "blob", backbone="mybackbone", policy="oracle-box",
                             ground_truth=gt, backbone_options={"threshold": 120})
    assert result.mask.shape == gt.shape and result.turns == 1 and result.iou > 0.95
    monkeypatch.setenv("MSAGENT_BACKBONE", "mybackbone")
    monkeypatch.setenv("MSAGENT_POLICY", "expert")
    again = msagent.segment(Image.fromarray(image), "blob", ground_truth=gt.astype(np.uint8))
    assert again.trajectory.meta["backbone"] == "mybackbone"
    assert again.trajectory.meta["policy"] == "expert"


def test_unavailable_paper_default_says_what_works_offline(monkeypatch, phantom, isolated_registry):
    monkeypatch.delenv("MSAGENT_BACKBONE", raising=False)
    monkeypatch.setenv("MSAGENT_LOAD_PLUGINS", "mybackbone")  # read when the fresh registry is built
    with pytest.raises(PluginNotFound) as info:
        msagent.segment(phantom[0], "blob", policy="oracle-box", ground_truth=phantom[1])
    assert "medsam2" in str(info.value) and "litemedsam" in str(info.value)


@pytest.mark.parametrize("kwargs, error", [
    ({"image": np.zeros((30, 30, 30)), "target": "x"}, InvalidImage),
    ({"image": np.zeros((30, 30)), "target": "  "}, InvalidTarget),
    ({"image": np.zeros((30, 30)), "target": "x", "ground_truth": np.ones((31, 30))}, InvalidMask),
    ({"image": np.zeros((30, 30)), "target": "x", "ground_truth": np.zeros((30, 30))}, InvalidMask),
])
def test_segment_bad_input(kwargs, error):
    with pytest.raises(error):
        msagent.segment(**kwargs, backbone="mybackbone", policy="oracle-box")


def test_cli_plugins_lists_kind_package_version(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mine = next(r for r in rows if r["name"] == "mybackbone")
    assert mine == {"name": "mybackbone", "kind": "segmenter", "package": "msagent-example-plugin",
                    "version": "0.0.1", "description": "Example third-party threshold backbone"}


def test_cli_segment_writes_mask_overlay_and_trajectory(tmp_path, phantom, capsys):
    image, gt = phantom
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / "gt.png")
    code = main(["segment", str(tmp_path / "img.png"), "blob", "--backbone", "mybackbone",
                 "--policy", "expert", "--ground-truth", str(tmp_path / "gt.png"),
                 "--backbone-option", "threshold=120", "--out", str(tmp_path / "m.png"),
                 "--overlay", str(tmp_path / "o.png"), "--trajectory", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert code == 0 and "turn 1: add_bbox" in out and "IoU" in out
    traj = msagent.Trajectory.from_json((tmp_path / "t.json").read_text())
    saved = np.asarray(Image.open(tmp_path / "m.png")) > 0
    assert np.array_equal(saved, traj.final_mask)
    assert Image.open(tmp_path / "o.png").height == render.READABLE + 22  # tiles + legend


def test_cli_errors_exit_nonzero_with_a_message(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    assert main(["segment", str(tmp_path / "bad.png"), "x", "--backbone", "mybackbone",
                 "--policy", "oracle-box"]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "bad.png"), "x", "--backbone", "nope"]) == 2
    assert main(["segment", "x.png", "x", "--backbone-option", "novalue"]) == 2


# -- issue 19 item 1: an episode without a mask is a failure, one rule everywhere -----------
def test_segment_raises_segmentation_failed_with_the_trajectory_when_no_mask(phantom):
    from msagent.errors import PolicyError, SegmentationFailed

    class Down(msagent.Policy):
        name = "down"

        def act(self, episode):
            raise PolicyError("cannot reach the API")

    with pytest.raises(SegmentationFailed, match="policy_error") as caught:
        msagent.segment(phantom[0], "blob", backbone="mybackbone", policy=Down())
    assert caught.value.stop_reason == "policy_error"
    assert caught.value.trajectory.steps[0].error.startswith("policy failed")


def test_result_says_ok_and_stop_reason(phantom):
    image, gt = phantom
    result = msagent.segment(image, "blob", backbone="mybackbone", policy="expert",
                             ground_truth=gt, backbone_options={"threshold": 120})
    assert result.ok and result.stop_reason in ("stop", "max_turns") and result.error is None


def test_expert_without_ground_truth_is_refused_before_any_backbone_loads(monkeypatch):
    from msagent.errors import InvalidInput
    from msagent.plugins import loading

    monkeypatch.setattr(loading, "resolve", lambda *a, **k: pytest.fail("nothing may load"))
    with pytest.raises(InvalidInput, match="ground_truth="):
        msagent.segment(np.zeros((32, 32), np.uint8), "liver", backbone="imisnet", policy="expert")
