"""What the routes share: the engine, the session store, the limits, the metrics; and auth."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

import attrs
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from msagent.server.config import ServerConfig
from msagent.server.engine import Engine
from msagent.server.errors import ServerError
from msagent.server.metrics import Metrics
from msagent.server.sessions import SessionStore


@attrs.define(eq=False)
class ServerContext:
    engine: Engine
    store: SessionStore
    config: ServerConfig
    metrics: Metrics
    started: float = attrs.field(factory=time.time)
    #: what the apps on top (the web app) add: live-session counts by kind for /health and
    #: /metrics, sweeps the idle sweeper runs, and what shutdown closes (spill folders)
    session_counts: dict[str, Callable[[], int]] = attrs.field(factory=dict)
    sweeps: list[Callable[[], int]] = attrs.field(factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = attrs.field(factory=list)

    @property
    def multimask_default(self) -> bool:
        return bool(self.engine.segmenter.multimask_default)


def client_id(request: Request, config: ServerConfig) -> str:
    """Who a request comes from, for per-client quotas: the peer's address as the transport
    gives it (never a header the client chooses; behind a reverse proxy every client is the
    proxy's address), with the server's API key in force as a prefix (one tenant per key)."""
    peer = request.client.host if request.client is not None else "unknown"
    return f"key:{peer}" if config.api_key else f"peer:{peer}"


def context(request: Request) -> ServerContext:
    return request.app.state.msagent


class Unauthorized(ServerError):
    status, code = 401, "unauthorized"


_bearer = HTTPBearer(auto_error=False, description="the server's --api-key, when it has one")


def key_problem(given: str | None, expected: str | None) -> str | None:
    """Why the bearer token ``given`` does not open a server with key ``expected`` (None: it
    does, or the server has no key). The one rule for the route check and the body guard."""
    if not expected:
        return None
    if given is None:
        return ("this server needs an API key: send 'Authorization: Bearer <key>' "
                "(remote backbone: api_key= or $MSAGENT_REMOTE_API_KEY)")
    if not secrets.compare_digest(given.encode(), expected.encode()):
        return "wrong API key; use the key the server was started with (--api-key)"
    return None


def bearer_token(header: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    scheme, _, token = (header or b"").decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_api_key(ctx: ServerContext = Depends(context),
                    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """Check ``Authorization: Bearer <key>`` when the server was started with an API key."""
    problem = key_problem(None if credentials is None else credentials.credentials, ctx.config.api_key)
    if problem:
        raise Unauthorized(problem)
