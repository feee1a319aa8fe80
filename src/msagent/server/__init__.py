"""The segmentation session server (``msagent serve``; needs the ``server`` extra).

``create_app(segmenter, ServerConfig(...))`` builds the FastAPI app; :mod:`msagent.io.wire`
holds the formats shared with the ``remote`` backbone and imports neither FastAPI nor torch.
"""

from __future__ import annotations

from typing import Any

from msagent.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def create_app(segmenter: Any, config: ServerConfig | None = None) -> Any:
    """Build the FastAPI app (see :func:`msagent.server.app.create_app`)."""
    try:
        from msagent.server.app import create_app as build
    except ImportError as exc:
        from msagent.errors import MsAgentError

        raise MsAgentError(f"the server needs FastAPI and friends: from a clone, "
                           f"pip install './[server]' (a release: pip install 'msagent[server]') "
                           f"({exc})") from None
    return build(segmenter, config)
