"""End-to-end tests of ``msagent serve`` over loopback with the real LiteMedSAM weights."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from msagent.backbones.segmenter import image_key
from msagent.io.wire import pack_array, png_bytes, unpack_array
from msagent.server import ServerConfig, create_app
from msagent.server.background import serve_in_thread
from msagent.testing import make_phantom
from msagent.types import BBox, Point, Prompts, decode_mask

pytestmark = pytest.mark.slow  # end to end over loopback with the real LiteMedSAM weights

BOX = {"x1": 60, "y1": 45, "x2": 180, "y2": 135}
CLICKS = [(120, 90, 0), (75, 95, 1)]


@pytest.fixture(scope="module")
def server(litemedsam):
    app = create_app(litemedsam, ServerConfig(batch_window_ms=5))
    with serve_in_thread(app) as url:
        yield url, app.state.msagent


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def image():
    return make_phantom()[0]


def upload(client, image) -> str:
    response = client.post("/v1/images", files={"file": ("i.png", png_bytes(image), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["image_id"]


def reference(segmenter, image, prompts_seq, mode="accumulate"):
    """In-process decodes of a prompt sequence, as a session runs them."""
    embedding, prompts, prev, out = segmenter.encode(image), Prompts(), None, []
    for prompt in prompts_seq:
        prompts = prompts.latest_only(prompt) if mode == "latest" else prompts.add(prompt)
        pred = segmenter.decode(embedding, prompts, prev, multimask=False)
        prev = pred.low_res_logits
        out.append(pred)
    return out


def test_session_masks_equal_in_process_results(client, litemedsam, image):
    image_id = upload(client, image)
    assert image_id == image_key(image)
    created = client.post("/v1/sessions", data={"image_id": image_id})
    assert created.status_code == 201
    sid = created.json()["session_id"]
    steps = [client.post(f"/v1/sessions/{sid}/box", json=BOX).json()]
    for x, y, label in CLICKS:
        steps.append(client.post(f"/v1/sessions/{sid}/point", json={"x": x, "y": y, "label": label}).json())
    expected = reference(litemedsam, image, [BBox(**BOX)] + [Point(x, y, bool(lab)) for x, y, lab in CLICKS])
    for step, pred in zip(steps, expected):
        assert np.array_equal(decode_mask(step["mask"]), pred.mask)
        assert step["session"]["score"] == pytest.approx(pred.score, abs=1e-6)
    info = steps[-1]["session"]
    assert info["turns"] == 3 and info["box"] == BOX and len(info["points"]) == 2

    png = client.get(f"/v1/sessions/{sid}/mask")
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))) > 0, expected[-1].mask)
    rle = client.get(f"/v1/sessions/{sid}/mask", params={"format": "rle"}).json()
    assert np.array_equal(decode_mask(rle), expected[-1].mask)

    undone = client.post(f"/v1/sessions/{sid}/undo").json()
    assert np.array_equal(decode_mask(undone["mask"]), expected[1].mask)
    assert undone["session"]["turns"] == 2
    # after undo the state is exactly the earlier one: the same click again gives the same mask
    x, y, label = CLICKS[1]
    again = client.post(f"/v1/sessions/{sid}/point", json={"x": x, "y": y, "label": label}).json()
    assert np.array_equal(decode_mask(again["mask"]), expected[2].mask)

    reset = client.post(f"/v1/sessions/{sid}/reset").json()
    assert reset["session"]["has_mask"] is False and reset["session"]["turns"] == 0
    assert client.get(f"/v1/sessions/{sid}/mask").status_code == 409
    assert client.delete(f"/v1/sessions/{sid}").status_code == 200
    assert client.get(f"/v1/sessions/{sid}").status_code == 404


def test_predict_is_the_stateless_decode(client, litemedsam, image):
    image_id = upload(client, image)
    first = client.post("/v1/predict", json={"image_id": image_id, "box": BOX,
                                             "logits_dtype": "float32"}).json()
    expected = reference(litemedsam, image, [BBox(**BOX), Point(120, 90, False)])
    assert np.array_equal(decode_mask(first["mask"]), expected[0].mask)
    assert np.array_equal(unpack_array(first["logits"]), expected[0].low_res_logits)
    assert first["area"] == int(expected[0].mask.sum())
    second = client.post("/v1/predict", json={
        "image_id": image_id, "box": BOX, "points": [{"x": 120, "y": 90, "label": 0}],
        "prev_logits": first["logits"], "logits_dtype": "float32", "mask_format": "png"}).json()
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(second["mask_png"])))) > 0
    assert np.array_equal(mask, expected[1].mask)
    # an inline image gives the same answer and registers the image
    inline = client.post("/v1/predict", json={
        "image_b64": base64.b64encode(png_bytes(image)).decode(), "box": BOX,
        "return_logits": False}).json()
    assert inline["image_id"] == image_id and inline["logits"] is None
    assert np.array_equal(decode_mask(inline["mask"]), expected[0].mask)
    batch = client.post("/v1/predict/batch", json={
        "image_id": image_id, "items": [{"box": BOX}, {"points": [{"x": 120, "y": 90}]}]}).json()
    assert len(batch["predictions"]) == 2
    assert np.array_equal(decode_mask(batch["predictions"][0]["mask"]), expected[0].mask)


def test_float16_logits_round_trip(client, image):
    image_id = upload(client, image)
    first = client.post("/v1/predict", json={"image_id": image_id, "box": BOX}).json()
    logits = unpack_array(first["logits"])
    assert first["logits"]["dtype"] == "float16" and logits.shape == (256, 256)
    again = client.post("/v1/predict", json={"image_id": image_id, "box": BOX,
                                             "prev_logits": pack_array(logits, "float16")})
    assert again.status_code == 200


def test_eight_sessions_on_one_image_encode_it_once(server, litemedsam):
    url, ctx = server
    image = make_phantom(seed=8)[0]  # not encoded before
    data = png_bytes(image)
    before = litemedsam.cache_info()
    encodes_before = ctx.metrics.encode.count

    async def create_all():
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            responses = await asyncio.gather(*[
                c.post("/v1/sessions", files={"image": ("g.png", data, "image/png")})
                for _ in range(8)])
            return [r.json() for r in responses]

    sessions = asyncio.run(create_all())
    assert {s["image_id"] for s in sessions} == {image_key(image)}
    after = litemedsam.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 7
    assert ctx.metrics.encode.count - encodes_before == 1

    async def decode_all():  # concurrent decodes on one image are batched
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            responses = await asyncio.gather(*[
                c.post(f"/v1/sessions/{s['session_id']}/box", json=BOX) for s in sessions])
            return [r.json() for r in responses]

    batches_before = dict(ctx.metrics.batch_sizes)
    steps = asyncio.run(decode_all())
    expected = reference(litemedsam, image, [BBox(**BOX)])[0]
    for step in steps:
        assert np.array_equal(decode_mask(step["mask"]), expected.mask)
    new = {size: n - batches_before.get(size, 0) for size, n in ctx.metrics.batch_sizes.items()}
    assert max(size for size, n in new.items() if n > 0) > 1
    metrics = httpx.get(f"{url}/metrics").json()
    assert metrics["batches"]["max_size"] > 1 and metrics["sessions"]["active"] >= 8


def test_upstream_compatible_routes(client, litemedsam, image):
    files = {"image": ("image.png", png_bytes(image), "image/png")}
    created = client.post("/session/create", files=files, data={"session_id": "upstream-1"}).json()
    assert created == {"session_id": "upstream-1", "message": "Session created successfully",
                       "image_size": [image.shape[1], image.shape[0]]}
    box = client.post("/session/add_bbox", data={"session_id": "upstream-1", "bbox": "[60, 45, 180, 135]",
                                                 "multimask_output": False}).json()
    click = client.post("/session/add_click", data={"session_id": "upstream-1", "point_x": 120,
                                                    "point_y": 90, "is_positive": False}).json()
    assert click["round_number"] == 2 and click["total_clicks"] == 2
    expected = reference(litemedsam, image, [BBox(**BOX), Point(120, 90, False)], mode="latest")
    for response, pred in zip((box, click), expected):
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(response["masks"][0]))))
        assert np.array_equal(mask > 127, pred.mask)
    status = client.get("/session/upstream-1/status").json()
    assert status["clicks_history"] == ["bbox:[60, 45, 180, 135]", [120, 90, 0]]
    assert "upstream-1" in [s["session_id"] for s in client.get("/sessions").json()["sessions"]]
    assert client.delete("/session/upstream-1").json()["message"] == "Session deleted"
    one_shot = client.post("/predict_with_state", files=files, data={
        "bbox": "[60, 45, 180, 135]",
        "previous_logits": base64.b64encode(expected[0].low_res_logits.tobytes()).decode()}).json()
    assert one_shot["logits_shape"] == [1, 256, 256]
    assert client.get("/health").json()["active_sessions"] >= 0


@pytest.mark.parametrize("method, path, kwargs, status, words", [
    ("post", "/v1/sessions", {"data": {}}, 422, "exactly one of image"),
    ("post", "/v1/sessions", {"files": {"image": ("x.png", b"not an image", "image/png")}}, 422,
     "not a readable image"),
    ("post", "/v1/sessions", {"data": {"image_id": "0" * 64}}, 404, "upload it"),
    ("post", "/v1/sessions/nope/box", {"json": BOX}, 404, "no session"),
    ("post", "/v1/predict", {"json": {"image_id": "IMAGE", "box": {**BOX, "x2": 5000}}}, 422,
     "outside"),
    ("post", "/v1/predict", {"json": {"image_id": "IMAGE"}}, 422, "at least one"),
    ("post", "/v1/predict", {"json": {"image_id": "IMAGE", "box": BOX,
                                      "prev_logits": {"shape": [2, 2], "data": "AAAA"}}}, 422,
     "bytes"),
    ("post", "/v1/predict", {"json": {"image_id": "IMAGE", "box": BOX, "prev_logits": {
        "shape": [256, 256], "dtype": "float16", "data": "!!"}}}, 422, "base64"),
    ("post", "/v1/predict", {"json": {"image_id": "IMAGE", "box": {"x1": "a"}}}, 422, "x1"),
    ("post", "/session/add_bbox", {"data": {"session_id": "nope", "bbox": "[1,2,3,4]"}}, 404, "no session"),
    ("post", "/predict", {"files": {"image": ("i.png", b"\x89PNG", "image/png")}}, 422, "readable"),
])
def test_bad_requests_get_4xx_with_a_clear_message(client, image, method, path, kwargs, status, words):
    image_id = upload(client, image)
    if "json" in kwargs and kwargs["json"].get("image_id") == "IMAGE":
        kwargs = {"json": {**kwargs["json"], "image_id": image_id}}
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_nothing_to_undo_is_a_conflict(client, image):
    sid = client.post("/v1/sessions", data={"image_id": upload(client, image)}).json()["session_id"]
    response = client.post(f"/v1/sessions/{sid}/undo")
    assert response.status_code == 409 and "nothing to undo" in response.json()["detail"]
    client.delete(f"/v1/sessions/{sid}")
