"""The web app's volume sessions (/v1/volumes/{id}/sessions/...): a NIfTI uploaded once,
prompts on any slice, propagation, corrections, undo, the whole 3-D export, and hostile
requests. A stand-in backbone with known behaviour (a box selects the bright pixels inside it,
as in tests/volume/test_volume.py) makes every expected mask exact."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msagent import io as msio
from msagent.agent.refine import mask_box
from msagent.backbones.propagation import Propagator
from msagent.server import ServerConfig
from msagent.testing import BrightBackbone, logits_of
from msagent.types import MaskPrediction, decode_mask
from msagent.webapp import STATIC_DIR, create_web_app

nib = pytest.importorskip("nibabel")

AFFINE = np.diag([1.0, 1.0, 2.5, 1.0])
WINDOW = "200/110"  # background (20-50) → dark, the target (200) → bright


class Copying(Propagator):
    """A stand-in native propagator: every slice gets the nearest seed's mask."""

    method = "native"
    closed = 0

    def propagate(self):
        self.decodes += self.stack.count
        self.results = {}
        for index in range(self.stack.count):
            seed = self.seeds[min(self.seeds, key=lambda s: (abs(s - index), s))]
            if seed.mask.any():
                self.results[index] = MaskPrediction(seed.mask.copy(), logits_of(seed.mask), 0.5)
        return self.results

    def close(self):
        type(self).closed += 1


class NativeBright(BrightBackbone):
    name = "native-bright"

    def native_propagator(self, stack):
        return Copying(stack)


def tube(count=12, size=(40, 48), shift_at=None, shift=0):
    """A bright disk through ``count`` slices along k (radius 4→7→5), optionally jumping
    ``shift`` px from slice ``shift_at`` on: the (i, j, k) volume and its labels. The
    background darkens slice by slice, so no two slices are alike."""
    volume = np.full((*size, count), 20.0) + np.arange(count)[None, None, :] * 2.0
    labels = np.zeros(volume.shape, np.uint8)
    ii, jj = np.mgrid[:size[0], :size[1]]
    for k in range(count):
        radius = 4 + 3 * np.sin(np.pi * k / (count + 4))
        cj = 16 + (shift if shift_at is not None and k >= shift_at else 0)
        labels[:, :, k] = (ii - 20) ** 2 + (jj - cj) ** 2 <= radius ** 2
    volume[labels > 0] = 200.0
    return volume.astype(np.float32), labels


def nifti_bytes(data: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(data, AFFINE).to_bytes())


def display(labels: np.ndarray, index: int) -> np.ndarray:
    return msio.Volume(labels, AFFINE).slice(index) > 0


@pytest.fixture
def client_for():
    from fastapi.testclient import TestClient

    def make(segmenter=None, **config):
        app = create_web_app(segmenter or BrightBackbone(), ServerConfig(batch_window_ms=0, **config))
        return TestClient(app)

    return make


@pytest.fixture
def client(client_for):
    with client_for() as c:
        yield c


def upload(client, data: np.ndarray, name="tube.nii.gz") -> str:
    response = client.post("/v1/volumes", files=[("files", (name, nifti_bytes(data)))])
    assert response.status_code == 201, response.text
    return response.json()["volume_id"]


def start(client, volume_id: str, **body) -> str:
    response = client.post(f"/v1/volumes/{volume_id}/sessions",
                           json={"target": "tube", "window": WINDOW, **body})
    assert response.status_code == 201, response.text
    return f"/v1/volumes/{volume_id}/sessions/{response.json()['session_id']}"


def box_of(mask: np.ndarray) -> dict:
    box = mask_box(mask)
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2}


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def exported(client, path: str, tmp_path: Path) -> np.ndarray:
    response = client.post(f"{path}/export", json={"format": "nifti"})
    assert response.status_code == 200, response.text
    assert "-mask.nii.gz\"; filename*=UTF-8''" in response.headers["content-disposition"]
    file = tmp_path / "mask.nii.gz"
    file.write_bytes(response.content)
    image = nib.load(file)
    assert np.allclose(image.affine, AFFINE)
    return np.asarray(image.dataobj)


def error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"], body
    return body


def test_prompt_key_slice_propagate_and_export_the_whole_tube(client, tmp_path):
    volume, labels = tube()
    segmenter = client.app.state.msagent.engine.segmenter
    vid = upload(client, volume)
    path = start(client, vid)
    info = ok(client.get(path))
    assert info["method"] == "generic" and info["count"] == 12 and info["seeds"] == []
    assert (info["height"], info["width"]) == display(labels, 0).shape and segmenter.encodes == 0
    # the session's slices are the page's slices: the same window, the same pixels
    png = client.get(f"/v1/volumes/{vid}/slice.png", params={"index": 6, "window": WINDOW})
    shown = np.asarray(Image.open(io.BytesIO(png.content))) > 120
    assert np.array_equal(shown, display(labels, 6))

    key = display(labels, 6)
    step = ok(client.post(f"{path}/slices/6/prompts", json={"box": box_of(key)}))
    assert np.array_equal(decode_mask(step["mask"]), key) and step["area"] == key.sum()
    assert step["box"] == box_of(key) and step["points"] == []
    assert step["session"]["seeds"] == [6] and step["session"]["pending"] == [6]
    assert segmenter.encodes == 1

    result = ok(client.post(f"{path}/propagate"))
    assert result["pending"] == [] and result["propagated"] and result["undo"] == 2
    assert [s["index"] for s in result["slices"]] == list(range(12))
    assert [s["area"] for s in result["slices"]] == [int(display(labels, i).sum()) for i in range(12)]
    assert result["slices"][6]["source"] == "seed" and result["slices"][0]["source"] == "propagated"
    assert segmenter.encodes == result["encodes"] == 12  # each slice encoded once
    assert np.array_equal(exported(client, path, tmp_path), labels)

    mask = client.get(f"{path}/slices/0/mask")
    body = ok(mask)
    assert body["source"] == "propagated" and mask.headers["x-mask-source"] == "propagated"
    assert np.array_equal(decode_mask(body), display(labels, 0)) and body["box"] is None
    png = client.get(f"{path}/slices/0/mask", params={"format": "png"})
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))) > 0, display(labels, 0))
    assert ok(client.post(f"{path}/propagate"))["undo"] == 2  # nothing new: no undo step


def test_correction_on_another_slice_propagate_and_undo(client, tmp_path):
    volume, labels = tube(shift_at=8, shift=18)
    segmenter = client.app.state.msagent.engine.segmenter
    vid = upload(client, volume)
    path = start(client, vid)
    ok(client.post(f"{path}/slices/4/prompts", json={"box": box_of(display(labels, 4))}))
    first = ok(client.post(f"{path}/propagate"))
    # the disk jumps at slice 8: propagation from slice 4 ends there
    assert [s["index"] for s in first["slices"]] == list(range(8))
    before = exported(client, path, tmp_path)
    assert np.array_equal(before[:, :, :8], labels[:, :, :8]) and not before[:, :, 8:].any()

    ok(client.post(f"{path}/slices/10/prompts", json={"box": box_of(display(labels, 10))}))
    second = ok(client.post(f"{path}/propagate"))
    assert [s["index"] for s in second["slices"]] == list(range(12))
    assert second["seeds"] == [4, 10] and second["undo"] == 4
    assert np.array_equal(exported(client, path, tmp_path), labels)
    encodes, decodes = segmenter.encodes, second["decodes"]

    undone = ok(client.post(f"{path}/undo"))  # the second propagation: back to its result
    assert undone["seeds"] == [4, 10] and undone["pending"] == [10] and undone["undo"] == 3
    restored = exported(client, path, tmp_path)
    assert np.array_equal(restored[:, :, :8], labels[:, :, :8])
    assert [s["index"] for s in undone["slices"]] == [*range(8), 10]
    assert ok(client.get(f"{path}/slices/10/mask"))["source"] == "seed"
    assert ok(client.get(f"{path}/slices/9/mask"))["source"] == "none"
    undone = ok(client.post(f"{path}/undo"))  # the prompt on slice 10
    assert undone["seeds"] == [4] and undone["pending"] == []
    assert np.array_equal(exported(client, path, tmp_path), before)

    # the propagator was rebuilt from the restored result and its seeds: nothing to redo
    again = ok(client.post(f"{path}/propagate"))
    assert [s["index"] for s in again["slices"]] == list(range(8))
    assert np.array_equal(exported(client, path, tmp_path), before)
    assert segmenter.encodes == encodes and again["decodes"] == decodes
    ok(client.post(f"{path}/undo"))  # the first propagation (the second made no undo step)
    ok(client.post(f"{path}/undo"))  # the first prompt: nothing left
    error(client.post(f"{path}/undo"), 409, "conflict")
    error(client.post(f"{path}/propagate"), 409, "conflict")
    error(client.post(f"{path}/export", json={"format": "nifti"}), 409, "conflict")


def test_a_click_corrects_the_propagated_mask_of_its_slice(client, tmp_path):
    volume, labels = tube()
    path = start(client, upload(client, volume))
    ok(client.post(f"{path}/slices/6/prompts", json={"box": box_of(display(labels, 6))}))
    ok(client.post(f"{path}/propagate"))
    propagated = display(labels, 2)
    ys, xs = np.nonzero(propagated)
    x, y = int(xs.min()), int(ys.min() + (ys.max() - ys.min()) // 2)  # on the disk's left edge
    step = ok(client.post(f"{path}/slices/2/prompts", json={"point": {"x": x, "y": y, "label": 0}}))
    yy, xx = np.mgrid[:propagated.shape[0], :propagated.shape[1]]
    expected = propagated & ~((yy - y) ** 2 + (xx - x) ** 2 <= 4)
    # the slice started from its propagated mask: its box is in force, the click removes a disk
    assert np.array_equal(decode_mask(step["mask"]), expected) and expected.sum() < propagated.sum()
    assert step["box"] == box_of(propagated) and step["points"] == [{"x": x, "y": y, "label": 0}]
    assert step["session"]["pending"] == [2]
    ok(client.post(f"{path}/propagate"))
    out = exported(client, path, tmp_path)
    assert np.array_equal(msio.Volume(out, AFFINE).slice(2) > 0, expected)


def test_native_propagation_and_undo_rebuilds_the_propagator(client_for, tmp_path):
    volume, labels = tube()
    Copying.closed = 0
    with client_for(NativeBright()) as client:
        path = start(client, upload(client, volume), propagation="native")
        assert ok(client.get(path))["method"] == "native"
        key = display(labels, 6)
        ok(client.post(f"{path}/slices/6/prompts", json={"box": box_of(key)}))
        result = ok(client.post(f"{path}/propagate"))
        assert [s["index"] for s in result["slices"]] == list(range(12))
        out = exported(client, path, tmp_path)
        assert all(np.array_equal(msio.Volume(out, AFFINE).slice(i) > 0, key) for i in range(12))
        ok(client.post(f"{path}/undo"))
        assert Copying.closed == 1  # the undone propagation's native state is released
        box = mask_box(key)
        score = key.sum() / ((box.x2 - box.x1 + 1) * (box.y2 - box.y1 + 1))
        assert ok(client.get(path))["slices"] == [{"index": 6, "source": "seed",
                                                   "area": int(key.sum()), "score": score}]
        client.delete(path)
    assert Copying.closed == 2  # closing the session closes its propagator


def test_hostile_requests_get_4xx_json_with_codes(client_for):
    volume, labels = tube()
    with client_for(max_points=2, max_upload_bytes=64 * 1024) as client:
        vid = upload(client, volume)
        base = f"/v1/volumes/{vid}/sessions"
        path = start(client, vid)
        key = display(labels, 6)
        error(client.post(f"{path}/slices/12/prompts", json={"box": box_of(key)}), 422,
              "slice_out_of_range")
        error(client.post(f"{path}/slices/-1/prompts", json={"box": box_of(key)}), 422,
              "slice_out_of_range")
        error(client.get(f"{path}/slices/99/mask"), 422, "slice_out_of_range")
        error(client.get(f"{path}/slices/two/mask"), 422, "invalid_request")
        point = {"x": 16, "y": 20, "label": 1}
        for _ in range(2):
            ok(client.post(f"{path}/slices/6/prompts", json={"point": point}))
        error(client.post(f"{path}/slices/6/prompts", json={"point": point}), 422, "too_many_points")
        error(client.post(f"{path}/slices/6/prompts", json={"box": box_of(key), "point": point}),
              422, "invalid_input")
        error(client.post(f"{path}/slices/6/prompts", json={}), 422, "invalid_input")
        error(client.post(f"{path}/slices/6/prompts", json={"box": {"x1": 1}}), 422, "invalid_request")
        error(client.post(f"{path}/slices/6/prompts", json={"point": point, "mask": "x"}), 422,
              "invalid_request")
        error(client.post(f"{path}/slices/6/prompts",
                          json={"box": {"x1": 0, "y1": 0, "x2": 5000, "y2": 5}}), 422, "invalid_prompt")
        error(client.post(f"{path}/slices/6/prompts", content=b"{not json",
                          headers={"content-type": "application/json"}), 422, "invalid_request")
        error(client.post(f"{path}/slices/6/prompts", content=b"[" * 70_000,
                          headers={"content-type": "application/json"}), 413, "too_large")
        error(client.post(f"{path}/export", json={"format": "stl"}), 422, "invalid_request")
        error(client.post(f"{path}/export", json={"format": "dicom-seg"}), 422, "invalid_input")
        error(client.post(f"{base}/nope/propagate"), 404, "volume_session_not_found")
        error(client.get(f"{base}/nope/slices/0/mask"), 404, "volume_session_not_found")
        other = upload(client, volume, "other.nii.gz")
        sid = path.rsplit("/", 1)[1]
        error(client.get(f"/v1/volumes/{other}/sessions/{sid}"), 404, "volume_session_not_found")
        error(client.post("/v1/volumes/nope/sessions", json={"target": "tube"}), 404,
              "volume_not_found")
        for body, status, code in [
                ({}, 422, "invalid_request"),
                ({"target": " "}, 422, "invalid_input"),
                ({"target": "x" * 501}, 422, "invalid_request"),
                ({"target": "tube", "backbone": "sam2"}, 422, "backbone_not_served"),
                ({"target": "tube", "propagation": "native"}, 422, "invalid_input"),
                ({"target": "tube", "propagation": "3d"}, 422, "invalid_request"),
                ({"target": "tube", "plane": "diagonal"}, 422, "invalid_request"),
                ({"target": "tube", "window": "bright"}, 422, "invalid_input"),
                ({"target": "tube", "device": "cuda:7"}, 422, "invalid_request")]:
            error(client.post(base, json=body), status, code)
        assert ok(client.get(path))["seeds"] == [6]  # the refused requests changed nothing
        start(client, vid, backbone="bright")


def test_sessions_are_bounded_and_deleted(client_for):
    volume, _ = tube(count=4)
    with client_for(max_volume_sessions=4, volume_sessions_per_client=4) as client:
        vid = upload(client, volume)
        paths = [start(client, vid) for _ in range(5)]
        error(client.get(paths[0]), 404, "volume_session_not_found")  # the least recently used
        ok(client.get(paths[1]))
        assert client.delete(paths[1]).status_code == 204
        error(client.delete(paths[1]), 404, "volume_session_not_found")
        assert len(client.app.state.msagent_volume_sessions) == 3


def test_with_an_api_key_every_route_needs_it(client_for):
    volume, labels = tube(count=4)
    with client_for(api_key="k3y") as client:
        client.headers["Authorization"] = "Bearer k3y"
        vid = upload(client, volume)
        path = start(client, vid)
        client.headers.pop("Authorization")
        key = box_of(display(labels, 2))
        for method, url, body in [
                ("post", f"/v1/volumes/{vid}/sessions", {"target": "tube"}), ("get", path, None),
                ("post", f"{path}/slices/2/prompts", {"box": key}),
                ("get", f"{path}/slices/2/mask", None), ("post", f"{path}/propagate", None),
                ("post", f"{path}/undo", None), ("post", f"{path}/export", {"format": "nifti"}),
                ("delete", path, None)]:
            kwargs = {} if body is None else {"json": body}
            error(getattr(client, method)(url, **kwargs), 401, "unauthorized")
            error(getattr(client, method)(url, headers={"Authorization": "Bearer wrong"}, **kwargs),
                  401, "unauthorized")
        client.headers["Authorization"] = "Bearer k3y"
        ok(client.post(f"{path}/slices/2/prompts", json={"box": key}))
        ok(client.post(f"{path}/propagate"))


def test_the_page_calls_the_volume_session_routes():
    script = (STATIC_DIR / "js" / "volume3d.js").read_text()
    for route in ["/sessions`", "/slices/${", "/prompts`", "/mask?format=rle", "/propagate`",
                  "/undo`", "/export`"]:
        assert route in script, route
    page = (STATIC_DIR / "index.html").read_text()
    for element in ["propagate", "undo3d", "mode-3d", "propagation"]:
        assert re.search(f'id="{element}"', page), element
    assert "volume3d.js" in (STATIC_DIR / "js" / "app.js").read_text()



@pytest.mark.slow
def test_the_page_propagates_shows_every_slice_and_undoes(tmp_path, chromium, sync_playwright):
    """The page in headless Chromium (skipped without Playwright or Chromium, failed instead
    under MSAGENT_REQUIRE_BROWSER=1, as tests/webapp/test_web_ui.py): 3-D on, a box on the key
    slice, Propagate, the slider shows the result of another slice, Undo, and the NIfTI
    download is the whole result."""
    from msagent.server.background import serve_in_thread

    volume, labels = tube()
    (tmp_path / "tube.nii.gz").write_bytes(nifti_bytes(volume))
    app = create_web_app(BrightBackbone(), ServerConfig(batch_window_ms=0))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update"]
    with serve_in_thread(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/ui/")
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#image-file", str(tmp_path / "tube.nii.gz"))
        page.wait_for_selector("#image-status[data-state='ready']")
        assert page.is_visible("#vol3d") and page.is_disabled("#propagate")
        page.locator("#window").select_option("custom")
        page.fill("#window-custom", WINDOW)
        page.locator("#window-custom").blur()
        page.wait_for_selector(f"#canvas[data-slice='axial:6:{WINDOW}']", state="attached")
        page.check("#mode-3d")
        page.wait_for_selector("body[data-mode='volume3d']")

        def xy(x, y):
            box = page.locator("#canvas").bounding_box()
            return box["x"] + (x + 0.5) * box["width"] / 40, box["y"] + (y + 0.5) * box["height"] / 48

        def area():
            return int(page.get_attribute("#canvas", "data-mask-area"))

        key = box_of(display(labels, 6))
        page.mouse.move(*xy(key["x1"], key["y1"]))
        page.mouse.down()
        page.mouse.move(*xy(key["x2"], key["y2"]), steps=6)
        page.mouse.up()
        page.wait_for_selector("#canvas[data-source3d='6:seed']", state="attached")
        assert area() == display(labels, 6).sum()
        page.click("#propagate")
        page.wait_for_selector("#vol-status[data-state='done']")
        page.locator("#slice").fill("1")
        page.wait_for_selector("#canvas[data-source3d='1:propagated']", state="attached")
        assert area() == display(labels, 1).sum() > 0
        with page.expect_download() as info:
            page.click("#dl-nifti")
        saved = tmp_path / info.value.suggested_filename
        info.value.save_as(saved)
        assert np.array_equal(np.asarray(nib.load(saved).dataobj), labels)
        page.click("#undo3d")  # back to the prompt only: slice 1 shows no target
        page.wait_for_selector("#canvas[data-source3d='1:none']", state="attached")
        assert area() == 0 and not errors, errors
        browser.close()


@pytest.mark.parametrize("name, fallback, encoded", [
    ("肝臓.nii.gz", "__-mask.nii.gz", "%E8%82%9D%E8%87%93-mask.nii.gz"),
    ("a\\b c;d.nii.gz", "a_b c;d-mask.nii.gz", "a%5Cb%20c%3Bd-mask.nii.gz"),
])
def test_both_exports_name_any_file_in_content_disposition(client, name, fallback, encoded):
    """A non-Latin-1 upload name made both exports 500 (UnicodeEncodeError in the header):
    RFC 6266 ASCII fallback plus RFC 5987 filename* (issue 26, item 6)."""
    from urllib.parse import unquote

    volume, labels = tube()
    vid = upload(client, volume, name=name)
    height, width = display(labels, 0).shape
    rle = {"size": [height, width], "counts": [height * width]}
    first = client.post(f"/v1/volumes/{vid}/export",
                        json={"slices": [{"index": 0, "mask": rle}], "format": "nifti"})
    path = start(client, vid)
    ok(client.post(f"{path}/slices/6/prompts", json={"box": box_of(display(labels, 6))}))
    second = client.post(f"{path}/export", json={"format": "nifti"})
    for response in (first, second):
        assert response.status_code == 200, response.text
        header = response.headers["content-disposition"]
        assert header == f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
        assert header.isascii()
        assert unquote(encoded) == name.replace(".nii.gz", "-mask.nii.gz")


def test_attachment_header_is_ascii_for_any_name():
    from msagent.server.services import attachment

    for name in ['q"uote\\back.json', "tab\tnew\nline.png", "\ud800lone.json", "", "é" * 300]:
        header = attachment(name)["Content-Disposition"]
        header.encode("latin-1")  # what Starlette does with a header
        assert header.isascii() and "\n" not in header and "\t" not in header
        fallback = header.split('filename="')[1].split('"; filename*=')[0]
        assert '"' not in fallback and "\\" not in fallback
    assert attachment('q"b.json')["Content-Disposition"] == \
        "attachment; filename=\"q_b.json\"; filename*=UTF-8''q%22b.json"
