"""Server limits, auth, expiry, batching and a bounded load test (a fast stand-in backbone)."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import httpx
import numpy as np
import pytest

import msagent
from msagent.errors import SegmenterError
from msagent.io.wire import png_bytes
from msagent.server import ServerConfig, create_app
from msagent.server.background import serve_in_thread
from msagent.types import MaskPrediction

BOX = {"x1": 2, "y1": 3, "x2": 20, "y2": 15}
POISON_X = 13  # a click here makes the stand-in decoder fail


# Not msagent.testing.BoxBackbone: batching and load tests need delays, a poisoned click and a
# record of batch sizes.
class Boxes(msagent.Segmenter):
    """Stand-in backbone: the mask is the box (clicks set single pixels); sleeps to act slow."""

    multimask_default = False

    def __init__(self, encode_delay: float = 0.0, decode_delay: float = 0.0) -> None:
        super().__init__(cache_size=8)
        self.encode_delay, self.decode_delay = encode_delay, decode_delay
        self.encodes = 0
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def encode_image(self, image):
        time.sleep(self.encode_delay)
        with self._lock:
            self.encodes += 1
        return float(image.mean())

    def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
        time.sleep(self.decode_delay)
        with self._lock:
            self.batches.append(len(prompt_sets))
        out = []
        for prompts in prompt_sets:
            if any(p.x == POISON_X for p in prompts.points):
                raise SegmenterError("poisoned click")
            mask = np.zeros(embedding.image_size, bool)
            if prompts.box is not None:
                b = prompts.box
                mask[b.y1:b.y2 + 1, b.x1:b.x2 + 1] = True
            for p in prompts.points:
                mask[p.y, p.x] = p.positive
            out.append(MaskPrediction(mask, np.full((256, 256), len(prompts.points), np.float32), 0.5))
        return out


def image(seed: int = 0, shape=(24, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def files(img: np.ndarray) -> dict:
    return {"image": ("i.png", png_bytes(img), "image/png")}


def test_api_key_is_required_when_configured():
    app = create_app(Boxes(), ServerConfig(api_key="s3cret"))
    with serve_in_thread(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        for path in ("/v1/sessions", "/metrics", "/sessions", "/openapi.json", "/"):
            missing = httpx.get(url + path)
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
            assert "API key" in missing.json()["detail"]
            wrong = httpx.get(url + path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "wrong API key" in wrong.json()["detail"]
            assert httpx.get(url + path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        created = httpx.post(f"{url}/session/create", files=files(image()))
        assert created.status_code == 401


def test_max_sessions_and_delete_frees_room():
    app = create_app(Boxes(), ServerConfig(max_sessions=2))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as c:
        ids = [c.post("/v1/sessions", files=files(image())).json()["session_id"] for _ in range(2)]
        full = c.post("/v1/sessions", files=files(image()))
        assert full.status_code == 429 and "--max-sessions" in full.json()["detail"]
        assert c.post("/v1/sessions", data={"session_id": ids[0],
                                             "image_id": msagent.backbones.segmenter.image_key(image())}
                      ).status_code == 409
        c.delete(f"/v1/sessions/{ids[0]}")
        assert c.post("/v1/sessions", files=files(image())).status_code == 201


@pytest.mark.slow
def test_idle_sessions_expire():
    app = create_app(Boxes(), ServerConfig(idle_timeout_s=0.3))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as c:
        sid = c.post("/v1/sessions", files=files(image())).json()["session_id"]
        for _ in range(3):  # used sessions stay alive
            time.sleep(0.15)
            assert c.post(f"/v1/sessions/{sid}/box", json=BOX).status_code == 200
        time.sleep(0.6)  # the sweeper removes it without any request
        assert len(app.state.msagent.store) == 0
        gone = c.get(f"/v1/sessions/{sid}")
        assert gone.status_code == 404 and "expired after 0.3 s" in gone.json()["detail"]
        assert c.get("/metrics").json()["sessions"]["expired"] == 1


def test_upload_limits_give_413():
    app = create_app(Boxes(), ServerConfig(max_upload_bytes=4096, max_pixels=24 * 32))
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as c:
        big = image(shape=(64, 64, 3))  # incompressible noise, > 4 KiB as PNG
        response = c.post("/v1/images", files={"file": ("b.png", png_bytes(big), "image/png")})
        assert response.status_code == 413 and "limit" in response.json()["detail"]

        def chunks():  # no Content-Length: counted while reading
            for _ in range(10):
                yield b"x" * 1000

        streamed = c.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        wide = np.zeros((10, 100), np.uint8)  # 1000 pixels > 768, small as PNG
        too_many = c.post("/v1/images", files={"file": ("w.png", png_bytes(wide), "image/png")})
        assert too_many.status_code == 413 and "pixels" in too_many.json()["detail"]
        buffer = io.BytesIO()
        np.save(buffer, wide)
        as_npy = c.post("/v1/images", files={"file": ("w.npy", buffer.getvalue(), "application/octet-stream")})
        assert as_npy.status_code == 413
        assert c.post("/v1/images", files={"file": ("ok.png", png_bytes(image()), "image/png")}
                      ).status_code == 200


@pytest.mark.slow
def test_the_event_loop_answers_while_the_backbone_works():
    app = create_app(Boxes(encode_delay=2.0))
    with serve_in_thread(app) as url:
        async def run():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                slow = asyncio.create_task(c.post("/v1/sessions", files=files(image())))
                await asyncio.sleep(0.2)
                health = await c.get("/health")
                return health, slow.done(), await slow

        health, encode_done, created = asyncio.run(run())
    assert health.status_code == 200 and not encode_done  # answered during the encode
    assert created.status_code == 201


def test_a_slow_backbone_times_out_with_503():
    app = create_app(Boxes(encode_delay=1.5, decode_delay=1.5), ServerConfig(request_timeout_s=0.2))
    with serve_in_thread(app) as url:
        slow = httpx.post(f"{url}/v1/sessions", files=files(image()), timeout=30)
    assert slow.status_code == 503 and "--request-timeout" in slow.json()["detail"]


@pytest.mark.parametrize("window_ms", [0, 30])
def test_concurrent_decodes_on_one_image_are_micro_batched(window_ms):
    segmenter = Boxes(decode_delay=0.01)
    app = create_app(segmenter, ServerConfig(batch_window_ms=window_ms))
    img = image()
    with serve_in_thread(app) as url:
        image_id = httpx.post(f"{url}/v1/images", params={"encode": True},
                              files={"file": ("i.png", png_bytes(img), "image/png")}).json()["image_id"]

        async def run():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                bodies = [{"image_id": image_id, "box": BOX, "points": [{"x": 5 + i, "y": 5}]}
                          for i in range(8)]
                bodies[3]["points"] = [{"x": POISON_X, "y": 5}]
                return await asyncio.gather(*[c.post("/v1/predict", json=b) for b in bodies])

        responses = asyncio.run(run())
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 200, 422, 200, 200, 200, 200]  # one bad request fails alone
    assert "poisoned" in responses[3].json()["detail"]
    if window_ms:
        assert max(segmenter.batches) > 1
    else:
        assert set(segmenter.batches) == {1}


@pytest.mark.slow
def test_load_32_concurrent_sessions_finishes_without_errors():
    segmenter = Boxes(encode_delay=0.02, decode_delay=0.005)
    app = create_app(segmenter, ServerConfig(max_sessions=32))
    images = [png_bytes(image(seed)) for seed in range(4)]

    async def episode(c: httpx.AsyncClient, n: int) -> list[int]:
        created = await c.post("/v1/sessions", files={"image": ("i.png", images[n % 4], "image/png")})
        sid = created.json()["session_id"]
        codes = [created.status_code]
        codes.append((await c.post(f"/v1/sessions/{sid}/box", json=BOX)).status_code)
        clicks = await asyncio.gather(*[c.post(f"/v1/sessions/{sid}/point", json={"x": 4 + k, "y": 4})
                                        for k in range(2)])  # one session, two clients at once
        codes += [r.status_code for r in clicks]
        state = (await c.get(f"/v1/sessions/{sid}")).json()
        assert state["turns"] == 3 and len(state["points"]) == 2
        codes.append((await c.get(f"/v1/sessions/{sid}/mask")).status_code)
        codes.append((await c.delete(f"/v1/sessions/{sid}")).status_code)
        return codes

    async def run(url):
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
            return await asyncio.wait_for(asyncio.gather(*[episode(c, n) for n in range(32)]), 60)

    with serve_in_thread(app) as url:
        started = time.perf_counter()
        results = asyncio.run(run(url))
        elapsed = time.perf_counter() - started
        metrics = httpx.get(f"{url}/metrics").json()
    assert all(code < 300 for codes in results for code in codes)
    assert segmenter.encodes == 4  # 32 sessions, 4 images
    assert metrics["sessions"]["created"] == 32 and metrics["sessions"]["active"] == 0
    assert metrics["decode"]["count"] == 96 and metrics["requests"].get("5xx", 0) == 0
    assert elapsed < 60


@pytest.mark.slow
def test_static_files_are_served_at_ui_when_present(tmp_path):
    from msagent.webapp import create_web_app

    (tmp_path / "index.html").write_text("<h1>msagent</h1>")
    app = create_web_app(Boxes(), ServerConfig(static_dir=str(tmp_path), api_key="k"))
    with serve_in_thread(app) as url:
        page = httpx.get(f"{url}/ui/")
        assert page.status_code == 200 and "msagent" in page.text
        assert httpx.get(f"{url}/", headers={"Authorization": "Bearer k"}).json()["ui"] == "/ui/"
    plain = create_web_app(Boxes(), ServerConfig(static_dir=str(tmp_path / "missing")))
    with serve_in_thread(plain) as url:
        assert httpx.get(f"{url}/ui/").status_code == 404
        assert httpx.get(f"{url}/").json()["ui"] is None
    service = create_app(Boxes(), ServerConfig(static_dir=str(tmp_path)))  # the service alone
    with serve_in_thread(service) as url:
        assert httpx.get(f"{url}/ui/").status_code == 404
        assert httpx.get(f"{url}/v1/plugins").status_code == 404


class TextBoxes(Boxes):
    """A stand-in for a text-prompted backbone (like imisnet): records the texts it got."""

    accepts_text = True

    def __init__(self) -> None:
        super().__init__()
        self.texts: list = []

    def decode(self, embedding, prompts, prev_logits=None, *, multimask=False, text=None):
        return self.decode_batch(embedding, [prompts], [prev_logits], multimask=multimask, text=text)[0]

    def decode_batch(self, embedding, prompt_sets, prev_logits=None, *, multimask=False, text=None):
        self.texts.append(text)
        return super().decode_batch(embedding, prompt_sets, prev_logits, multimask=multimask, text=text)


def test_text_prompts_reach_backbones_that_accept_them():
    from msagent.backbones.remote import RemoteSegmenter
    from msagent.types import BBox, Prompts

    segmenter = TextBoxes()
    img = image()
    with serve_in_thread(create_app(segmenter, ServerConfig(batch_window_ms=0))) as url, \
            httpx.Client(base_url=url) as c:
        assert c.get("/health").json()["accepts_text"] is True
        image_id = c.post("/v1/images", files={"file": ("i.png", png_bytes(img), "image/png")}
                          ).json()["image_id"]
        only_text = c.post("/v1/predict", json={"image_id": image_id, "text": "liver"})
        assert only_text.status_code == 200 and segmenter.texts[-1] == ["liver"]
        sid = c.post("/v1/sessions", data={"image_id": image_id, "text": "kidney"}).json()["session_id"]
        assert c.post(f"/v1/sessions/{sid}/box", json=BOX).status_code == 200
        assert segmenter.texts[-1] == ["kidney"]
        remote = RemoteSegmenter(url)
        assert remote.accepts_text
        remote.decode(remote.encode(img), Prompts(box=BBox(1, 1, 5, 5)), text="spleen")
        assert segmenter.texts[-1] == ["spleen"]
        episode = msagent.Agent(msagent.load_policy("oracle-box"), remote).run(
            img, "left lung", np.ones(img.shape[:2], bool))
        assert episode.turns == 1 and segmenter.texts[-1] == ["left lung"]
    with serve_in_thread(create_app(Boxes())) as url:
        refused = httpx.post(f"{url}/v1/predict", json={"image_id": "0" * 64, "box": BOX,
                                                        "text": "liver"})
        assert refused.status_code == 422 and "takes no text prompt" in refused.json()["detail"]
        assert httpx.post(f"{url}/v1/sessions", files=files(img), data={"text": "x"}).status_code == 422


def test_requests_queued_behind_a_running_batch_become_one_batch():
    segmenter = Boxes(decode_delay=0.3)
    app = create_app(segmenter, ServerConfig(batch_window_ms=1))
    img = image()
    with serve_in_thread(app) as url:
        image_id = httpx.post(f"{url}/v1/images", params={"encode": True},
                              files={"file": ("i.png", png_bytes(img), "image/png")}).json()["image_id"]

        async def run():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                body = {"image_id": image_id, "box": BOX, "return_logits": False}
                first = asyncio.create_task(c.post("/v1/predict", json=body))
                await asyncio.sleep(0.1)  # the first decode is running now
                rest = await asyncio.gather(*[c.post("/v1/predict", json=body) for _ in range(7)])
                return [await first, *rest]

        assert all(r.status_code == 200 for r in asyncio.run(run()))
    assert segmenter.batches == [1, 7]


def test_micro_batching_defaults_to_gpus_only():
    assert ServerConfig().batch_window_s("cuda:0") == 0.002
    assert ServerConfig().batch_window_s("cpu") == 0.0
    assert ServerConfig(batch_window_ms=5).batch_window_s("cpu") == 0.005
    assert ServerConfig(batch_window_ms=5, max_batch=1).batch_window_s("cuda") == 0.0
