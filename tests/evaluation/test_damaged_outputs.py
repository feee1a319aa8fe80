"""Long jobs meet damaged outputs: empty or torn shards and parts, corrupt manifests, a full disk
and a read-only folder. A resume recomputes what does not read back whole; file-system errors
are one line naming the path and the remedy; nothing half-written is left for a resume."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from msagent import io
from msagent.cli import main
from msagent.datasets import write_folder
from msagent.errors import InvalidInput, OutputError
from msagent.export.job import export_trajectories
from msagent.generation import generate
from msagent.io import atomic
from msagent.testing import make_phantom

OPTIONS = {"box_ratio": 1.0, "max_actions": 1, "resamples": 1, "min_final_iou": 0.0}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    rows = []
    for i in range(3):
        image, mask = make_phantom(64, 72, center=(30 + 3 * i, 34), radii=(14, 18), seed=i)
        io.save_png(image, root / "images" / f"c{i}.png")
        io.save_mask_png(mask, root / "masks" / f"c{i}.png")
        rows.append({"image": f"images/c{i}.png", "mask": f"masks/c{i}.png", "target": "ellipse"})
    write_folder(root, rows)
    return root


def run(folder, out, segmenter):
    return generate(folder, out, backbone=segmenter, generator_options=OPTIONS, shard_size=1,
                    threads=1, progress=False)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(folder, litemedsam, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "set"
    assert run(folder, out, litemedsam).shards_written == 3
    return out


@pytest.mark.slow
def test_empty_and_torn_shards_are_recomputed(folder, reference, litemedsam, tmp_path, caplog):
    out = tmp_path / "set"
    out.mkdir()
    for rel, data in files(reference).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    (out / "shards/part-00000.parquet").write_bytes(b"")  # 0 bytes
    torn = out / "shards/part-00002.parquet"
    torn.write_bytes(torn.read_bytes()[: len(torn.read_bytes()) // 2])  # cut in the middle
    summary = run(folder, out, litemedsam)
    assert summary.shards_written == 2 and summary.trajectories == 3
    assert files(out) == files(reference)  # byte for byte what an undamaged run wrote
    assert sum("is damaged" in r.message for r in caplog.records) == 2


@pytest.mark.slow
def test_shards_record_their_row_count(reference, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = reference / "shards/part-00001.parquet"
    assert atomic.parquet_is_complete(shard)
    table = pq.read_table(shard)
    assert table.schema.metadata[atomic.ROWS_KEY] == str(table.num_rows).encode()
    lying = tmp_path / "lying.parquet"  # a whole file whose rows are not what was recorded
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata({atomic.ROWS_KEY: b"2"}), lying)
    assert not atomic.parquet_is_complete(lying)


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"{not json", b"[]", b"\x00" * 10, b""])
def test_a_corrupt_manifest_is_one_clear_error(folder, reference, tmp_path, content, capsys):
    out = tmp_path / "set"
    out.mkdir()
    (out / "manifest.json").write_bytes(content)
    with pytest.raises(InvalidInput, match="damaged outside msagent"):
        generate(folder, out, backbone="litemedsam", generator_options=OPTIONS, shard_size=1,
                 progress=False)
    assert main(["generate", str(folder), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json is not a readable generation manifest" in err


@pytest.mark.parametrize("code, remedy", [(errno.ENOSPC, "the disk is full"),
                                          (errno.EROFS, "read-only"),
                                          (errno.EACCES, "no permission")])
@pytest.mark.slow
def test_file_system_errors_name_the_path_and_the_remedy(folder, reference, litemedsam, tmp_path,
                                                         monkeypatch, capsys, code, remedy):
    out = tmp_path / "set"
    real_fsync = atomic.os.fsync
    calls = {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] >= 4:  # the manifest and a few files get through, then the disk fails
            raise OSError(code, __import__("os").strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OutputError, match=remedy) as caught:
        run(folder, out, litemedsam)
    assert caught.value.errno == code and str(out) in str(caught.value)
    assert not list(out.rglob("*.tmp"))  # nothing half-written is left behind
    monkeypatch.setattr("msagent.generation.generate", lambda *a, **k: run(folder, out, litemedsam))
    calls["n"] = 0
    assert main(["generate", str(folder), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("msagent: error: cannot write ") and remedy in err and err.count("\n") == 1
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)  # space freed: the job resumes and completes
    run(folder, out, litemedsam)
    assert files(out) == files(reference)


@pytest.mark.slow
def test_a_damaged_export_part_is_written_again(reference, tmp_path):
    first = export_trajectories(reference, tmp_path / "sft", "verl-sft", progress=False)
    part = sorted((tmp_path / "sft").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    again = export_trajectories(reference, tmp_path / "sft", "verl-sft", progress=False)
    assert again.parts_written == 1 and again.rows == first.rows
    (tmp_path / "sft" / "export.json").write_text("{")
    with pytest.raises(InvalidInput, match="export.json is not a readable export manifest"):
        export_trajectories(reference, tmp_path / "sft", "verl-sft", progress=False)
    shard = reference.parent / "copy"
    shard.mkdir()
    for rel, data in files(reference).items():
        (shard / rel).parent.mkdir(parents=True, exist_ok=True)
        (shard / rel).write_bytes(data)
    (shard / "shards/part-00001.parquet").write_bytes(b"PAR1")
    with pytest.raises(InvalidInput, match="recomputes damaged shards"):
        export_trajectories(shard, tmp_path / "other", "verl-sft", progress=False)


def test_a_damaged_evaluation_settings_file_is_one_clear_error(tmp_path):
    from msagent.evaluation import evaluate

    (tmp_path / "run.json").write_text(json.dumps([1, 2]))
    with pytest.raises(InvalidInput, match="run.json is not a readable evaluation settings file"):
        evaluate([], tmp_path, backbones=["litemedsam"], policies=["oracle-box"], progress=False)
