"""``msagent generate --volumes``: the expert's 3-D runs on whole-volume cases as a trajectory
set (key and review episodes), resumable per volume, exported to SFT rows."""

from __future__ import annotations

import json

import pytest

from msagent.datasets import open_dataset
from msagent.errors import InvalidInput
from msagent.generation.records import read_trajectories
from msagent.generation.volumes import generate_volume_set
from msagent.testing import BrightBackbone


def test_generate_volume_set_resumes_per_volume(msd, tmp_path, monkeypatch):
    cases = open_dataset(msd, volumes=True).refs
    tubes = [c for c in cases if c.target == "tube"]
    out = tmp_path / "set"
    _, total, written = generate_volume_set(cases, out, backbone=BrightBackbone(), review_slices=1,
                                            progress=False)
    assert (total, written) == (len(cases), len(cases))
    records = list(read_trajectories(out))
    # each tube volume: its key episode (and a review only where the Dice was under 0.9);
    # the "cyst" label is absent from both volumes: no rows
    assert {r.case_id.rsplit("/slice-", 1)[0] for r in records} == {c.id for c in tubes}
    assert {r.row["strategy"] for r in records} <= {"volume-key", "volume-review"}
    assert all(r.kept for r in records)
    # kill -9 after the first volume: only the missing shards are computed again
    (out / "shards" / "part-00001.parquet").unlink()
    loads = []
    monkeypatch.setattr(type(cases[0]), "load", lambda self, *a, _load=type(cases[0]).load:
                        loads.append(self.id) or _load(self, *a))
    _, _, written = generate_volume_set(cases, out, backbone=BrightBackbone(), review_slices=1,
                                        progress=False)
    assert written == 1 and loads == [cases[1].id]
    with pytest.raises(InvalidInput, match="another trajectory set"):
        generate_volume_set(cases, out, backbone=BrightBackbone(), review_slices=2, progress=False)


def test_cli_generate_volumes_then_export(msd, tmp_path, capsys):
    from msagent.cli import main

    out = tmp_path / "set"
    assert main(["generate", str(msd), "--volumes", "--out", str(out), "--backbone", "mybackbone",
                 "--review-slices", "0", "--quiet"]) == 0
    assert "export with `msagent export" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "volume-episodes" and manifest["settings"]["policy"] == "expert"
    assert main(["export", str(out), "--format", "llamafactory", "--out", str(tmp_path / "lf"),
                 "--image-size", "128", "--quiet"]) == 0
    from msagent.export.llamafactory import read_records

    records = read_records(next((tmp_path / "lf").rglob("part-*.json")).parent)
    assert len(records) == 2  # one key episode per tube volume
    assert main(["generate", str(msd), "--volumes", "--out", str(out), "--ray"]) == 2
