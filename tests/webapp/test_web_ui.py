"""The web page (``/ui``) end to end: headless Chromium driven by Playwright over loopback,
with the real LiteMedSAM weights and the expert/oracle-box policies.

Needs the system's Chromium (Debian: ``apt-get install -y chromium``; another binary with
``$MSAGENT_CHROMIUM``) and ``pip install playwright`` (no ``playwright install``: no browser
download); without them the browser tests skip, or fail under ``MSAGENT_REQUIRE_BROWSER=1``
(tox, CI). Screenshots go to ``$MSAGENT_TEST_ARTIFACTS`` (default: a pytest temporary folder).
"""

from __future__ import annotations

import copy
import io
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import msagent
from msagent import io as msio
from msagent import protocol
from msagent.errors import WeightsNotFound
from msagent.plugins import Registry, get_registry, make_plugin_manager, set_registry
from msagent.server import ServerConfig
from msagent.server.background import serve_in_thread
from msagent.testing import make_phantom
from msagent.types import Trajectory, decode_mask, encode_mask
from msagent.webapp import create_web_app

pytestmark = pytest.mark.slow  # headless Chromium over loopback with the real LiteMedSAM weights

API_KEY = "web-ui-test-key"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


class SlowClicker(msagent.Policy):
    """Clicks the image centre again and again, slowly (to stop it mid-run)."""

    def act(self, episode):
        time.sleep(0.3)
        height, width = episode.image_size
        point = msagent.Point(width // 2, height // 2)
        return msagent.Reply(protocol.point_action(point, episode.image_size, "Once more.").raw_text)


class TestPolicies:
    """A policy whose checkpoint is absent (the page reports it) and a slow one."""

    @msagent.hookimpl
    def msagent_register_policies(register):
        def factory(**options):
            raise WeightsNotFound("the checkpoint of 'needs-weights' is not on this machine; "
                                  "download it once and pass model=/path")

        register("needs-weights", factory, "A policy whose weights are missing")
        register("slow-clicker", SlowClicker, "Clicks slowly")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("MSAGENT_TEST_ARTIFACTS")
    path = Path(folder) / "web-ui" if folder else tmp_path_factory.mktemp("web-ui")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def server(litemedsam):
    previous = get_registry()
    pm = make_plugin_manager()
    pm.register(TestPolicies, name="test-policies")
    set_registry(Registry(pm))
    app = create_web_app(litemedsam, ServerConfig(api_key=API_KEY, batch_window_ms=0))
    try:
        with serve_in_thread(app) as url:
            yield url
    finally:
        set_registry(previous)


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server, timeout=120, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield c


@pytest.fixture(scope="module")
def browser(tmp_path_factory, chromium, sync_playwright):
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium,
            headless=True, args=FLAGS, viewport={"width": 1400, "height": 900}, accept_downloads=True)
        yield context
        context.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: print(f"console {message.type}: {message.text}"))
    page.goto(server + "/ui/")
    page.wait_for_selector("body[data-ready='1']")
    yield page
    page.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def enter_key(page) -> None:
    page.fill("#api-key", API_KEY)
    page.locator("#api-key").blur()  # "change" fires: the page stores the key and reloads
    page.wait_for_selector("body[data-plugins='loaded']", state="attached")


def error_text(page) -> str:
    page.wait_for_selector("#error:not([hidden])")
    return page.text_content("#error-text")


def canvas_xy(page, x: int, y: int) -> tuple[float, float]:
    """Viewport coordinates of the centre of image pixel (x, y)."""
    box = page.locator("#canvas").bounding_box()
    width, height = (int(page.get_attribute("#canvas", f"data-{k}")) for k in ("width", "height"))
    return box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height


def canvas_rgb(page, x: int, y: int) -> list[int]:
    """The drawn colour at the centre of image pixel (x, y)."""
    return page.evaluate("""([x, y]) => {
        const c = document.querySelector('#canvas');
        const sx = c.width / Number(c.dataset.width), sy = c.height / Number(c.dataset.height);
        return Array.from(c.getContext('2d').getImageData(
            Math.floor((x + 0.5) * sx), Math.floor((y + 0.5) * sy), 1, 1).data.slice(0, 3));
    }""", [x, y])


def mask_area(page) -> int:
    return int(page.get_attribute("#canvas", "data-mask-area"))


def png_mask(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))) > 0


def interior_pixel(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of ``mask`` farthest from its border (x, y)."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return int(x), int(y)


def mask_after(trajectory: dict, steps: int) -> np.ndarray | None:
    executed = [s for s in trajectory["steps"][:steps] if s["mask"] is not None]
    return decode_mask(executed[-1]["mask"]) if executed else None


def download(page, selector: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.click(selector)
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return path


def session_info(api, page) -> dict:
    return api.get(f"/v1/sessions/{page.get_attribute('#canvas', 'data-session-id')}").json()


def wait_points(page, count: int) -> None:
    page.wait_for_function(f"document.querySelector('#canvas').dataset.points === '{count}'")


def test_run_turns_takeover_and_downloads(page, api, mni_slice, artifacts, tmp_path):
    image, gt = mni_slice
    rgb = msio.to_rgb_uint8(image)
    Image.fromarray(rgb).save(tmp_path / "mni.png")
    Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / "mni-gt.png")

    assert "API key" in error_text(page)  # the server has a key and the page has none yet
    enter_key(page)
    assert page.is_hidden("#error")
    assert page.input_value("#backbone") == "litemedsam"

    page.set_input_files("#image-file", str(tmp_path / "mni.png"))
    page.wait_for_selector("#image-status[data-state='ready']")
    assert page.get_attribute("#canvas", "data-width") == str(rgb.shape[1])
    page.click("#run")
    assert "target description" in error_text(page)
    page.fill("#target", "brain")
    page.select_option("#policy", "expert")
    page.click("#run")
    assert "ground-truth mask" in error_text(page)
    page.set_input_files("#gt-file", str(tmp_path / "mni-gt.png"))
    page.fill("#max-turns", "3")
    page.click("#run")
    page.wait_for_selector("#run-status[data-state='done']")
    page.screenshot(path=str(artifacts / "run-done.png"))

    run_id = page.get_attribute("#canvas", "data-run-id")
    trajectory = api.get(f"/v1/agent/runs/{run_id}").json()
    steps = trajectory["steps"]
    assert trajectory["meta"]["policy"] == "expert" and 1 <= len(steps) <= 4
    assert page.locator("#turn-list li").count() == len(steps)
    assert page.text_content("#turn-label") == f"Turn {len(steps)} of {len(steps)}"
    final = mask_after(trajectory, len(steps))
    assert mask_area(page) == int(final.sum()) > 0
    assert page.text_content("#rationale") == steps[-1]["raw_text"].split("<tool_call>")[0].strip()

    x, y = interior_pixel(final)  # the overlay is drawn: the pixel changes with the mask toggle
    with_mask = canvas_rgb(page, x, y)
    page.uncheck("#show-mask")
    without = canvas_rgb(page, x, y)
    page.check("#show-mask")
    assert with_mask[2] > with_mask[0] + 40 and with_mask != without

    view = len(steps) - 1  # step back: the previous turn's mask and rationale
    page.click("#prev")
    assert page.text_content("#turn-label") == f"Turn {view} of {len(steps)}"
    before = mask_after(trajectory, view)
    assert mask_area(page) == int(before.sum())
    assert page.text_content("#rationale") == steps[view - 1]["raw_text"].split("<tool_call>")[0].strip()
    page.screenshot(path=str(artifacts / "step-back.png"))

    # take over at this turn with a positive click where the brain is still missed
    x, y = interior_pixel(gt & ~before)
    page.mouse.click(*canvas_xy(page, x, y))
    page.wait_for_selector("body[data-mode='editing']")
    seeded_points = sum(1 for s in steps[:view] if s["action"] and s["action"]["kind"] == "add_point")
    wait_points(page, seeded_points + 1)
    info = session_info(api, page)
    assert {"x": x, "y": y, "label": 1} in info["points"]
    server_mask = png_mask(api.get(f"/v1/sessions/{info['session_id']}/mask").content)
    assert mask_area(page) == int(server_mask.sum()) and not np.array_equal(server_mask, before)

    # a negative click (shift), a box drag, then undo the box
    nx, ny = interior_pixel(server_mask & ~gt) if (server_mask & ~gt).any() else (2, 2)
    page.keyboard.down("Shift")
    page.mouse.click(*canvas_xy(page, nx, ny))
    page.keyboard.up("Shift")
    wait_points(page, seeded_points + 2)
    assert {"x": nx, "y": ny, "label": 0} in session_info(api, page)["points"]
    after_clicks = mask_area(page)
    ys, xs = np.nonzero(gt)
    start, end = canvas_xy(page, int(xs.min()), int(ys.min())), canvas_xy(page, int(xs.max()), int(ys.max()))
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#edit-status').textContent.includes("
                           f"'{view + 3} prompt state')")
    assert session_info(api, page)["box"] == {"x1": int(xs.min()), "y1": int(ys.min()),
                                              "x2": int(xs.max()), "y2": int(ys.max())}
    page.screenshot(path=str(artifacts / "edited.png"))
    page.click("#undo")
    page.wait_for_function("document.querySelector('#edit-status').textContent.includes("
                           f"'{view + 2} prompt state')")
    assert mask_area(page) == after_clicks

    # downloads: the mask PNG equals the server's; the trajectory has the run's and our steps
    saved = download(page, "#dl-png", tmp_path)
    sid = page.get_attribute("#canvas", "data-session-id")
    assert np.array_equal(png_mask(saved.read_bytes()), png_mask(api.get(f"/v1/sessions/{sid}/mask").content))
    edited = Trajectory.from_json(download(page, "#dl-traj", tmp_path).read_text())
    replayed = [s for s in steps[:view] if s["mask"] is not None]
    assert [s.usage["source"] for s in edited.steps] == ["agent"] * len(replayed) + ["human", "human"]
    assert np.array_equal(edited.steps[len(replayed) - 1].mask, before)
    assert edited.meta["run_id"] == run_id and edited.steps[-1].iou is not None


def test_errors_for_bad_files_and_missing_weights(page, tmp_path):
    enter_key(page)
    page.set_input_files("#image-file", {"name": "broken.png", "mimeType": "image/png",
                                         "buffer": b"this is not a PNG"})
    assert "not a readable image" in error_text(page)
    assert page.get_attribute("#image-status", "data-state") == "error"
    image, _ = make_phantom(64, 80, center=(32, 40), radii=(16, 24))
    Image.fromarray(image).save(tmp_path / "phantom.png")
    page.set_input_files("#image-file", str(tmp_path / "phantom.png"))
    page.wait_for_selector("#image-status[data-state='ready']")
    assert page.is_hidden("#error")
    page.fill("#target", "ellipse")
    page.select_option("#policy", "needs-weights")
    page.click("#run")
    assert "not on this machine" in error_text(page)
    assert page.get_attribute("#error", "data-code") == "weights_not_found"
    page.select_option("#policy", "oracle-box")
    page.set_input_files("#gt-file", {"name": "gt.png", "mimeType": "image/png",
                                      "buffer": _png(np.zeros((10, 10), np.uint8))})
    page.click("#run")
    assert "size 10×10" in error_text(page)  # the ground truth must match the image


def test_stop_a_run_then_take_over(page, tmp_path):
    enter_key(page)
    image, _ = make_phantom(64, 80, center=(32, 40), radii=(16, 24))
    Image.fromarray(image).save(tmp_path / "phantom.png")
    page.set_input_files("#image-file", str(tmp_path / "phantom.png"))
    page.wait_for_selector("#image-status[data-state='ready']")
    page.fill("#target", "ellipse")
    page.select_option("#policy", "slow-clicker")
    page.fill("#max-turns", "20")
    page.click("#run")
    page.wait_for_selector("#turn-list li >> nth=1")
    assert page.is_disabled("#takeover") and page.is_visible("#stop")
    page.click("#stop")
    page.wait_for_selector("#run-status[data-state='stopped']")
    turns = page.locator("#turn-list li").count()
    assert 2 <= turns < 20 and page.is_hidden("#stop")
    page.click("#takeover")  # from the last shown turn: all its clicks replayed
    page.wait_for_selector("body[data-mode='editing']")
    assert page.get_attribute("#canvas", "data-points") == str(turns)
    assert page.is_hidden("#error")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_nifti_volume_slices_window_run_and_export(page, api, artifacts, tmp_path):
    nib = pytest.importorskip("nibabel")
    shape, affine = (56, 48, 6), np.diag([1.5, 1.2, 3.0, 1.0])
    affine[:3, 3] = [-40, -30, 10]
    ii, jj, kk = np.mgrid[:shape[0], :shape[1], :shape[2]]
    labels = (((ii - 28) / 16) ** 2 + ((jj - 22) / 12) ** 2 + ((kk - 3) / 4) ** 2 <= 1).astype(np.uint8)
    rng = np.random.default_rng(0)
    hu = np.where(labels, 80.0, -120.0) + rng.normal(0, 15, shape)
    nib.save(nib.Nifti1Image(hu.astype(np.float32), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "ct-labels.nii.gz")
    volume = msio.read_volume(tmp_path / "ct.nii.gz")

    enter_key(page)
    page.set_input_files("#image-file", str(tmp_path / "ct.nii.gz"))
    page.wait_for_selector("#image-status[data-state='ready']")
    assert page.is_visible("#volume-controls")
    assert page.get_attribute("#slice", "max") == str(volume.n_slices("axial") - 1)
    page.locator("#slice").fill("2")
    page.wait_for_function("document.querySelector('#slice-label').textContent.startsWith('3 /')")
    page.select_option("#window", "abdomen")
    page.wait_for_selector("#canvas[data-slice='axial:2:abdomen']", state="attached")
    page.fill("#target", "kidney")
    page.select_option("#policy", "oracle-box")
    page.set_input_files("#gt-file", str(tmp_path / "ct-labels.nii.gz"))
    page.click("#run")
    page.wait_for_selector("#run-status[data-state='done']")
    page.screenshot(path=str(artifacts / "volume-run.png"))

    image_id = page.get_attribute("#canvas", "data-image-id")  # the slice the backbone saw
    shown = np.asarray(Image.open(io.BytesIO(api.get(f"/v1/images/{image_id}/png").content)))
    assert np.array_equal(shown[:, :, 0], msio.apply_window(volume.slice(2), 400, 40))
    run_id = page.get_attribute("#canvas", "data-run-id")
    final = decode_mask(api.get(f"/v1/agent/runs/{run_id}/mask", params={"format": "rle"}).json())
    assert msagent.metrics.iou(final, msio.Volume(labels, affine).slice(2) > 0) > 0.5

    saved = download(page, "#dl-nifti", tmp_path)
    assert saved.name.endswith(".nii.gz")
    mask = nib.load(saved)
    assert mask.shape == shape and np.allclose(mask.affine, affine)
    data = np.asarray(mask.dataobj)
    assert np.array_equal(msio.Volume(data, affine).slice(2), final.astype(np.uint8))
    assert data.sum() == final.sum()


def dicom_series(folder: Path, slices: int = 3) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = copy.deepcopy(source)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) + (2.5 * k if i == 2 else 0)
                                   for i, v in enumerate(source.ImagePositionPatient)]
        ds.save_as(folder / f"img{k:03d}.dcm")


def test_dicom_series_edit_and_dicom_seg(page, api, tmp_path):
    pytest.importorskip("highdicom")
    import pydicom

    dicom_series(tmp_path / "ct")
    files = sorted(str(p) for p in (tmp_path / "ct").iterdir())
    enter_key(page)
    page.set_input_files("#image-file", files)
    page.wait_for_selector("#image-status[data-state='ready']")
    assert page.is_visible("#volume-controls")
    assert page.is_visible("#dl-seg") and page.get_attribute("#slice", "max") == "2"
    page.mouse.move(*canvas_xy(page, 40, 40))  # edit by hand: a box
    page.mouse.down()
    page.mouse.move(*canvas_xy(page, 90, 90), steps=5)
    page.mouse.up()
    page.wait_for_selector("body[data-mode='editing']")
    page.wait_for_function("document.querySelector('#canvas').dataset.box === '1'")
    sid = page.get_attribute("#canvas", "data-session-id")
    mask = png_mask(api.get(f"/v1/sessions/{sid}/mask").content)
    saved = download(page, "#dl-seg", tmp_path)
    seg = pydicom.dcmread(saved)
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "target"
    source = pydicom.dcmread(files[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    frames = seg.pixel_array.reshape(-1, *mask.shape).astype(bool)
    assert frames.sum() == mask.sum() > 0

    # through the API: a mask code of the wrong size is refused with a clear message
    vols = api.post("/v1/volumes", files=[("files", (Path(f).name, Path(f).read_bytes())) for f in files])
    assert vols.status_code == 201 and vols.json()["kind"] == "dicom"
    bad = api.post(f"/v1/volumes/{vols.json()['volume_id']}/export",
                   json={"slices": [{"index": 0, "mask": encode_mask(np.zeros((5, 5), bool))}],
                         "format": "dicom-seg"})
    assert bad.status_code == 422 and "size [5, 5]" in bad.json()["detail"]
