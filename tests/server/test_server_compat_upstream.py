"""Upstream MedSAM-Agent's server semantics on the compatible router (issue 15, item 8):
boxes and clicks outside the image are clamped, as upstream's server accepted them;
``total_clicks`` counts upstream's clicks list (add_click and add_bbox), not segment calls."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from msagent.io.wire import png_bytes
from msagent.server import ServerConfig, create_app
from msagent.server.background import serve_in_thread
from msagent.server.compat import clamp_box, clamp_point, clamp_prompts
from msagent.testing import make_phantom
from msagent.types import BBox, Point, Prompts


@pytest.fixture(scope="module")
def client(litemedsam):
    app = create_app(litemedsam, ServerConfig(batch_window_ms=5))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        yield c


def _mask(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(response["masks"][0])))) > 127


def test_clamping_is_into_the_image():
    size = (117, 99)  # (height, width)
    assert clamp_point(Point(-3, 500, False), size) == Point(0, 116, False)
    assert clamp_box(BBox(-20, -5, 5000, 60), size) == BBox(0, 0, 98, 60)
    assert clamp_box(BBox(150, 10, 200, 20), size) == BBox(98, 10, 98, 20)
    assert clamp_prompts(Prompts(BBox(0, 0, 1, 1), (Point(99, 117),)), size) == \
        Prompts(BBox(0, 0, 1, 1), (Point(98, 116),))


def test_out_of_image_prompts_are_clamped_and_clicks_counted_as_upstream(client, litemedsam):
    image = make_phantom()[0]
    height, width = image.shape[:2]
    files = {"image": ("image.png", png_bytes(image), "image/png")}
    assert client.post("/session/create", files=files, data={"session_id": "up-clamp"}).status_code == 200
    # upstream's RL tool sends int(v * size / 1000) unchecked: v = 1200 lands beyond the image
    box = client.post("/session/add_bbox", data={"session_id": "up-clamp",
                                                 "bbox": f"[-10, 40, {int(1200 * width / 1000)}, 130]"})
    assert box.status_code == 200, box.text
    click = client.post("/session/add_click", data={"session_id": "up-clamp", "point_x": -4,
                                                    "point_y": height + 50, "is_positive": False})
    assert click.status_code == 200, click.text
    embedding = litemedsam.encode(image)
    first = litemedsam.decode(embedding, Prompts(box=BBox(0, 40, width - 1, 130)), None, multimask=False)
    second = litemedsam.decode(embedding, Prompts(points=(Point(0, height - 1, False),)),
                               first.low_res_logits, multimask=False)
    assert np.array_equal(_mask(box.json()), first.mask)
    assert np.array_equal(_mask(click.json()), second.mask)
    segment = client.post("/session/segment", data={"session_id": "up-clamp",
                                                    "point_coords": "[[5000, 5000]]",
                                                    "point_labels": "[1]"})
    assert segment.status_code == 200, segment.text
    assert (segment.json()["round_number"], segment.json()["total_clicks"]) == (3, 2)
    status = client.get("/session/up-clamp/status").json()
    assert status["total_clicks"] == 2 and status["round_number"] == 3
    assert status["clicks_history"] == [f"bbox:[-10, 40, {int(1200 * width / 1000)}, 130]",
                                        [-4, height + 50, 0]]  # as sent, like upstream's
    listed = {s["session_id"]: s for s in client.get("/sessions").json()["sessions"]}
    assert listed["up-clamp"]["total_clicks"] == 2
    one_shot = client.post("/predict", files=files, data={"bbox": "[-50, -50, 99999, 99999]"})
    assert one_shot.status_code == 200, one_shot.text


def test_own_routes_still_refuse_prompts_outside_the_image(client):
    image = make_phantom()[0]
    up = client.post("/v1/images", files={"file": ("i.png", png_bytes(image), "image/png")}).json()
    response = client.post("/v1/predict", json={"image_id": up["image_id"],
                                                "box": {"x1": 0, "y1": 0, "x2": 5000, "y2": 10}})
    assert response.status_code == 422
