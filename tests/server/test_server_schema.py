"""Property-based tests of the server against its own OpenAPI spec (schemathesis, in-process
ASGI, bounded): no request, however malformed, may get a server error or break the spec.

Positive cases are aimed at a real image and a live session (their ids replace the generated
ones), so generated prompts, logits and options reach the decoder."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from msagent.io.wire import png_bytes
from msagent.server import ServerConfig
from msagent.server.sessions import Session
from msagent.testing import make_phantom
from msagent.webapp import create_web_app

pytestmark = pytest.mark.slow  # property-based: seconds per run

schemathesis = pytest.importorskip("schemathesis")
GenerationMode = pytest.importorskip("schemathesis.generation.modes").GenerationMode
positive_data_acceptance = pytest.importorskip("schemathesis.specs.openapi.checks").positive_data_acceptance

EXAMPLES = int(os.environ.get("MSAGENT_SCHEMA_EXAMPLES", "6"))  # per operation and mode
KEY = "schema-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SESSION = "live-session"


@pytest.fixture(scope="module")
def server(litemedsam):
    from fastapi.testclient import TestClient

    app = create_web_app(litemedsam, ServerConfig(api_key=KEY, max_upload_bytes=1 << 20,
                                              max_sessions=64))
    with TestClient(app) as client:
        image = make_phantom()[0]
        image_id = client.post("/v1/images", params={"encode": True}, headers=AUTH, files={
            "file": ("i.png", png_bytes(image), "image/png")}).json()["image_id"]
    # the spec is behind the key like every route but /health
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH), app.state.msagent, image_id


def aim(case, ctx, image_id):
    """Point a generated case at the live session and the real image (a fresh session each time)."""
    ctx.store.add(Session(SESSION, image_id, ctx.engine.segmenter.encode(
        ctx.engine.images.get(image_id))), replace=True)
    if case.path_parameters and "session_id" in case.path_parameters:
        case.path_parameters["session_id"] = SESSION
    if case.path_parameters and "image_id" in case.path_parameters:
        case.path_parameters["image_id"] = image_id
    if isinstance(case.body, dict):
        if isinstance(case.body.get("image_id"), str):
            case.body["image_id"] = image_id
        if isinstance(case.body.get("session_id"), str) and "image" not in case.body:
            case.body["session_id"] = SESSION
        fold_coordinates(case.body, ctx.engine.images.get(image_id).shape)
    return case


def fold_coordinates(value, shape) -> None:
    """Fold generated pixel coordinates into the image, in place, so most reach the decoder."""
    height, width = shape[:2]
    if isinstance(value, list):
        for item in value:
            fold_coordinates(item, shape)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, int) and not isinstance(item, bool) and key in AXES:
                value[key] = abs(item) % (width if AXES[key] == "x" else height)
            else:
                fold_coordinates(item, shape)


AXES = {"x": "x", "x1": "x", "x2": "x", "point_x": "x", "y": "y", "y1": "y", "y2": "y", "point_y": "y"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_spec(server, mode):
    api, ctx, image_id = server
    failures = {}
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            if mode == GenerationMode.POSITIVE:
                aim(case, ctx, image_id)
            # positive_data_acceptance is left out: a schema cannot say "a decodable PNG" or
            # "inside the image", so schema-valid requests may rightly get 404/422
            case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Unsatisfiable:  # nothing to negate (an operation without parameters)
            continue
        except Exception as exc:  # collect all operations' failures, then report them together
            failures[operation.label] = exc
    assert not failures, "\n\n".join(f"{label}:\n{exc}" for label, exc in failures.items())
    assert ctx.metrics.statuses["4xx"] > 0 and ctx.metrics.statuses.get("5xx", 0) == 0
    if mode == GenerationMode.POSITIVE:
        assert ctx.metrics.decode.count > 0  # generated prompts reached the decoder
