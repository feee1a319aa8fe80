"""The web page's agent run from the backbone's proposal (``initial_mask=proposal``): the
stream's ``start`` line carries turn 0 (mask, source, score) or says nothing matched, the
run's trajectory records it, and the listing tells the page whether to offer it. The served
stand-in :class:`msagent.testing.ProposingBackbone` matches nothing for a "nothing" text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from msagent.io.wire import png_bytes
from msagent.server import ServerConfig
from msagent.testing import BrightBackbone, ProposingBackbone, make_phantom
from msagent.types import Trajectory, decode_mask
from msagent.webapp import create_web_app


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def page(segmenter) -> TestClient:
    return TestClient(create_web_app(segmenter, ServerConfig(batch_window_ms=0)))


def upload(client, image) -> str:
    return client.post("/v1/images", files={"file": ("i.png", png_bytes(image))}).json()["image_id"]


def run(client, gt, **form) -> list[dict]:
    files = {"ground_truth": ("gt.png", png_bytes(gt), "image/png")}
    with client.stream("POST", "/v1/agent/run", data=form, files=files) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line) for line in response.iter_lines() if line]


def test_the_listing_says_whether_the_served_backbone_can_propose():
    with page(ProposingBackbone()) as client:
        body = client.get("/v1/plugins").json()
        assert body["can_propose"] is True and client.get("/health").json()["can_propose"] is True
        listed = {b["name"]: b["can_propose"] for b in body["backbones"]}
        assert listed["remote"] is None  # decided per server, once loaded
    with page(BrightBackbone()) as client:
        assert client.get("/v1/plugins").json()["can_propose"] is False


def test_a_run_starts_from_the_proposal(phantom):
    image, gt = phantom
    segmenter = ProposingBackbone()
    with page(segmenter) as client:
        lines = run(client, gt, image_id=upload(client, image), target="tumour", policy="expert",
                    max_turns="3", initial_mask="proposal")
        start, done = lines[0], lines[-1]
        assert start["type"] == "start" and done["type"] == "done"
        initial = start["initial"]
        assert initial["source"] == "proposal:proposing" and initial["score"] == pytest.approx(0.9)
        proposed = segmenter.propose(segmenter.encode(image), "tumour")[0].mask
        assert np.array_equal(decode_mask(initial["mask"]), proposed)
        assert initial["dice"] < done["dice"]  # the expert refines the eroded proposal
        assert start["proposal"] == {"source": "proposal:proposing", "matched": True,
                                     "score": pytest.approx(0.9), "candidates": 1,
                                     "note": "best of 1 candidate(s), score 0.900"}
        trajectory = Trajectory.from_dict(client.get(f"/v1/agent/runs/{start['run_id']}").json())
        assert trajectory.initial.source == "proposal:proposing"
        assert trajectory.initial.score == pytest.approx(0.9)
        assert np.array_equal(trajectory.initial.mask, proposed)
        assert trajectory.meta["proposal"] == "best of 1 candidate(s), score 0.900"
        # taking over after turn 0 keeps where turn 0 came from
        seeded = client.post(f"/v1/agent/runs/{start['run_id']}/session", json={"steps": 0})
        assert seeded.status_code == 201 and seeded.json()["session"]["has_mask"]
        sid = seeded.json()["session"]["session_id"]
        taken = client.get(f"/v1/agent/sessions/{sid}/trajectory").json()
        assert taken["initial"]["source"] == "proposal:proposing"
        assert taken["initial"]["score"] == pytest.approx(0.9)
    assert segmenter.proposals == 2 and segmenter.encodes == 1  # the run's one, and ours above


def test_a_run_whose_concept_matches_nothing_starts_empty(phantom):
    image, gt = phantom
    with page(ProposingBackbone()) as client:
        lines = run(client, gt, image_id=upload(client, image), target="nothing at all",
                    policy="expert", max_turns="2", initial_mask="proposal")
        start = lines[0]
        assert start["initial"] is None and start["proposal"]["matched"] is False
        assert start["proposal"]["note"].startswith("no candidate matched 'nothing at all'")
        assert lines[-1]["type"] == "done" and lines[-1]["turns"] >= 1  # the expert starts anew
        meta = client.get(f"/v1/agent/runs/{start['run_id']}").json()["meta"]
        assert meta["proposal"].startswith("no candidate matched")


def test_a_session_from_a_proposal_exports_it_as_turn_0(phantom):
    with page(ProposingBackbone()) as client:
        info = client.post("/v1/sessions", data={"image_id": upload(client, phantom[0]),
                                                 "text": "tumour", "initial_mask": "proposal"}).json()
        body = client.get(f"/v1/agent/sessions/{info['session_id']}/trajectory").json()
        assert body["target"] == "tumour"  # the proposal's text, when no target is given
        assert body["initial"]["source"] == "proposal:proposing" and body["steps"] == []


@pytest.mark.parametrize("segmenter, target, words", [
    (BrightBackbone, "tumour", "backbone 'bright' cannot propose"),
    (ProposingBackbone, "x" * 201, "at most 200 characters"),
])
def test_refusals_before_the_stream(phantom, segmenter, target, words):
    image, gt = phantom
    backbone = segmenter()
    with page(backbone) as client:
        response = client.post("/v1/agent/run", data={
            "image_id": upload(client, image), "target": target, "policy": "expert",
            "initial_mask": "proposal"}, files={"ground_truth": ("gt.png", png_bytes(gt))})
        assert response.status_code == 422 and words in response.json()["detail"]
    assert backbone.encodes == 0


@pytest.mark.slow
def test_the_page_offers_and_shows_the_proposal(tmp_path, phantom, chromium, sync_playwright):
    """Headless Chromium (skipped without Playwright or Chromium, failed instead under
    MSAGENT_REQUIRE_BROWSER=1): the option shows only for a backbone that can propose; a run
    from it shows turn 0 with its source and score, then the expert's turns."""
    from PIL import Image

    from msagent.server.background import serve_in_thread

    image, gt = phantom
    Image.fromarray(image).save(tmp_path / "p.png")
    Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / "gt.png")
    segmenter = ProposingBackbone()
    proposed = segmenter.propose(segmenter.encode(image), "tumour")[0].mask
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update"]
    with serve_in_thread(create_web_app(segmenter, ServerConfig(batch_window_ms=0))) as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/ui/")
        page.wait_for_selector("body[data-ready='1']")
        assert page.is_visible("#proposal-label")
        page.set_input_files("#image-file", str(tmp_path / "p.png"))
        page.wait_for_selector("#image-status[data-state='ready']")
        page.fill("#target", "tumour")
        page.select_option("#policy", "expert")
        page.set_input_files("#gt-file", str(tmp_path / "gt.png"))
        page.check("#start-proposal")
        assert page.is_disabled("#initial-file")  # the proposal replaces an uploaded mask
        page.click("#run")
        page.wait_for_selector("#run-status[data-state='done']")
        page.locator("#turn-slider").fill("0")
        page.wait_for_selector("#turn-label[data-view='0']", state="attached")
        details = page.text_content("#turn-details")
        assert "proposal:proposing" in details and "0.900" in details
        assert int(page.get_attribute("#canvas", "data-mask-area")) == int(proposed.sum())
        assert not errors, errors
        browser.close()
