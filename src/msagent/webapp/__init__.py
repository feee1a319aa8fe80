"""The web page's app, on top of the segmentation service (``msagent serve`` mounts it by
default on loopback; ``--web`` / ``--no-web`` choose).

- :mod:`.agent.routes`: ``GET /v1/plugins``, ``POST /v1/agent/run`` (NDJSON turns), finished
  runs, sessions seeded from a run; :mod:`.agent.policies` (the policy pool and what API
  clients may set), :mod:`.agent.runs` (finished runs), :mod:`.agent.takeover` (taking a run
  over by hand), :mod:`.agent.streaming` (steps as the streamed turns);
- :mod:`.volumes.store` / :mod:`.volumes.routes`: NIfTI and DICOM volumes, slices, mask export;
- :mod:`.volumes.session_routes`: volume sessions over HTTP (the session itself,
  :mod:`msagent.volume.session`: prompts on any slice, propagation through the volume, undo,
  export of the whole result);
- ``static/``: the page itself, at ``/ui``.

It uses the service's context (backbone engine, session store, limits, auth): the service
never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).parent / "static"

__all__ = ["STATIC_DIR", "create_web_app", "install"]


def install(app: Any) -> None:
    """Add the web page's routes, their stores and the page at ``/ui`` to a service ``app``."""
    from msagent.webapp.agent import routes as agent_routes
    from msagent.webapp.volumes import routes as volume_routes
    from msagent.webapp.volumes import session_routes as volume_session_routes

    agent_routes.install(app)
    volume_routes.install(app)
    volume_session_routes.install(app)
    config = app.state.msagent.config
    directory = Path(config.static_dir) if config.static_dir else STATIC_DIR
    if directory.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/ui", StaticFiles(directory=directory, html=True), name="ui")


def create_web_app(segmenter: Any, config: Any = None) -> Any:
    """The segmentation service (:func:`msagent.server.create_app`) with the web page's app."""
    from msagent.server import create_app

    app = create_app(segmenter, config)
    install(app)
    return app
