"""The segmentation service: ``create_app(segmenter, config)`` → a FastAPI app.

Routes: ``/health`` and ``/metrics``; ``/v1/images``, ``/v1/predict``, ``/v1/sessions/...``;
upstream MedSAM-Agent's ``/session/...`` and ``/predict`` (``config.compat``); the OpenAPI
spec at ``/openapi.json`` (pages at ``/docs``). This is what the ``remote`` backbone and the
training tools talk to. The web page's app (agent runs, volumes, the page itself) is a separate
app on top of it: :func:`msagent.webapp.create_web_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import Depends, FastAPI

from msagent._version import __version__
from msagent.backbones.segmenter import Segmenter
from msagent.server import compat, errors, routes, session_routes
from msagent.server.config import ServerConfig
from msagent.server.context import ServerContext, require_api_key
from msagent.server.engine import Engine
from msagent.server.metrics import Metrics
from msagent.server.middleware import LimitsMiddleware, UnexpectedErrorsMiddleware
from msagent.server.sessions import SessionStore

log = logging.getLogger(__name__)
DESCRIPTION = """Interactive segmentation sessions and stateless decodes over one msagent
backbone. Coordinates are pixel XY of the original image; masks come as msagent's run-length
code or PNG; low-res logits as base64 float16/float32. Send `Authorization: Bearer <key>` when
the server was started with `--api-key`."""


def create_app(segmenter: Segmenter, config: ServerConfig | None = None) -> FastAPI:
    """A FastAPI app serving ``segmenter`` under ``config``'s limits."""
    config = config or ServerConfig()
    metrics = Metrics()
    ctx = ServerContext(engine=Engine(segmenter, config, metrics),
                        store=SessionStore(config.max_sessions, config.idle_timeout_s),
                        config=config, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        sweeper = asyncio.create_task(_expire_idle(ctx.store, ctx.sweeps))
        try:
            yield
        finally:
            sweeper.cancel()
            for close in ctx.on_shutdown:  # SIGTERM/SIGINT too: uvicorn runs this first
                try:
                    await close()
                except Exception:  # noqa: BLE001  # one failure must not skip the others
                    log.exception("shutdown step failed")

    # the spec and its pages are served by _install_docs, behind the API key when there is one
    app = FastAPI(title="msagent segmentation server", version=__version__,
                  description=DESCRIPTION, lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None)
    app.state.msagent = ctx
    errors.install(app)
    app.include_router(routes.public)
    app.include_router(routes.router)
    app.include_router(session_routes.router)
    if config.compat:
        app.include_router(compat.router)
    _install_docs(app)
    app.add_middleware(UnexpectedErrorsMiddleware)  # inside the limits: its 500s are counted
    app.add_middleware(LimitsMiddleware, max_body=config.max_upload_bytes, metrics=metrics,
                       api_key=config.api_key)

    @app.get("/", tags=["server"], dependencies=[Depends(require_api_key)], responses=routes.ERRORS)
    async def index() -> dict:
        """What this server is and where its endpoints are."""
        return {"name": "msagent segmentation server", "version": __version__,
                "backbone": segmenter.name, "docs": "/docs", "openapi": "/openapi.json",
                "ui": "/ui/" if any(getattr(r, "path", "") == "/ui" for r in app.routes) else None,
                "endpoints": sorted({getattr(r, "path", "") for r in app.routes} - {""})}

    return app


def _install_docs(app: FastAPI) -> None:
    """``/openapi.json`` and the Swagger page at ``/docs``, both behind the API key when the
    server has one (the spec lists every route; a browser without the key gets 401)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse, JSONResponse

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_api_key)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_api_key)])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)


async def _expire_idle(store: SessionStore, sweeps: list) -> None:
    interval = min(max(store.idle_timeout_s / 4, 0.05), 30.0)
    while True:
        await asyncio.sleep(interval)
        expired = store.expire() + sum(sweep() for sweep in sweeps)
        if expired:
            log.info("expired %d idle session(s)", expired)
