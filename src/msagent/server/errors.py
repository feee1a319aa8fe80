"""Server-side errors and their mapping to HTTP: bad requests are 4xx with a clear message.

Every error body is ``{"detail": message, "code": short_code}`` (validation errors add
``errors``: the offending fields). msagent's own errors map as: too-large uploads 413,
invalid input (images, masks, prompts, logits) 422, unknown plugins 404.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from msagent.errors import InvalidInput, MsAgentError, PluginNotFound, SegmenterError
from msagent.io.wire import ImageTooLarge

log = logging.getLogger(__name__)


class ServerError(MsAgentError):
    """A request the server refuses; ``status`` and ``code`` go into the response."""

    status = 400
    code = "bad_request"


class SessionNotFound(ServerError):
    status, code = 404, "session_not_found"


class ImageNotFound(ServerError):
    status, code = 404, "image_not_found"


class Conflict(ServerError):
    status, code = 409, "conflict"


class TooManyPoints(ServerError):
    """More clicks in force than the server's ``max_points``."""

    status, code = 422, "too_many_points"


class TooManySessions(ServerError):
    status, code = 429, "too_many_sessions"


class Overloaded(ServerError):
    """The backbone did not answer within the request timeout."""

    status, code = 503, "timeout"


def status_of(exc: MsAgentError) -> tuple[int, str]:
    if isinstance(exc, ServerError):
        return exc.status, exc.code
    if isinstance(exc, ImageTooLarge):
        return 413, "too_large"
    if isinstance(exc, SegmenterError):
        return 422, "invalid_prompt"
    if isinstance(exc, InvalidInput):
        return 422, "invalid_input"
    if isinstance(exc, PluginNotFound):
        return 404, "not_found"
    return 400, "bad_request"


def error_response(status: int, code: str, detail: str, **extra) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status,
                        headers=headers)


async def _msagent_error(request: Request, exc: MsAgentError) -> JSONResponse:
    status, code = status_of(exc)
    log.debug("%s %s -> %d %s", request.method, request.url.path, status, exc)
    return error_response(status, code, str(exc))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", "")),
               "type": str(err.get("type", ""))} for err in exc.errors()]
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
    return error_response(422, "invalid_request", f"invalid request: {summary}", errors=errors)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    response = error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def install(app: FastAPI) -> None:
    app.add_exception_handler(MsAgentError, _msagent_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
