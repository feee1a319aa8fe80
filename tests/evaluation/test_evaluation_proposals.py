"""``msagent eval --refine-from proposal``: each agent episode starts from the backbone's
proposal for the case's target; Dice before is the proposal's (turn 0), after the agent's; a
case where nothing matched is recorded as such (Dice before 0); a backbone that cannot
propose is refused before any case runs."""

import json

import numpy as np
import pytest

import msagent
from msagent.errors import InvalidInput
from msagent.evaluation import EvalConfig, RecordStore, evaluate, markdown_table
from msagent.testing import BrightBackbone, ProposingBackbone, make_phantom
from msagent.types import Case

PROPOSAL = EvalConfig(refine_from="proposal")


def cases(targets=("blob", "blob")):
    out = []
    for i, target in enumerate(targets):
        image, gt = make_phantom(96, 128, center=(48, 64), radii=(22, 30 + 2 * i), seed=i)
        out.append(Case(f"c{i}", image, target, gt))
    return out


def records(out):
    return {r.case_id: r for r in RecordStore(out / "records.jsonl").records()}


def test_dice_before_is_the_proposals_and_after_the_agents(tmp_path):
    backbone = ProposingBackbone(erode=4)
    summary = evaluate(cases(), tmp_path, backbones=[backbone], policies=["expert"],
                       config=PROPOSAL, progress=False, report=False)
    for record in records(tmp_path).values():
        values = record.values
        assert record.ok and values["initial_source"] == "proposal:proposing"
        assert values["proposal_matched"] is True and values["proposal_score"] == 0.9
        assert record.curves["dice"][0] == values["dice_before"] < record.dice  # turn 0 first
        assert values["dice_gain"] == pytest.approx(record.dice - values["dice_before"])
    assert backbone.encodes == 2 and backbone.proposals == 2  # one encode per episode
    group = summary["proposing/expert"]
    assert group["proposal_cases"] == 2 and group["proposal_unmatched"] == 0
    assert group["dice_before"] < group["dice"] and group["refine_not_worse"] == 2
    table = markdown_table(summary)
    assert "Refine (before: the initial mask, turn 0; after: the agent's)" in table
    assert f"| proposing | expert | 2 | {group['dice_before']:.3f} | {group['dice']:.3f} |" in table
    assert json.loads((tmp_path / "run.json").read_text())["config"]["refine_from"] == "proposal"


def test_a_case_where_nothing_matched_is_recorded_as_such(tmp_path):
    summary = evaluate(cases(("blob", "nothing at all")), tmp_path, backbones=[ProposingBackbone()],
                       policies=["expert"], config=PROPOSAL, progress=False, report=False)
    unmatched = records(tmp_path)["c1"]
    assert unmatched.ok and unmatched.values["proposal_matched"] is False
    assert unmatched.values["proposal_score"] is None
    assert unmatched.values["dice_before"] == 0.0 == unmatched.curves["dice"][0]  # started empty
    assert unmatched.values["initial_source"] == "proposal:proposing" and unmatched.dice > 0.5
    trajectory = msagent.Trajectory.from_json(
        (tmp_path / unmatched.trajectory_file).read_text())
    assert trajectory.initial is None and "no candidate matched" in trajectory.meta["proposal"]
    group = summary["proposing/expert"]
    assert group["proposal_unmatched"] == 1 and group["refine_cases"] == 2


def test_concurrent_episodes_start_from_proposals_too(tmp_path):
    evaluate(cases(), tmp_path, backbones=[ProposingBackbone()], policies=["expert"],
             config=PROPOSAL, concurrency=2, progress=False, report=False)
    assert all(r.values["proposal_matched"] for r in records(tmp_path).values())


def test_the_report_shows_before_and_after(tmp_path):
    pytest.importorskip("matplotlib")
    evaluate(cases(), tmp_path, backbones=[ProposingBackbone()], policies=["expert"],
             config=PROPOSAL, progress=False)
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Refine</h2>" in page and "Dice before" in page and "no proposal" in page
    assert "→" in page  # the cases' captions: Dice before → after


def test_a_backbone_that_cannot_propose_is_refused_before_any_case_runs(tmp_path):
    backbone = BrightBackbone()
    with pytest.raises(InvalidInput, match="cannot propose a mask from the target's description"):
        evaluate(cases(), tmp_path / "out", backbones=[backbone], policies=["expert"],
                 config=PROPOSAL, progress=False, report=False)
    assert backbone.encodes == 0 and not (tmp_path / "out").exists()
    # click protocols do not refine: nothing to refuse
    evaluate(cases()[:1], tmp_path / "cvpr", backbones=[backbone], protocols=["cvpr"],
             config=PROPOSAL, progress=False, report=False)


class StandIns:
    @msagent.hookimpl
    def msagent_register_segmenters(self, register):
        register("proposing", ProposingBackbone, "proposes from text")
        register("bright", BrightBackbone, "does not")


def write_folder(root):
    datasets = pytest.importorskip("msagent.datasets")
    from msagent import io

    rows = []
    for case in cases():
        io.save_png(case.image, root / f"{case.id}.png")
        io.save_mask_png(case.ground_truth, root / f"{case.id}-mask.png")
        rows.append({"image": f"{case.id}.png", "mask": f"{case.id}-mask.png", "target": "blob",
                     "id": case.id})
    datasets.write_folder(root, rows)
    return root


def test_the_cli(tmp_path, isolated_registry, capsys):
    from msagent.cli import main

    isolated_registry(StandIns(), load_entrypoints=False)
    argv = ["eval", "--out", str(tmp_path / "out"), "--policy", "expert", "--no-report",
            "--refine-from", "proposal"]
    # refused by name, before the data is read (this path does not exist)
    assert main(["eval", str(tmp_path / "no-data"), *argv[1:], "--backbone", "bright"]) == 2
    err = capsys.readouterr().err
    assert "'bright' cannot propose" in err and "installed backbones that can: proposing" in err
    assert not (tmp_path / "out").exists()
    data = write_folder(tmp_path / "data")
    assert main(["eval", str(data), *argv[1:], "--backbone", "proposing"]) == 0
    out = capsys.readouterr().out
    assert "Refine (before" in out and "| proposing | expert | 2 |" in out
    row = next(iter(records(tmp_path / "out").values()))
    assert row.values["initial_source"] == "proposal:proposing"
    assert np.isfinite(row.values["dice_before"])
