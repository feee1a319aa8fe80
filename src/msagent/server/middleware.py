"""ASGI middleware: the request-body limit (413) and per-status request counting."""

from __future__ import annotations

import json

from .metrics import Metrics


class LimitsMiddleware:
    """Refuses bodies over ``max_body`` bytes with 413 (from Content-Length when given, else
    while reading) and counts responses by status class into ``metrics``."""

    def __init__(self, app, *, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.record_status(message["status"])
            await send(message)

        length = dict(scope.get("headers") or ()).get(b"content-length")
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
        chunks, size = [], 0
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
        body = json.dumps({
            "detail": f"the request body is over this server's limit of {self.max_body:,} bytes; "
                      "send a smaller image (or start the server with a higher --max-upload-mb)",
            "code": "too_large"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
