"""Volume sessions on a shared server: bounded, cancellable propagation that goes through the
engine's pools and metrics, sessions that belong to the client that made them, and memory and
disk within the documented budgets (issue 26, items 2-4).

A stand-in native propagator (:class:`Gated`) calls ``checkpoint()`` before each slice and
waits at one slice for the test to release it, so every cancellation below is ordered by
events, not by timing."""

from __future__ import annotations

import concurrent.futures
import gzip
import threading
import time

import numpy as np
import pytest

from msagent.backbones.propagation import Propagator
from msagent.server import ServerConfig
from msagent.testing import BrightBackbone, logits_of, make_phantom, make_tube, zyx_to_nifti
from msagent.types import MaskPrediction
from msagent.webapp import create_web_app

nib = pytest.importorskip("nibabel")

WINDOW = "200/110"
WAIT = 10  # seconds an event may take before the test fails (never reached when it passes)


class Gate:
    """Where :class:`Gated` stops: ``reached`` is set at slice ``at``, which waits for
    ``release``; ``closed`` counts closed propagators, ``stopped`` the slices they reached."""

    def __init__(self, at: int = 3) -> None:
        self.at, self.reached, self.release = at, threading.Event(), threading.Event()
        self.closed = 0
        self.runs: list[Gated] = []


class Gated(Propagator):
    """Every slice gets the first seed's mask; slice ``gate.at`` waits for the gate."""

    method = "native"

    def __init__(self, stack, gate: Gate) -> None:
        super().__init__(stack)
        self.gate = gate
        gate.runs.append(self)

    def propagate(self):
        mask = self.seeds[min(self.seeds)].mask
        results = {}
        for index in range(self.stack.count):
            self.checkpoint()
            if index == self.gate.at:
                self.gate.reached.set()
                assert self.gate.release.wait(WAIT)
            self.decodes += 1
            results[index] = MaskPrediction(mask.copy(), logits_of(mask), 0.5)
        self.results = results
        return results

    def close(self):
        self.gate.closed += 1


class GatedBright(BrightBackbone):
    name = "gated-bright"

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    def native_propagator(self, stack):
        return Gated(stack, self.gate)


def nifti(count: int = 12) -> bytes:
    volume, _ = make_tube(count=count)
    image = nib.Nifti1Image(zyx_to_nifti(volume.astype(np.float32)), np.eye(4))
    return gzip.compress(image.to_bytes())


def make_client(segmenter=None, client=("10.0.0.1", 5000), **config):
    from fastapi.testclient import TestClient

    app = create_web_app(segmenter or BrightBackbone(), ServerConfig(batch_window_ms=0, **config))
    return TestClient(app, client=client)


def upload(client, count: int = 12) -> str:
    response = client.post("/v1/volumes", files=[("files", ("tube.nii.gz", nifti(count)))])
    assert response.status_code == 201, response.text
    return response.json()["volume_id"]


def start(client, volume_id: str, **body):
    response = client.post(f"/v1/volumes/{volume_id}/sessions",
                           json={"target": "tube", "window": WINDOW, **body})
    return response


def started(client, volume_id: str, **body) -> str:
    response = start(client, volume_id, **body)
    assert response.status_code == 201, response.text
    return f"/v1/volumes/{volume_id}/sessions/{response.json()['session_id']}"


def prompted(client, volume_id: str, **body) -> str:
    """A session with a box over the whole slice 6 (the bright disk is the target)."""
    path = started(client, volume_id, **body)
    info = ok(client.get(path))
    box = {"x1": 0, "y1": 0, "x2": info["width"] - 1, "y2": info["height"] - 1}
    ok(client.post(f"{path}/slices/6/prompts", json={"box": box}))
    return path


def ok(response):
    assert response.status_code in (200, 201), response.text
    return response.json()


def error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"], body
    return body


def wait_for(condition) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        yield executor


# -- item 2: bounded, cancellable propagation through the engine ---------------------------
def test_delete_stops_a_running_propagation_between_slices_and_it_is_not_reported_done(pool):
    gate = Gate(at=3)
    with make_client(GatedBright(gate)) as client:
        vid = upload(client)
        path = prompted(client, vid, propagation="native")
        running = pool.submit(client.post, f"{path}/propagate")
        assert gate.reached.wait(WAIT)
        progress = ok(client.get(path))["progress"]  # GET answers while it runs
        assert progress["running"] and progress["done"] == 4 and progress["total"] == 12
        assert client.delete(path).status_code == 204  # before: 204 and it kept running
        gate.release.set()
        body = error(running.result(WAIT), 404, "volume_session_not_found")
        assert "deleted while propagating" in body["detail"] and "not kept" in body["detail"]
        assert gate.runs[0].progress == 4  # stopped at the next slice, not after all 12
        error(client.get(path), 404, "volume_session_not_found")
    assert gate.closed >= 1


def test_undo_during_a_propagation_cancels_it_without_waiting_for_the_rest(pool):
    gate = Gate(at=2)
    with make_client(GatedBright(gate)) as client:
        path = prompted(client, upload(client), propagation="native")
        before = ok(client.get(path))
        running = pool.submit(client.post, f"{path}/propagate")
        assert gate.reached.wait(WAIT)
        undo = pool.submit(client.post, f"{path}/undo")
        wait_for(lambda: ok(client.get(path))["progress"]["stopping"])  # the undo asked
        gate.release.set()  # the slice in flight ends; the next checkpoint stops it
        undone = ok(undo.result(WAIT))
        error(running.result(WAIT), 409, "propagation_cancelled")
        assert gate.runs[0].progress == 3
        # the propagation was the step undone: the prompt stays, nothing else is undone
        assert undone["undo"] == before["undo"] == 1 and undone["seeds"] == [6]
        assert undone["pending"] == [6] and not undone["propagated"]
        assert undone["progress"]["outcome"] == "cancelled"
        # and the session works on: a propagation now runs to the end
        gate.at = -1
        assert ok(client.post(f"{path}/propagate"))["propagated"]


def test_a_client_that_disconnects_cancels_its_propagation():
    gate = Gate(at=2)
    with make_client(GatedBright(gate)) as client:
        path = prompted(client, upload(client), propagation="native")
        app = client.app
        sent: list[dict] = []

        async def propagate_then_disconnect() -> None:
            import asyncio

            gone = asyncio.Event()
            messages = [{"type": "http.request", "body": b"", "more_body": False}]

            async def receive():
                if messages:
                    return messages.pop()
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": "POST", "scheme": "http", "path": f"{path}/propagate",
                     "raw_path": f"{path}/propagate".encode(), "root_path": "",
                     "query_string": b"", "headers": [(b"host", b"testserver")],
                     "client": ("10.0.0.1", 5000), "server": ("testserver", 80)}
            call = asyncio.ensure_future(app(scope, receive, send))
            assert await asyncio.to_thread(gate.reached.wait, WAIT)
            gone.set()  # the client goes away while slice 2 runs
            while not ok(await asyncio.to_thread(client.get, path))["progress"]["stopping"]:
                await asyncio.sleep(0.05)  # the route polls the connection (every 0.2 s)
            gate.release.set()
            await asyncio.wait_for(call, WAIT)

        client.portal.call(propagate_then_disconnect)
        assert sent[0]["status"] == 409  # propagation_cancelled (nobody reads it)
        assert gate.runs[0].progress == 3
        info = ok(client.get(path))
        assert info["progress"]["outcome"] == "cancelled" and not info["propagated"]
        assert "disconnected" in info["progress"]["detail"]


def test_a_propagation_past_its_time_limit_stops_cleanly_and_says_so(pool):
    gate = Gate(at=2)
    with make_client(GatedBright(gate), propagation_timeout_s=0.05) as client:
        path = prompted(client, upload(client), propagation="native")
        running = pool.submit(client.post, f"{path}/propagate")
        assert gate.reached.wait(WAIT)
        time.sleep(0.1)  # past the 0.05 s limit
        gate.release.set()
        body = error(running.result(WAIT), 503, "propagation_timeout")
        assert "--propagation-timeout" in body["detail"] and "after 3 of at most 12" in body["detail"]
        info = ok(client.get(path))
        assert info["progress"]["outcome"] == "timeout" and info["progress"]["done"] == 3
        assert not info["propagated"] and info["pending"] == [6] and info["undo"] == 1


def test_concurrent_propagations_are_bounded(pool):
    gate = Gate(at=1)
    with make_client(GatedBright(gate), max_propagations=1) as client:
        vid = upload(client)
        first = prompted(client, vid, propagation="native")
        second = prompted(client, vid, propagation="native")
        running = pool.submit(client.post, f"{first}/propagate")
        assert gate.reached.wait(WAIT)
        error(client.post(f"{second}/propagate"), 429, "too_many_propagations")
        gate.release.set()
        assert ok(running.result(WAIT))["propagated"]
        gate.at = -1
        assert ok(client.post(f"{second}/propagate"))["propagated"]


def test_volume_work_is_counted_by_metrics_and_health_and_keeps_the_2d_cache():
    segmenter = BrightBackbone()  # a 4-image embedding cache
    with make_client(segmenter) as client:
        image, _ = make_phantom(64, 64)
        import io

        from PIL import Image

        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        two_d = ok(client.post("/v1/images", files={"file": ("a.png", png.getvalue())},
                               params={"encode": True}))["image_id"]
        assert segmenter._cache.contains(two_d)
        path = prompted(client, upload(client))
        result = ok(client.post(f"{path}/propagate"))
        assert result["encodes"] == 12 and result["progress"]["outcome"] == "complete"
        # 12 slices went through the engine, none through (or out of) the 2-D cache
        assert segmenter._cache.contains(two_d) and segmenter.cache_info().size == 1
        metrics = ok(client.get("/metrics"))
        assert metrics["counters"]["volume_encodes"] == 12
        assert metrics["counters"]["volume_decodes"] == result["decodes"] - 1  # not the prompt
        assert metrics["encode"]["count"] == 13  # the 2-D image and the 12 slices
        assert metrics["sessions"]["volume_active"] == 1
        health = ok(client.get("/health"))
        assert health["volume_sessions"] == 1 and health["sessions"] == 1


# -- item 3: sessions belong to the client that made them ---------------------------------
def test_one_client_never_closes_another_clients_session():
    config = {"max_volume_sessions": 4, "volume_sessions_per_client": 2}
    with make_client(**config) as alice:
        from fastapi.testclient import TestClient

        bob = TestClient(alice.app, client=("10.0.0.2", 6000))  # one server, other clients
        carol = TestClient(alice.app, client=("10.0.0.3", 7000))
        dave = TestClient(alice.app, client=("10.0.0.4", 8000))
        vid = upload(alice)
        bobs = started(bob, vid)
        a1 = started(alice, vid)
        a2 = started(alice, vid)
        ok(alice.get(a1))  # a1 is used again: a2 is alice's least recently used
        a3 = started(alice, vid)  # past alice's quota: her own LRU session goes
        error(alice.get(a2), 404, "volume_session_not_found")
        assert "evicted" in alice.get(a2).json()["detail"]
        for path, client in ((a1, alice), (a3, alice), (bobs, bob)):  # before: bob's was 404
            ok(client.get(path))
        started(carol, vid)  # the 4th session: the server is full
        body = error(start(dave, vid), 429, "too_many_sessions")
        assert "none of them yours" in body["detail"]
        # a header the client chooses does not make it another client
        spoofed = alice.post(f"/v1/volumes/{vid}/sessions", json={"target": "t"},
                             headers={"X-Forwarded-For": "10.9.9.9", "X-Client-Id": "other"})
        assert spoofed.status_code == 201  # alice's quota: her LRU went, nobody else's
        ok(bob.get(bobs))


def test_a_session_running_a_propagation_is_not_evicted(pool):
    gate = Gate(at=2)
    with make_client(GatedBright(gate), volume_sessions_per_client=1) as client:
        vid = upload(client)
        path = prompted(client, vid, propagation="native")
        running = pool.submit(client.post, f"{path}/propagate")
        assert gate.reached.wait(WAIT)
        # before: the new session evicted the running one, which answered 200, then 404
        body = error(start(client, vid), 429, "too_many_sessions")
        assert "busy" in body["detail"]
        gate.release.set()
        assert ok(running.result(WAIT))["propagated"]
        assert client.post(f"{path}/export", json={"format": "nifti"}).status_code == 200


def test_creation_floods_get_429():
    with make_client(volume_sessions_per_minute=3, volume_sessions_per_client=8,
                     max_volume_sessions=8) as client:
        vid = upload(client)
        for _ in range(3):
            started(client, vid)
        body = error(start(client, vid), 429, "too_many_sessions")
        assert "a minute" in body["detail"]


def test_idle_volume_sessions_expire():
    with make_client(idle_timeout_s=0.2) as client:
        vid = upload(client)
        path = started(client, vid)
        time.sleep(0.3)
        body = error(client.get(path), 404, "volume_session_not_found")
        assert "expired" in body["detail"]
        assert ok(client.get("/health"))["volume_sessions"] == 0


# -- item 4: memory and disk bounded ----------------------------------------------------------
def test_volumes_held_by_sessions_count_against_the_volume_limit():
    with make_client(max_volumes=2) as client:
        first = upload(client, 4)
        held = started(client, first)
        second = upload(client, 4)
        started(client, second)
        # before: the store dropped the first volume while the session kept it in memory
        error(client.post("/v1/volumes", files=[("files", ("t.nii.gz", nifti(4)))]), 429,
              "too_many_volumes")
        assert client.delete(held).status_code == 204
        third = upload(client, 4)  # the first volume (held by nobody now) made room
        error(client.get(f"/v1/volumes/{first}"), 404, "volume_not_found")
        ok(client.get(f"/v1/volumes/{third}"))
        assert client.app.state.msagent_volumes.resident() == 2


def test_spill_is_bounded_and_shutdown_removes_it(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with make_client(volume_embeddings_in_memory=2, max_spill_bytes=10**9) as client:
        path = prompted(client, upload(client))
        ok(client.post(f"{path}/propagate"))
        sessions = client.app.state.msagent_volume_sessions.sessions()
        store = sessions[0].store
        assert store.in_memory == 2 and store.spilled_bytes > 0
        assert len(list(store.folder.iterdir())) == 12 - 2
        assert list(tmp_path.glob("msagent-embeddings-*"))
    assert not list(tmp_path.glob("msagent-embeddings-*"))  # the app's shutdown closed it
