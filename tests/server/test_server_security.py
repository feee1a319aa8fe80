"""Hostile API clients: options that choose endpoints or keys, exposure without a key, unexpected
errors on keep-alive connections, unbounded clicks, images of extreme aspect ratio."""

from __future__ import annotations

import http.client
import json
import socket
import threading

import httpx
import numpy as np
import pytest

from msagent.cli import main
from msagent.io.wire import png_bytes
from msagent.options import InvalidOption
from msagent.server import ServerConfig
from msagent.server.background import serve_in_thread
from msagent.testing import BoxBackbone
from msagent.webapp import create_web_app
from msagent.webapp.agent.policies import run_options

SECRET = "sk-operator-secret-0123456789"


class Listener:
    """A TCP listener on loopback that counts the connections it gets (and what they send)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    spy = Listener()
    yield spy
    spy.close()


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    app = create_web_app(BoxBackbone(cache_size=8), ServerConfig(batch_window_ms=0))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
        client.image_id = client.post("/v1/images", files={"file": ("i.png", png_bytes(image))}).json()["image_id"]
        yield client


def agent_run(client, policy: str, options: str, **extra) -> httpx.Response:
    gt = np.zeros((40, 50), bool)
    gt[10:30, 12:40] = True
    return client.post("/v1/agent/run", data={"image_id": client.image_id, "target": "box",
                                              "policy": policy, "policy_options": options, **extra},
                       files={"ground_truth": ("gt.png", png_bytes(gt.astype(np.uint8) * 255), "image/png")})


@pytest.mark.parametrize("options", [
    "model=m base_url=http://127.0.0.1:{port}/v1",
    "model=m api_key=x base_url=http://127.0.0.1:{port}/v1",
    "temperature=0 extra_body={{}} base_url=http://127.0.0.1:{port}/v1",
])
def test_a_client_cannot_send_the_operators_key_to_its_own_endpoint(api, listener, options):
    response = agent_run(api, "gpt", options.format(port=listener.port))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "base_url" in detail and "allowed: max_tokens" in detail and "operator" in detail
    listener.stop.wait(0.3)
    assert listener.received == []  # the policy was never built, nothing was sent anywhere
    assert SECRET not in response.text


def test_local_policies_take_no_paths_or_devices_from_clients(api):
    qwen = agent_run(api, "qwen", "model=/etc device=cuda:7")
    assert qwen.status_code == 422 and "allowed: none" in qwen.json()["detail"]
    unknown = agent_run(api, "expert", "checkpoint=/etc/passwd")
    assert unknown.status_code == 422 and "'checkpoint'" in unknown.json()["detail"]


@pytest.mark.parametrize("options, message", [
    ("tau=nan", "finite"), ("tau=2", "[0, 1]"), ("candidates=1000000000", "[1, 50]"),
    ("first=lasso", "box, click"), ("seed=1e400", "int"), ("tau=0.1 tau=0.2", "twice"),
    ("tau", "KEY=VALUE"),
])
def test_client_options_are_converted_and_bounded(api, options, message):
    response = agent_run(api, "expert", options)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_declared_options_run(api):
    response = agent_run(api, "expert", "tau=0.05 candidates=3 max_actions=2", max_turns="4")
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert lines[0]["type"] == "start" and lines[-1]["type"] == "done"
    assert lines[-1]["iou"] == pytest.approx(1.0)  # the stand-in's box mask is the ground truth


def test_the_plugin_listing_shows_what_clients_may_set(api):
    policies = {p["name"]: p for p in api.get("/v1/plugins").json()["policies"]}
    assert policies["expert"]["client_options"]["tau"] == {
        "type": "float", "minimum": 0.0, "maximum": 1.0, "choices": None, "optional": False,
        "help": "ΔIoU a corrective click must gain"}
    assert set(policies["gpt"]["client_options"]) == {"temperature", "retry_temperature",
                                                      "max_tokens", "tool_mode"}
    assert policies["qwen"]["client_options"] == {}


def test_operator_options_are_kept_and_cannot_be_overridden():
    operator = {"gpt": {"model": "m", "base_url": "http://127.0.0.1:30000/v1"}}
    assert run_options("gpt", "temperature=0.5 max_tokens=64", operator) == {
        "model": "m", "base_url": "http://127.0.0.1:30000/v1", "temperature": 0.5, "max_tokens": 64}
    with pytest.raises(InvalidOption, match="base_url"):
        run_options("gpt", "base_url=http://evil/v1", operator)
    with pytest.raises(InvalidOption, match="at most 4000"):
        run_options("expert", "tau=0.1 " * 600, {})
    capped = {"gpt": {"model": "m", "max_tokens": 100}}  # the operator's cap stays
    assert run_options("gpt", "max_tokens=4096 temperature=2", capped)["max_tokens"] == 100


def test_only_health_and_the_page_shell_are_open_with_a_key():
    app = create_web_app(BoxBackbone(cache_size=8), ServerConfig(api_key="k3y"))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        for path in ("/", "/openapi.json", "/docs", "/metrics", "/v1/plugins"):
            assert client.get(path).status_code == 401, path
        assert client.get("/health").status_code == 200
        shell = client.get("/ui/")
        assert shell.status_code == 200 and "<html" in shell.text.lower()
        auth = {"Authorization": "Bearer k3y"}
        assert "version" in client.get("/", headers=auth).json()
        assert client.get("/openapi.json", headers=auth).json()["paths"]


def multipart(files: dict) -> tuple[bytes, dict]:
    request = httpx.Request("POST", "http://x/", files=files)
    return request.read(), {"Content-Type": request.headers["content-type"]}


def test_an_unexpected_error_is_a_json_500_and_the_connection_survives():
    app = create_web_app(BoxBackbone(cache_size=8, fail=True), ServerConfig(batch_window_ms=0))
    image = np.zeros((20, 30, 3), np.uint8)
    body, headers = multipart({"image": ("i.png", png_bytes(image), "image/png")})
    with serve_in_thread(app) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/v1/sessions", body=body, headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read())
        assert response.status == 500 and payload["code"] == "internal"
        assert "RuntimeError" in payload["detail"] and "bug" not in payload["detail"]
        sock = conn.sock
        assert sock is not None  # not closed by the server
        conn.request("GET", "/health")
        again = conn.getresponse()
        assert again.status == 200 and json.loads(again.read())["status"] == "ok"
        assert conn.sock is sock  # the same keep-alive connection answered
        conn.close()


def test_clicks_in_force_are_bounded():
    from fastapi.testclient import TestClient

    app = create_web_app(BoxBackbone(cache_size=8), ServerConfig(max_points=3, batch_window_ms=0))
    image = np.zeros((20, 30, 3), np.uint8)
    with TestClient(app) as client:
        session = client.post("/v1/sessions", files={"image": ("i.png", png_bytes(image), "image/png")}).json()
        sid = session["session_id"]
        for x in range(3):
            assert client.post(f"/v1/sessions/{sid}/point", json={"x": x, "y": 1}).status_code == 200
        refused = client.post(f"/v1/sessions/{sid}/point", json={"x": 5, "y": 1})
        assert refused.status_code == 422 and refused.json()["code"] == "too_many_points"
        assert "at most 3" in refused.json()["detail"]
        assert client.post(f"/v1/sessions/{sid}/undo").status_code == 200  # still usable
        predict = client.post("/v1/predict", json={"image_id": session["image_id"], "points": [
            {"x": i, "y": 2, "label": 1} for i in range(4)]})
        assert predict.status_code == 422 and predict.json()["code"] == "too_many_points"


def test_serve_refuses_an_open_address_without_a_key(capsys, monkeypatch):
    monkeypatch.delenv("MSAGENT_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--backbone", "not-installed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to serve 0.0.0.0 without an API key" in err
    # --open is the operator's explicit choice: the exposure check passes, the backbone is next
    assert main(["serve", "--host", "0.0.0.0", "--open", "--backbone", "not-installed"]) == 2
    assert "no backbone named 'not-installed'" in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--api-key", "k", "--backbone", "not-installed"]) == 2
    assert "no backbone named" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 600), (3000, 2)])
def test_extreme_aspect_ratios_are_served(litemedsam, shape):
    from fastapi.testclient import TestClient

    image = np.random.default_rng(2).integers(0, 255, shape + (3,), dtype=np.uint8)
    with TestClient(create_web_app(litemedsam, ServerConfig(batch_window_ms=0))) as client:
        created = client.post("/v1/sessions", files={"image": ("i.png", png_bytes(image), "image/png")})
        assert created.status_code == 201, created.text
        box = {"x1": 0, "y1": 0, "x2": shape[1] - 1, "y2": shape[0] - 1}
        step = client.post(f"/v1/sessions/{created.json()['session_id']}/box", json=box)
        assert step.status_code == 200 and step.json()["mask"]["size"] == list(shape)
        predict = client.post("/v1/predict", json={"image_id": created.json()["image_id"], "box": box})
        assert predict.status_code == 200


def test_a_npy_header_is_checked_before_anything_is_allocated():
    import io as _io
    import tracemalloc

    from numpy.lib import format as npy

    from msagent.errors import InvalidImage
    from msagent.io.wire import ImageTooLarge, load_npy_bytes

    def claim(shape, data=b"\0" * 64):
        buffer = _io.BytesIO()
        npy.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
        return buffer.getvalue() + data

    tracemalloc.start()
    with pytest.raises(ImageTooLarge):
        load_npy_bytes(claim((30000, 30000)), 64_000_000)  # np.load would ask for 6.7 GiB first
    with pytest.raises(InvalidImage, match="holds 64 bytes"):
        load_npy_bytes(claim((3000, 3000)), 64_000_000)
    for shape in ((1, 1, 2**32, 2**32), (2, 2, 2**62, 4), (2**40, 2**40, 3)):  # np.prod wraps to 0
        with pytest.raises(InvalidImage):
            load_npy_bytes(claim(shape, b""), 2**100)
    assert tracemalloc.get_traced_memory()[1] < 8 * 2**20
    tracemalloc.stop()
    from fastapi.testclient import TestClient

    with TestClient(create_web_app(BoxBackbone(cache_size=8), ServerConfig())) as client:
        refused = client.post("/v1/images", files={"file": ("x.npy", claim((30000, 30000)))})
        assert refused.status_code == 413


def test_hostile_compat_fields_batches_and_formats_are_4xx():
    from fastapi.testclient import TestClient

    image = np.zeros((20, 30, 3), np.uint8)
    with TestClient(create_web_app(BoxBackbone(cache_size=8), ServerConfig(batch_window_ms=0, max_points=4))) as client:
        upload = {"image": ("i.png", png_bytes(image), "image/png")}
        for bbox in ("[" * 5000 + "]" * 5000, "[" + "1" * 5000 + ",2,3,4]", "[" * 200_000):
            response = client.post("/predict", files=upload, data={"bbox": bbox})
            assert response.status_code == 422, response.text[:200]
            assert len(response.text) < 2000  # the input is not echoed back whole
        image_id = client.post("/v1/images", files={"file": ("i.png", png_bytes(image))}).json()["image_id"]
        items = [{"points": [{"x": 1, "y": 1, "label": 1}] * 4}] * 5  # 20 clicks > 4 × 4
        batch = client.post("/v1/predict/batch", json={"image_id": image_id, "items": items})
        assert batch.status_code == 422 and batch.json()["code"] == "too_many_points"
        eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
        refused = client.post("/v1/images", files={"file": ("x.eps", eps)})
        assert refused.status_code == 422  # Pillow's Ghostscript plugin is never reached


@pytest.mark.parametrize("flags, message", [
    (["--max-points", "0"], "'max_points' must be >= 1"), (["--idle-timeout", "nan"], "positive number"),
    (["--request-timeout", "-1"], "positive number"), (["--port", "99999"], "from 1 to 65535")])
def test_bad_serve_options_are_one_line(capsys, flags, message):
    assert main(["serve", "--backbone", "not-installed", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_body_without_the_key_is_refused_unread():
    app = create_web_app(BoxBackbone(cache_size=8), ServerConfig(api_key="k3y"))
    with serve_in_thread(app) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.putrequest("POST", "/v1/images")  # claims 50 MB, sends none of it
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(50_000_000))
        conn.endheaders()
        response = conn.getresponse()  # answered at once: the body is never waited for
        assert response.status == 401 and response.getheader("www-authenticate") == "Bearer"
        assert json.loads(response.read())["code"] == "unauthorized"
        conn.close()
        with httpx.Client(base_url=url) as client:
            wrong = client.post("/v1/images", files={"file": ("i.png", b"x" * 1000)},
                                headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "wrong API key" in wrong.json()["detail"]
            image = png_bytes(np.zeros((8, 8, 3), np.uint8))
            ok = client.post("/v1/images", files={"file": ("i.png", image)},
                             headers={"Authorization": "Bearer k3y"})
            assert ok.status_code == 200
