"""Starting from the backbone's proposal on the server: a 2-D session from ``initial_mask=
proposal``, ``POST /v1/propose`` and the ``remote`` backbone's ``propose`` over it, with the
stand-in :class:`msagent.testing.ProposingBackbone` served (a "nothing" in the text matches
nothing) and :class:`~msagent.testing.BrightBackbone` as a backbone that cannot propose."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

import msagent
from msagent.backbones.remote import RemoteSegmenter
from msagent.errors import InvalidInput, SegmenterError
from msagent.io.wire import png_bytes
from msagent.server import ServerConfig, create_app
from msagent.server.background import serve_in_thread
from msagent.testing import BrightBackbone, ProposingBackbone, make_phantom
from msagent.types import decode_mask


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def served(segmenter, **config):
    return TestClient(create_app(segmenter, ServerConfig(batch_window_ms=0, **config)))


def upload(client, image) -> str:
    response = client.post("/v1/images", files={"file": ("i.png", png_bytes(image), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["image_id"]


def expected(image, text="tumour"):
    """The stand-in's own best candidate for ``text``, in process."""
    segmenter = ProposingBackbone()
    return segmenter.propose(segmenter.encode(image), text)[0]


def test_session_starts_from_the_proposal(phantom):
    image, _ = phantom
    segmenter = ProposingBackbone()
    with served(segmenter) as client:
        image_id = upload(client, image)
        response = client.post("/v1/sessions", data={"image_id": image_id, "text": " tumour ",
                                                     "initial_mask": "proposal"})
        assert response.status_code == 201, response.text
        info = response.json()
        assert info["has_mask"] and info["score"] == pytest.approx(0.9) and info["turns"] == 0
        assert info["proposal"] == {"target": "tumour", "source": "proposal:proposing",
                                    "matched": True, "score": pytest.approx(0.9), "candidates": 1,
                                    "note": "best of 1 candidate(s), score 0.900"}
        assert info["text"] is None  # the proposal's text only: this backbone decodes no text
        sid = info["session_id"]
        mask = decode_mask(client.get(f"/v1/sessions/{sid}/mask", params={"format": "rle"}).json())
        assert np.array_equal(mask, expected(image).mask)
        # the proposal is the session's floor, as an uploaded initial mask is
        assert client.post(f"/v1/sessions/{sid}/undo").status_code == 409
        box = {"x1": 60, "y1": 45, "x2": 180, "y2": 135}
        step = client.post(f"/v1/sessions/{sid}/box", json=box).json()
        assert step["session"]["turns"] == 1 and step["session"]["proposal"]["matched"]
        reset = client.post(f"/v1/sessions/{sid}/reset").json()["session"]
        assert reset["has_mask"] and reset["score"] == pytest.approx(0.9)
        metrics = client.get("/metrics").json()
        assert metrics["counters"]["proposals"] == 1 and metrics["propose"]["count"] == 1
    assert segmenter.proposals == 1 and segmenter.encodes == 1  # the proposal reused the encode


def test_a_concept_matching_nothing_starts_the_session_empty(phantom):
    with served(ProposingBackbone()) as client:
        response = client.post("/v1/sessions", data={"image_id": upload(client, phantom[0]),
                                                     "text": "nothing", "initial_mask": "proposal"})
        assert response.status_code == 201, response.text
        info = response.json()
        assert not info["has_mask"] and info["score"] is None
        assert info["proposal"]["matched"] is False and info["proposal"]["score"] is None
        assert info["proposal"]["note"] == ("no candidate matched 'nothing': the episode started "
                                            "without an initial mask")
        sid = info["session_id"]
        assert client.get(f"/v1/sessions/{sid}/mask").status_code == 409


@pytest.mark.parametrize("segmenter, form, words", [
    (BrightBackbone, {"text": "tumour"}, "backbone 'bright' cannot propose a mask from the target"),
    (ProposingBackbone, {}, "initial_mask=proposal needs the target in 'text'"),
    (ProposingBackbone, {"text": "   "}, "initial_mask=proposal needs the target in 'text'"),
    (ProposingBackbone, {"text": "x" * 201}, "at most 200 characters"),
    (ProposingBackbone, {"text": "liver\tcapsule"}, "printable text"),
    (ProposingBackbone, {"text": "tumour", "initial_mask": "auto"}, "or the word 'proposal'"),
])
def test_refusals_come_before_the_encode(phantom, segmenter, form, words):
    backbone = segmenter()
    with served(backbone) as client:
        data = {"image_id": upload(client, phantom[0]), "initial_mask": "proposal", **form}
        response = client.post("/v1/sessions", data=data)
        assert response.status_code == 422, response.text
        assert words in response.json()["detail"]
        assert len(client.get("/v1/sessions").json()["sessions"]) == 0
    assert backbone.encodes == 0
    if segmenter is BrightBackbone:  # the remedy names the backbones that can
        assert "installed backbones that can:" in response.json()["detail"]


def test_an_uploaded_mask_still_works_and_carries_no_proposal(phantom):
    image, gt = phantom
    with served(ProposingBackbone()) as client:
        response = client.post("/v1/sessions", data={"image_id": upload(client, image)},
                               files={"initial_mask": ("m.png", png_bytes(gt), "image/png")})
        assert response.status_code == 201, response.text
        assert response.json()["has_mask"] and response.json()["proposal"] is None


def test_health_and_the_propose_route(phantom):
    image, _ = phantom
    with served(ProposingBackbone()) as client:
        health = client.get("/health").json()
        assert health["can_propose"] is True and health["max_candidates"] == 16
        image_id = upload(client, image)
        body = client.post("/v1/propose", json={"image_id": image_id, "text": "tumour",
                                                "logits_dtype": "float32"}).json()
        assert body["width"] == image.shape[1] and len(body["candidates"]) == 1
        candidate, reference = body["candidates"][0], expected(image)
        assert np.array_equal(decode_mask(candidate["mask"]), reference.mask)
        assert candidate["score"] == pytest.approx(0.9)
        nothing = client.post("/v1/propose", json={"image_id": image_id, "text": "nothing"})
        assert nothing.status_code == 200 and nothing.json()["candidates"] == []
        for bad, words in [({"max_candidates": 17}, "max_candidates"),
                           ({"max_candidates": 0}, "max_candidates"),
                           ({"text": ""}, "text"), ({"text": "x" * 201}, "text"),
                           ({"text": "a\nb"}, "printable"), ({"device": "cuda:0"}, "device")]:
            response = client.post("/v1/propose", json={"image_id": image_id, "text": "tumour", **bad})
            assert response.status_code == 422 and words in response.json()["detail"], (bad, response.text)
        missing = client.post("/v1/propose", json={"image_id": "0" * 64, "text": "tumour"})
        assert missing.status_code == 404
    with served(BrightBackbone()) as client:
        assert client.get("/health").json()["can_propose"] is False
        response = client.post("/v1/propose", json={"image_id": upload(client, image), "text": "x"})
        assert response.status_code == 422 and "cannot propose" in response.json()["detail"]


def test_remote_propose_round_trip(phantom):
    image, gt = phantom
    served_backbone = ProposingBackbone()
    app = create_app(served_backbone, ServerConfig(batch_window_ms=0))
    with serve_in_thread(app) as url:
        remote = RemoteSegmenter(url, logits_dtype="float32")
        try:
            assert remote.can_propose and not remote.accepts_text
            embedding = remote.encode(image)
            got = remote.propose(embedding, "tumour", max_candidates=100)  # the server's limit
            reference = expected(image)
            assert len(got) == 1 and np.array_equal(got[0].mask, reference.mask)
            assert np.array_equal(got[0].low_res_logits, reference.low_res_logits)
            assert got[0].score == pytest.approx(0.9)
            assert remote.propose(embedding, "nothing") == []
            app.state.msagent.engine.images._items.clear()  # as after a restart: upload again
            assert np.array_equal(remote.propose(embedding, "tumour")[0].mask, reference.mask)
            assert app.state.msagent.metrics.counters["images_uploaded"] == 2
            with pytest.raises(SegmenterError, match="non-empty text"):
                remote.propose(embedding, "  ")  # the SDK's checks, before any request
            # an episode from the served proposal: turn 0 recorded with its source and score
            result = msagent.segment(image, "tumour", backbone=remote, policy="expert",
                                     ground_truth=gt, initial_mask="proposal")
            start = result.trajectory.initial
            assert start.source == "proposal:remote" and start.score == pytest.approx(0.9)
            assert np.array_equal(start.mask, reference.mask)
        finally:
            remote.close()
    assert served_backbone.encodes == 1  # the remote's encode and proposals share one


def test_remote_mirrors_a_server_that_cannot_propose(phantom):
    with serve_in_thread(create_app(BrightBackbone(), ServerConfig(batch_window_ms=0))) as url:
        remote = RemoteSegmenter(url)
        try:
            assert remote.can_propose is False
            with pytest.raises(InvalidInput, match="backbone 'remote' cannot propose"):
                msagent.segment(phantom[0], "tumour", backbone=remote, policy="expert",
                                ground_truth=phantom[1], initial_mask="proposal")
        finally:
            remote.close()
