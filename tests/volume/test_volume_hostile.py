"""Hostile inputs to the 3-D features: odd options and arrays for segment_volume and the CLI,
the bounds of the web app's volume sessions, temporary folders, serialized runs. Each test is a
regression test for a bug found by attacking them (tiny volumes, the stand-in backbones)."""

from __future__ import annotations

import gc
import glob
import json
import subprocess
import sys

import numpy as np
import pytest

import msagent
from msagent.errors import InvalidInput
from msagent.testing import BrightBackbone


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
        msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy="expert",
                               ground_truth=mask, **options)


def test_a_ragged_ground_truth_is_invalid_input():
    volume, _ = tube(count=4, size=(20, 30))
    with pytest.raises(InvalidInput, match="ground truth"):
        msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy="expert",
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


# -- the web app's volume sessions ----------------------------------------------------------
def _client(monkeypatch, max_in_memory: int):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from msagent.server import ServerConfig
    from msagent.volume import session as volume_sessions
    from msagent.webapp import create_web_app

    monkeypatch.setattr(volume_sessions, "MAX_IN_MEMORY", max_in_memory)  # the core's default
    return TestClient(create_web_app(BrightBackbone(cache_size=1), ServerConfig(
        batch_window_ms=0, volume_embeddings_in_memory=max_in_memory)))


def _upload_tube(client, count: int) -> str:
    nib = pytest.importorskip("nibabel")
    import gzip

    volume, _ = tube(count=count)
    data = np.ascontiguousarray(np.moveaxis(volume, 0, 2)).astype(np.float32)  # slices along k
    body = gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes())
    response = client.post("/v1/volumes", files=[("files", ("tube.nii.gz", body))])
    assert response.status_code == 201, response.text
    vid = response.json()["volume_id"]
    response = client.post(f"/v1/volumes/{vid}/sessions", json={"target": "tube", "window": "200/110"})
    assert response.status_code == 201, response.text
    return f"/v1/volumes/{vid}/sessions/{response.json()['session_id']}"


@pytest.mark.slow
def test_prompted_slices_keep_no_embedding_beyond_the_sessions_memory_bound(monkeypatch):
    """Every prompted slice's episode state held its embedding, so prompting every slice kept
    every embedding in memory (besides the store's spilled copies), whatever MAX_IN_MEMORY."""
    from msagent.backbones.segmenter import Embedding

    count, bound = 10, 2
    gc.collect()  # Embeddings other tests' apps still hold are not this session's
    before = sum(isinstance(o, Embedding) for o in gc.get_objects())
    with _client(monkeypatch, bound) as client:
        path = _upload_tube(client, count)
        info = client.get(path).json()
        box = {"x1": 0, "y1": 0, "x2": info["width"] - 1, "y2": info["height"] - 1}
        for index in range(count):
            response = client.post(f"{path}/slices/{index}/prompts", json={"box": box})
            assert response.status_code == 200, response.text
        point = {"x": 1, "y": 1, "label": 1}
        for index in (0, count - 1):  # a second prompt on a slice whose embedding was spilled
            response = client.post(f"{path}/slices/{index}/prompts", json={"point": point})
            assert response.status_code == 200, response.text
            assert response.json()["points"] == [point]
        gc.collect()
        live = sum(isinstance(o, Embedding) for o in gc.get_objects()) - before
        assert live <= bound + 1  # the store's budget and the backbone's one-image cache
        assert client.post(f"{path}/propagate").status_code == 200
        assert client.get(path).json()["encodes"] == count  # each slice still encoded once


def test_spilled_embeddings_are_removed_when_a_store_is_dropped_or_the_process_exits(tmp_path):
    """EmbeddingStore's temporary folder was removed only by close(): a server stopped with
    live volume sessions (or a run that never closed its store) left the pickles behind."""
    script = f"""
import sys, tempfile
tempfile.tempdir = {str(tmp_path)!r}
import numpy as np
from msagent.backbones.propagation import SliceStack
from msagent.volume.embeddings import EmbeddingStore
from msagent.backbones.segmenter import Segmenter

class Plain(Segmenter):
    def encode_image(self, image):
        return image[:, :, 0]
    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        raise NotImplementedError

stack = SliceStack(np.zeros((3, 8, 8), np.uint8), (1.0, 1.0, 1.0))
dropped = EmbeddingStore(Plain(cache_size=0), stack, max_in_memory=1)
for i in range(3):
    dropped[i]
del dropped
import gc; gc.collect()
print(len(list(__import__("pathlib").Path({str(tmp_path)!r}).glob("msagent-embeddings-*"))))
kept = EmbeddingStore(Plain(cache_size=0), stack, max_in_memory=1)
for i in range(3):
    kept[i]
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0"]  # the dropped store's folder went with it
    assert not glob.glob(str(tmp_path / "msagent-embeddings-*"))  # and the live one's at exit


# -- VolumeTrajectory.from_json: total, and bounded before it allocates ----------------------
def _run_json() -> str:
    volume, mask = tube(count=4)
    result = msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy="expert",
                                    ground_truth=mask, review_slices=1)
    return result.trajectory.to_json()


def _edited(text: str, **changes) -> str:
    data = json.loads(text)
    data.update(changes)
    return json.dumps(data)


def test_a_run_reads_back_and_bad_runs_are_invalid_volume_trajectory():
    from msagent.volume.trajectory import InvalidVolumeTrajectory, VolumeTrajectory

    text = _run_json()
    run = VolumeTrajectory.from_json(text)
    assert run.to_json() == text
    data = json.loads(text)
    size = data["shape"][1:]
    step = data["episodes"][0]["trajectory"]["steps"][0]
    bad = [
        "{", "[]", "null", "[" * 100_000 + "]" * 100_000,
        json.dumps({k: v for k, v in data.items() if k != "target"}),
        _edited(text, shape="abc"), _edited(text, shape=[-1, *size]), _edited(text, spacing=[1, 2]),
        _edited(text, shape=[10**6, 10**6, 10**6]),  # 10**18 voxels claimed in a few bytes
        _edited(text, masks={"0": {"size": size, "counts": [10**12]}}),  # a terabyte of mask
        _edited(text, masks={"0": {"size": size, "counts": [-1, size[0] * size[1] + 1]}}),
        _edited(text, masks={"0": {"size": [5, 5], "counts": [25]}}),
        _edited(text, masks={"x": {"size": size, "counts": [size[0] * size[1]]}}),
        _edited(text, masks={"99": {"size": size, "counts": [size[0] * size[1]]}}),
        _edited(text, scores={"0": "abc"}), _edited(text, key_slice="a"), _edited(text, meta=[1]),
        _edited(text, counts=[1]), _edited(text, episodes=[5]),
        _edited(text, episodes=[{"slice": 0, "role": "boss"}]),
        *(_edited(text, episodes=[{**data["episodes"][0], field: value}])
          for field, value in [("slices_changed", -1), ("slices_changed", True),
                               ("slices_changed", "3"), ("dice_after", 1.5),
                               ("dice_after", "0.5"), ("dice_after", float("nan"))]),
        _edited(text, episodes=[{**data["episodes"][0], "trajectory": {
            **data["episodes"][0]["trajectory"],
            "steps": [{**step, "mask": {"size": [10**5, 10**5], "counts": [10**10]}}]}}]),
    ]
    for text_in in bad:
        with pytest.raises(InvalidVolumeTrajectory):
            VolumeTrajectory.from_json(text_in)
    # many small step masks: what they decode to counts against the voxel limit
    pixels = size[0] * size[1]
    many = _edited(text, episodes=[{**data["episodes"][0], "trajectory": {
        **data["episodes"][0]["trajectory"],
        "steps": [{**step, "mask": {"size": size, "counts": [pixels]}}] * 50}}])
    VolumeTrajectory.from_json(many)
    with pytest.raises(InvalidVolumeTrajectory, match="limit"):
        VolumeTrajectory.from_json(many, max_voxels=10 * pixels)


# -- the propagation contract --------------------------------------------------------------
def test_a_bad_seed_is_refused_and_leaves_the_propagator_usable():
    """add_seed(2.5, ...) passed the range check and stored the seed, so every later
    propagate() failed with a TypeError; a mask of the wrong size failed the same way."""
    from msagent.backbones.propagation import Seed
    from msagent.errors import InvalidMask
    from msagent.volume.propagation import GenericPropagator
    from msagent.volume.stack import build_stack

    volume, mask = tube(count=6)
    stack = build_stack(volume, window="200/110").slices
    propagator = GenericPropagator(BrightBackbone(), stack)
    for index in (2.5, True, "1", -1, 6):
        with pytest.raises(IndexError):
            propagator.add_seed(index, Seed(mask[2]))
    with pytest.raises(InvalidMask):
        propagator.add_seed(2, Seed(np.ones((3, 3), bool)))
    propagator.add_seed(2, Seed(mask[2]))
    assert sorted(propagator.propagate()) == list(range(6))


def test_segment_volume_refuses_a_bad_nsd_tolerance():
    volume, mask = tube(count=4)
    for tolerance in (float("nan"), -1.0, "2"):
        with pytest.raises(InvalidInput, match="nsd_tolerance"):
            msagent.segment_volume(volume, "tube", backbone=BrightBackbone(), policy="expert",
                                   ground_truth=mask, nsd_tolerance=tolerance)
