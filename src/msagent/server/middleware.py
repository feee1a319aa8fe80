"""ASGI middleware: the request-body limit (413), per-status request counting, and a JSON 500
for unexpected errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from msagent.server.context import bearer_token, key_problem
from msagent.server.metrics import Metrics

log = logging.getLogger("msagent.server")


class LimitsMiddleware:
    """Refuses bodies over ``max_body`` bytes with 413 (from Content-Length when given, else
    while reading) and counts responses by status class into ``metrics``."""

    def __init__(self, app, *, max_body: int, metrics: Metrics, api_key: str | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics
        self.api_key = api_key  # a body is read only for a request that carries the key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.record_status(message["status"])
            await send(message)

        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        has_body = (length not in (None, b"0")) or b"transfer-encoding" in headers
        problem = key_problem(bearer_token(headers.get(b"authorization")), self.api_key)
        if has_body and problem:  # no route takes a body without the key: refuse it unread
            await _json(counting_send, 401, {"detail": problem, "code": "unauthorized"},
                        [(b"www-authenticate", b"Bearer"), (b"connection", b"close")])
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(counting_send)
            return
        body = await self._read(receive)
        if body is None:
            await self._too_large(counting_send)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, counting_send)

    async def _read(self, receive) -> bytes | None:
        """The whole body, or None once it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send) -> None:
        await _json(send, 413, {
            "detail": f"the request body is over this server's limit of {self.max_body:,} bytes; "
                      "send a smaller image (its operator sets the limit)",
            "code": "too_large"}, [(b"connection", b"close")])


async def _json(send, status: int, payload: dict, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class UnexpectedErrorsMiddleware:
    """Answers an exception no handler took with a JSON 500 (``code: internal``) and logs it.

    Starlette's own fallback re-raises after its 500, and uvicorn then closes the connection,
    so a keep-alive client's next request fails too; here the exception ends with the response.
    A response already under way (a stream) cannot become a 500: that one is re-raised.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _json(send, 500, {"detail": f"internal error ({type(exc).__name__}); the "
                                              "server log has the details", "code": "internal"})
