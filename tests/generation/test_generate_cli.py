import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from msagent import io
from msagent.cli import main
from msagent.datasets import write_folder
from msagent.errors import InvalidInput
from msagent.generation import generate, read_trajectories
from msagent.testing import make_phantom

OPTIONS = {"box_ratio": 1.0, "max_actions": 2, "resamples": 1, "min_final_iou": 0.6}
BACKBONE_OPTIONS = {"device": "cpu"}
CLI_OPTIONS = [arg for key, value in OPTIONS.items() for arg in ("--option", f"{key}={value}")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four phantom cases in the plain-folder layout."""
    root = tmp_path_factory.mktemp("phantoms")
    rows = []
    for i in range(4):
        image, mask = make_phantom(96, 112, center=(40 + 4 * i, 50 + 3 * i), radii=(22, 30 - 2 * i), seed=i)
        io.save_png(image, root / "images" / f"p{i}.png")
        io.save_mask_png(mask, root / "masks" / f"p{i}.png")
        rows.append({"image": f"images/p{i}.png", "mask": f"masks/p{i}.png",
                     "target": "bright ellipse", "modality": "synthetic"})
    write_folder(root, rows)
    return root


@pytest.fixture(scope="module")
def reference(folder, litemedsam, tmp_path_factory):
    """An uninterrupted run through the Python API (one shard per case)."""
    out = tmp_path_factory.mktemp("reference") / "set"
    summary = generate(folder, out, backbone=litemedsam, backbone_options=BACKBONE_OPTIONS,
                       generator_options=OPTIONS, shard_size=1, threads=1, progress=False)
    assert (summary.cases, summary.shards, summary.shards_written, summary.trajectories) == (4, 4, 4, 4)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _command(folder, out):
    return [sys.executable, "-c", "import sys; from msagent.cli import main; sys.exit(main())",
            "generate", str(folder), "--out", str(out), "--shard-size", "1", "--threads", "1",
            "--backbone-option", "device=cpu", "--quiet", *CLI_OPTIONS]


@pytest.mark.slow
def test_the_set_has_one_row_per_case_with_images_overlays_and_ground_truth(reference):
    records = list(read_trajectories(reference))
    assert [r.row["case_index"] for r in records] == [0, 1, 2, 3]
    for record in records:
        assert (reference / record.row["image_path"]).is_file()
        assert (reference / record.row["overlay_path"]).is_file()
        assert record.ground_truth().shape == record.image().shape[:2] == (96, 112)
        assert record.row["strategy"] == "box" and record.row["modality"] == "synthetic"
        assert record.row["ious"] == [s.iou for s in record.trajectory.executed_steps]
    assert pq.read_schema(reference / "shards" / "part-00000.parquet").names[:3] == \
        ["case_index", "sample", "case_id"]


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_output_byte_for_byte(folder, reference, tmp_path):
    out = tmp_path / "set"
    env = {**os.environ, "MSAGENT_LOAD_PLUGINS": "litemedsam"}
    proc = subprocess.Popen(_command(folder, out), env=env, stderr=subprocess.DEVNULL)
    first = out / "shards" / "part-00000.parquet"
    deadline = time.monotonic() + 240
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (out / "shards").glob("*.parquet"))
    assert 1 <= len(done) < 4, f"the run was not interrupted mid-way: {done}"
    (out / "shards" / ".part-00003.parquet.123.tmp").write_bytes(b"half a shard")  # a torn write
    finished = subprocess.run(_command(folder, out), env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"({4 - len(done)} written now)" in finished.stdout
    assert _files(out) == _files(reference)


@pytest.mark.slow
def test_rerun_of_a_finished_job_writes_nothing_and_other_settings_are_refused(folder, reference,
                                                                               litemedsam):
    before = _files(reference)
    summary = generate(folder, reference, backbone=litemedsam, backbone_options=BACKBONE_OPTIONS,
                       generator_options=OPTIONS, shard_size=1, threads=1, progress=False)
    assert summary.shards_written == 0 and _files(reference) == before
    with pytest.raises(InvalidInput, match="differs in generator_options"):
        generate(folder, reference, backbone=litemedsam, backbone_options=BACKBONE_OPTIONS,
                 generator_options={**OPTIONS, "tau": 0.05}, shard_size=1, threads=1, progress=False)
    assert main(["generate", str(folder), "--out", str(reference), "--shard-size", "2",
                 "--quiet"]) == 2  # a usage error, reported without a traceback


@pytest.mark.slow
def test_ray_local_workers_give_the_same_shards(folder, reference, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("MSAGENT_LOAD_PLUGINS", "litemedsam")
    out = tmp_path / "ray"
    summary = generate(folder, out, backbone="litemedsam", backbone_options=BACKBONE_OPTIONS,
                       generator_options=OPTIONS, shard_size=1, threads=1, limit=2, ray=True,
                       workers=2, progress=False)
    assert summary.shards_written == 2 and not ray.is_initialized()  # stopped cleanly
    ref, got = _files(reference), _files(out)
    shared = [k for k in got if k != "manifest.json"]
    assert shared and all(got[k] == ref[k] for k in shared)
    assert sorted(k for k in shared if k.startswith("shards/")) == \
        ["shards/part-00000.parquet", "shards/part-00001.parquet"]


@pytest.mark.slow
def test_mni152_keyword_builds_the_offline_dataset_beside_the_output(tmp_path):
    from msagent.cli.generate import _dataset_path

    assert _dataset_path("some/folder", tmp_path / "out") == "some/folder"
    built = _dataset_path("mni152", tmp_path / "out")
    assert built.endswith("out-data-mni152") and (tmp_path / "out-data-mni152" / "targets.csv").is_file()
