"""The ``remote`` backbone against a loopback server over the real LiteMedSAM weights."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest

import msagent
from msagent.backbones.remote import RemoteImage, RemoteSegmenter
from msagent.errors import SegmenterError
from msagent.server import ServerConfig, create_app
from msagent.server.background import serve_in_thread
from msagent.testing import make_phantom
from msagent.types import BBox, Point, Prompts

pytestmark = pytest.mark.slow  # the remote backbone over loopback with the real LiteMedSAM weights

BOX = '<tool_call>{"name": "add_bbox", "arguments": {"bbox_2d": [250, 250, 800, 800]}}</tool_call>'
CLICKS = [f'<tool_call>{{"name": "add_point", "arguments": {{"point_2d": [{x}, {y}], '
          f'"point_type": "{kind}"}}}}</tool_call>'
          for x, y, kind in ((530, 560, "negative"), (320, 560, "positive"), (700, 400, "positive"))]
STOP = '<tool_call>{"name": "stop_action", "arguments": {}}</tool_call>'


class Scripted(msagent.Policy):
    def __init__(self, replies):
        self.replies = replies

    def act(self, episode):
        return msagent.Reply(self.replies[len(episode.steps)])


@pytest.fixture(scope="module")
def server(litemedsam):
    app = create_app(litemedsam, ServerConfig(api_key="remote-key"))
    with serve_in_thread(app) as url:
        yield url, app.state.msagent


@pytest.fixture
def remote(server, monkeypatch):
    monkeypatch.setenv("MSAGENT_REMOTE_URL", server[0])
    monkeypatch.setenv("MSAGENT_REMOTE_API_KEY", "remote-key")
    segmenter = msagent.load_backbone("remote")
    yield segmenter
    segmenter.close()


def same_trajectory(a, b, score_tol=0.0):
    assert [s.raw_text for s in a.steps] == [s.raw_text for s in b.steps]
    assert a.stop_reason == b.stop_reason
    for x, y in zip(a.steps, b.steps):
        assert (x.mask is None) == (y.mask is None)
        if x.mask is not None:
            assert np.array_equal(x.mask, y.mask)
            assert x.score == pytest.approx(y.score, abs=score_tol)
            assert x.iou == y.iou


def test_registered_and_configured_from_the_environment(remote, server):
    assert isinstance(remote, RemoteSegmenter) and remote.name == "remote"
    assert remote.url == server[0] and remote.backbone == "litemedsam"
    assert remote.multimask_default is False  # the served backbone's default


@pytest.mark.parametrize("logits_dtype, score_tol", [("float32", 0.0), ("float16", 1e-4)])
@pytest.mark.parametrize("prompt_mode", ["accumulate", "latest"])
def test_agent_trajectory_equals_in_process(server, litemedsam, logits_dtype, score_tol, prompt_mode):
    remote = RemoteSegmenter(server[0], api_key="remote-key", logits_dtype=logits_dtype)
    image, gt = make_phantom()
    replies = [BOX, *CLICKS, STOP]
    local = msagent.Agent(Scripted(replies), litemedsam, prompt_mode=prompt_mode).run(image, "x", gt)
    served = msagent.Agent(Scripted(replies), remote, prompt_mode=prompt_mode).run(image, "x", gt)
    assert served.turns == 4
    same_trajectory(local, served, score_tol)
    assert served.meta["backbone"] == "remote" and served.meta["multimask"] is False


def test_expert_episode_equals_in_process(remote, litemedsam):
    image, gt = make_phantom()
    policy = msagent.load_policy("expert", target_iou=0.99, candidates=2)
    local = msagent.Agent(policy, litemedsam, max_turns=3).run(image, "ellipse", gt)
    served = msagent.Agent(policy, remote, max_turns=3).run(image, "ellipse", gt)
    same_trajectory(local, served, 1e-4)


def test_encode_uploads_once_and_decode_matches(remote, server, litemedsam):
    image = make_phantom()[0]
    embedding = remote.encode(image)
    assert isinstance(embedding.features, RemoteImage)
    assert embedding.key == embedding.features.image_id == msagent.backbones.segmenter.image_key(image)
    assert remote.encode(image.copy()) is embedding  # the client-side cache
    uploads = server[1].metrics.counters["images_uploaded"]
    fresh = RemoteSegmenter(remote.url, api_key="remote-key")  # another client: no new upload
    fresh.encode(image)
    assert server[1].metrics.counters["images_uploaded"] == uploads
    prompts = [Prompts(box=BBox(60, 45, 180, 135)), Prompts(points=(Point(120, 90),))]
    local = litemedsam.decode_batch(litemedsam.encode(image), prompts, multimask=False)
    served = remote.decode_batch(embedding, prompts)
    for a, b in zip(local, served):
        assert np.array_equal(a.mask, b.mask) and a.score == pytest.approx(b.score, abs=1e-6)


def test_async_api_matches_sync(remote):
    image = make_phantom()[0]
    prompts = Prompts(box=BBox(60, 45, 180, 135))

    async def run():
        embeddings = await asyncio.gather(*[remote.aencode(image) for _ in range(4)])
        first = await remote.adecode(embeddings[0], prompts)
        second = await remote.adecode(embeddings[0], prompts.add(Point(120, 90, False)),
                                      first.low_res_logits)
        batch = await remote.adecode_batch(embeddings[0], [prompts, prompts])
        await remote.aclose()
        return embeddings, first, second, batch

    embeddings, first, second, batch = asyncio.run(run())
    assert len({e.key for e in embeddings}) == 1
    sync_first = remote.decode(remote.encode(image), prompts)
    sync_second = remote.decode(remote.encode(image), prompts.add(Point(120, 90, False)),
                                sync_first.low_res_logits)
    assert np.array_equal(first.mask, sync_first.mask)
    assert np.array_equal(second.mask, sync_second.mask)
    assert all(np.array_equal(p.mask, first.mask) for p in batch)


def test_survives_a_server_that_forgot_the_image(remote, server):
    image = make_phantom()[0]
    embedding = remote.encode(image)
    ctx = server[1]
    uploads = ctx.metrics.counters["images_uploaded"]
    ctx.engine.images._items.clear()  # as after a restart (the embedding cache may keep it)
    prediction = remote.decode(embedding, Prompts(box=BBox(60, 45, 180, 135)))
    assert prediction.mask.any()

    async def again():
        ctx.engine.images._items.clear()
        return await remote.adecode(embedding, Prompts(box=BBox(60, 45, 180, 135)))

    assert np.array_equal(asyncio.run(again()).mask, prediction.mask)
    assert ctx.metrics.counters["images_uploaded"] == uploads + 2


def test_errors_say_what_to_do(server, monkeypatch):
    monkeypatch.delenv("MSAGENT_REMOTE_URL", raising=False)
    with pytest.raises(SegmenterError, match="MSAGENT_REMOTE_URL"):
        msagent.load_backbone("remote")
    with pytest.raises(SegmenterError, match="API key"):
        RemoteSegmenter(server[0], api_key="wrong").encode(make_phantom()[0])
    with pytest.raises(SegmenterError, match="cannot reach the msagent server"):
        RemoteSegmenter("http://127.0.0.1:9", retries=0).encode(make_phantom()[0])
    remote = RemoteSegmenter(server[0], api_key="remote-key")
    embedding = remote.encode(make_phantom()[0])
    with pytest.raises(SegmenterError, match="outside"):
        remote.decode(embedding, Prompts(box=BBox(0, 0, 500, 10)))
    with pytest.raises(SegmenterError, match="another backbone"):
        remote.decode(msagent.Embedding(object(), (160, 224), "k"), Prompts(box=BBox(0, 0, 5, 5)))


def test_pickles_for_process_pools(remote):
    image = make_phantom()[0]
    clone = pickle.loads(pickle.dumps(remote))
    assert clone.url == remote.url and clone.cache_info().size == 0
    assert clone.decode(clone.encode(image), Prompts(box=BBox(60, 45, 180, 135))).mask.any()
