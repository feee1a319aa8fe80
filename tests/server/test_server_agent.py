"""The web page's server routes over loopback, without a browser: plugin listing, streamed agent
runs (NDJSON), runs' masks and trajectories, sessions seeded from a run, volumes and mask export."""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

import msagent
from msagent import io as msio
from msagent import protocol
from msagent.io.wire import png_bytes
from msagent.plugins import Registry, get_registry, make_plugin_manager, set_registry
from msagent.policies.base import Policy, Reply
from msagent.protocol import rationale
from msagent.server import ServerConfig
from msagent.server.background import serve_in_thread
from msagent.testing import make_phantom
from msagent.types import BBox, Point, Trajectory, decode_mask, encode_mask
from msagent.webapp import create_web_app


class SlowClicker(Policy):
    """Clicks the image centre again and again, slowly (to stop it mid-run)."""

    calls = 0

    def act(self, episode):
        type(self).calls += 1
        time.sleep(0.15)
        height, width = episode.image_size
        point = Point(width // 2, height // 2, positive=True)
        return Reply(protocol.point_action(point, episode.image_size, "Another click.").raw_text)


class SlowPlugin:
    @msagent.hookimpl
    def msagent_register_policies(register):
        register("slow-clicker", SlowClicker, "Clicks slowly")


@pytest.fixture(scope="module")
def server(litemedsam):
    previous = get_registry()
    pm = make_plugin_manager()
    pm.register(SlowPlugin, name="slow")
    set_registry(Registry(pm))
    app = create_web_app(litemedsam, ServerConfig(batch_window_ms=0))
    try:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
            yield client
    finally:
        set_registry(previous)


@pytest.fixture(scope="module")
def phantom_id(server):
    image, _ = make_phantom()
    return server.post("/v1/images", files={"file": ("p.png", png_bytes(image))}).json()["image_id"]


def run(client, **form) -> list[dict]:
    files = {}
    if "ground_truth" in form:
        files["ground_truth"] = ("gt.png", png_bytes(form.pop("ground_truth")), "image/png")
    with client.stream("POST", "/v1/agent/run", data=form, files=files or None) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def test_plugins_lists_the_served_backbone_and_policies(server):
    body = server.get("/v1/plugins").json()
    assert body["backbone"] == "litemedsam"
    assert [s["name"] for s in body["backbones"] if s["served"]] == ["litemedsam"]
    policies = {p["name"]: p for p in body["policies"]}
    assert policies["expert"]["needs_ground_truth"] is True
    assert policies["slow-clicker"]["needs_ground_truth"] is False


def test_streamed_run_matches_the_stored_trajectory_and_in_process_agent(server, litemedsam, phantom_id):
    image, gt = make_phantom()
    lines = run(server, image_id=phantom_id, target="ellipse", policy="expert", max_turns="3",
                ground_truth=gt)
    start, turns, done = lines[0], lines[1:-1], lines[-1]
    assert start["type"] == "start" and done["type"] == "done" and {t["type"] for t in turns} == {"turn"}
    assert decode_mask(start["ground_truth"]).sum() == gt.sum()
    stored = Trajectory.from_dict(server.get(f"/v1/agent/runs/{done['run_id']}").json())
    expected = msagent.Agent(msagent.load_policy("expert"), litemedsam, max_turns=3).run(image, "ellipse", gt)
    assert len(turns) == len(stored.steps) == len(expected.steps)
    for turn, step, ref in zip(turns, stored.steps, expected.steps):
        assert turn["raw_text"] == step.raw_text == ref.raw_text
        assert turn["rationale"] == rationale(ref.raw_text) and "<tool_call>" not in turn["rationale"]
        if ref.executed:
            assert np.array_equal(decode_mask(turn["mask"]), ref.mask)
            assert turn["iou"] == pytest.approx(ref.iou) and turn["score"] == pytest.approx(ref.score)
            prompt = protocol.action_to_prompt(ref.action, image.shape[:2])
            key = "box" if isinstance(prompt, BBox) else "point"
            assert turn["prompt"][key]["x" if key == "point" else "x1"] == (
                prompt.x if key == "point" else prompt.x1)
    assert done["stop_reason"] == expected.stop_reason and done["iou"] == pytest.approx(expected.executed_steps[-1].iou)


def test_run_errors_are_clear_before_the_stream_starts(server, phantom_id):
    no_gt = server.post("/v1/agent/run", data={"image_id": phantom_id, "target": "x", "policy": "expert"})
    assert no_gt.status_code == 422 and "ground-truth mask" in no_gt.json()["detail"]
    unknown = server.post("/v1/agent/run", data={"image_id": phantom_id, "target": "x", "policy": "nope"})
    assert unknown.status_code == 404 and "available" in unknown.json()["detail"]
    missing = server.post("/v1/agent/run", data={"image_id": "0" * 64, "target": "x", "policy": "expert"})
    assert missing.status_code == 404 and missing.json()["code"] == "image_not_found"
    bad_gt = server.post("/v1/agent/run", data={"image_id": phantom_id, "target": "x", "policy": "expert"},
                         files={"ground_truth": ("gt.png", b"junk", "image/png")})
    assert bad_gt.status_code == 422 and "ground truth" in bad_gt.json()["detail"]


@pytest.mark.slow
def test_closing_the_stream_stops_the_run(server, phantom_id):
    SlowClicker.calls = 0
    with server.stream("POST", "/v1/agent/run", data={"image_id": phantom_id, "target": "x",
                                                      "policy": "slow-clicker", "max_turns": "20"}) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["type"] == "start"
        assert json.loads(next(lines))["type"] == "turn"
    calls = SlowClicker.calls
    time.sleep(1.0)
    assert SlowClicker.calls <= calls + 1 < 20


def test_seeded_session_replays_the_run_and_exports_a_mixed_trajectory(server, phantom_id):
    image, gt = make_phantom()
    done = run(server, image_id=phantom_id, target="ellipse", policy="oracle-box", ground_truth=gt)[-1]
    rid = done["run_id"]
    final = png_mask(server.get(f"/v1/agent/runs/{rid}/mask").content)
    assert server.get(f"/v1/agent/runs/{rid}/mask", params={"steps": 0}).status_code == 409
    seeded = server.post(f"/v1/agent/runs/{rid}/session", json={"steps": 1})
    assert seeded.status_code == 201 and np.array_equal(decode_mask(seeded.json()["mask"]), final)
    sid = seeded.json()["session"]["session_id"]
    assert server.post(f"/v1/sessions/{sid}/point", json={"x": 5, "y": 5, "label": 0}).status_code == 200
    mixed = Trajectory.from_dict(server.get(f"/v1/agent/sessions/{sid}/trajectory").json())
    assert [s.usage["source"] for s in mixed.steps] == ["agent", "human"]
    assert mixed.steps[1].action.kind == "add_point" and mixed.steps[1].iou is not None
    assert protocol.action_to_prompt(mixed.steps[1].action, image.shape[:2]) == Point(5, 5, False)
    empty = server.post(f"/v1/agent/runs/{rid}/session", json={"steps": 0}).json()
    assert empty["session"]["turns"] == 0 and empty["mask"] is None
    manual = server.post("/v1/sessions", data={"image_id": phantom_id}).json()["session_id"]
    assert server.get(f"/v1/agent/sessions/{manual}/trajectory").status_code == 422  # no target
    assert server.get(f"/v1/agent/runs/{'f' * 32}").status_code == 404


def png_mask(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))) > 0


def test_nifti_volume_slices_windows_and_exports(server, tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    data = np.random.default_rng(0).normal(40, 200, (30, 24, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    volume = msio.read_volume(tmp_path / "v.nii.gz")
    info = server.post("/v1/volumes", files=[("files", ("v.nii.gz", (tmp_path / "v.nii.gz").read_bytes()))])
    assert info.status_code == 201, info.text
    info = info.json()
    assert info["kind"] == "nifti" and info["slices"] == {"axial": 5, "coronal": 24, "sagittal": 30}
    vid = info["volume_id"]
    png = server.get(f"/v1/volumes/{vid}/slice.png", params={"plane": "coronal", "index": 3, "window": "lung"})
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))),
                          msio.apply_window(volume.slice(3, "coronal"), 1500, -600))
    stored = server.post(f"/v1/volumes/{vid}/slice", json={"plane": "axial", "index": 1}).json()
    width, level = info["window"]
    shown = np.asarray(Image.open(io.BytesIO(server.get(f"/v1/images/{stored['image_id']}/png").content)))
    assert np.array_equal(shown[:, :, 1], msio.apply_window(volume.slice(1), width, level))
    mask = np.zeros(volume.slice(1).shape, bool)
    mask[2:9, 4:12] = True
    out = server.post(f"/v1/volumes/{vid}/export", json={"plane": "axial", "format": "nifti",
                                                         "slices": [{"index": 1, "mask": encode_mask(mask)}]})
    assert out.status_code == 200 and "v-mask.nii.gz" in out.headers["content-disposition"]
    (tmp_path / "m.nii.gz").write_bytes(out.content)
    written = msio.read_volume(tmp_path / "m.nii.gz")
    assert np.allclose(written.affine, affine) and np.array_equal(written.slice(1) > 0, mask)
    assert int(written.data.sum()) == int(mask.sum())
    seg = server.post(f"/v1/volumes/{vid}/export", json={"format": "dicom-seg",
                                                         "slices": [{"index": 1, "mask": encode_mask(mask)}]})
    assert seg.status_code == 422 and "NIfTI" in seg.json()["detail"]
    bad = server.post(f"/v1/volumes/{vid}/slice", json={"plane": "axial", "index": 9})
    assert bad.status_code == 422 and "outside" in bad.json()["detail"]
    junk = server.post("/v1/volumes", files=[("files", ("x.nii.gz", b"not nifti"))])
    assert junk.status_code == 422 and "NIfTI" in junk.json()["detail"]
    assert server.get("/v1/volumes/nope").status_code == 404


@pytest.mark.slow
def test_agent_runs_do_not_block_the_event_loop(server, phantom_id):
    """While an episode runs in its worker thread, other requests are answered at once."""
    started = threading.Event()

    def slow_run():
        with server.stream("POST", "/v1/agent/run", data={"image_id": phantom_id, "target": "x",
                                                          "policy": "slow-clicker", "max_turns": "4"}) as r:
            for _ in r.iter_lines():
                started.set()

    thread = threading.Thread(target=slow_run)
    thread.start()
    assert started.wait(30)
    t0 = time.perf_counter()
    assert server.get("/health").status_code == 200
    assert time.perf_counter() - t0 < 0.1
    thread.join(30)
