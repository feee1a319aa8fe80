import json

import numpy as np
import pytest
from PIL import Image

from msagent import protocol
from msagent.cli import main
from msagent.generation.records import make_row, read_trajectories
from msagent.generation.shards import ShardResult, commit
from msagent.generation.stats import compute_stats
from msagent.types import BBox, Case, Point, Step, Trajectory, encode_mask

SIZE = (40, 50)


def _step(index, kind, iou=None, previews=0, accepted=None):
    if kind == "box":
        action = protocol.parse_action(protocol.bbox_action(BBox(5, 5, 30, 30), SIZE).raw_text)
    elif kind in ("+", "-"):
        action = protocol.parse_action(protocol.point_action(Point(10, 10, kind == "+"), SIZE).raw_text)
    else:
        action = protocol.parse_action(protocol.stop_action().raw_text)
    usage = {"expert_previews": previews}
    if accepted is not None:
        usage["expert_accepted"] = accepted
    mask = None if kind == "stop" else np.zeros(SIZE, bool)
    return Step(index, action.raw_text, action, mask=mask, iou=iou, dice=iou, usage=usage)


CASES = [  # (dataset, class, requested strategy, steps, kept, reason)
    ("d1", "liver", "box", [("box", .5, 1, 1), ("+", .7, 2, 1), ("stop", None, 0, None)], True, ""),
    ("d1", "kidney", "click", [("box", .6, 1, 1), ("-", .65, 1, 1), ("stop", None, 6, 0)], True, ""),
    ("d2", "liver", "box", [("box", .2, 3, 1), ("stop", None, 0, None)], False, "low_final_iou"),
]


@pytest.fixture
def trajectory_set(tmp_path):
    rows = []
    for index, (dataset, klass, requested, steps, kept, reason) in enumerate(CASES):
        meta = {"dataset": dataset, "class": klass, "strategy": "box"}
        if requested != "box":
            meta["requested_strategy"] = requested
        trajectory = Trajectory(klass, SIZE, tuple(_step(i, *s) for i, s in enumerate(steps)),
                                "stop", f"{dataset}/{index}", meta=meta)
        case = Case(f"{dataset}/{index}", np.zeros(SIZE + (3,), np.uint8), klass,
                    np.zeros(SIZE, bool), {"dataset": dataset, "class": klass})
        rows.append(make_row(case_index=index, sample=0, case=case, trajectory=trajectory, kept=kept,
                             reason=reason, image_path="images/x.png", image_sha256="x",
                             overlay_path=None, ground_truth_rle=encode_mask(case.ground_truth),
                             backbone="test", generator="hybrid"))
    commit(tmp_path, ShardResult(0, rows, {}, len(rows)))
    return tmp_path


def test_hand_computed_statistics(trajectory_set):
    stats = compute_stats(read_trajectories(trajectory_set))
    assert (stats["trajectories"], stats["kept"], stats["dropped"]) == (3, 2, {"low_final_iou": 1})
    assert stats["strategies"] == {"box": 2, "click->box": 1}
    assert stats["turns_histogram"] == {"2": 2} and stats["mean_turns"] == 2.0
    assert stats["actions"] == {"add_bbox": 2, "add_point+": 1, "add_point-": 1, "stop_action": 2,
                                "invalid": 0}
    assert stats["iou_by_step"] == [{"step": 1, "mean": pytest.approx(0.55), "n": 2},
                                    {"step": 2, "mean": pytest.approx(0.675), "n": 2}]
    assert stats["final_iou"]["mean"] == pytest.approx(0.675)
    acceptance = stats["acceptance"]
    assert (acceptance["previews"], acceptance["accepted"], acceptance["decisions"]) == (14, 5, 6)
    assert acceptance["candidate_rate"] == pytest.approx(5 / 14)
    assert acceptance["decision_rate"] == pytest.approx(5 / 6)
    assert stats["by_dataset"]["d2"]["keep_rate"] == 0.0 and stats["by_dataset"]["d1"]["kept"] == 2
    assert stats["by_class"]["liver"]["trajectories"] == 2 and stats["by_class"]["liver"]["kept"] == 1


@pytest.mark.slow
def test_stats_cli_writes_json_and_png(trajectory_set, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["stats", str(trajectory_set), "--out", str(out)]) == 0
    assert "3 trajectories, 2 kept" in capsys.readouterr().out
    written = json.loads((out / "stats.json").read_text())
    assert written == json.loads(json.dumps(compute_stats(read_trajectories(trajectory_set))))
    with Image.open(out / "stats.png") as png:
        assert png.format == "PNG" and png.size == (1000, 750)
