"""A scripted OpenAI-compatible server on 127.0.0.1 and a numpy segmenter (no torch); the
``phantom`` fixture is msagent's (msagent.testing.pytest_plugin)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from msagent.testing import BrightBackbone


def make_completion(content: str | None = None, tool: tuple[str, str] | None = None, *,
               prompt_tokens: int = 1000, completion_tokens: int = 20) -> dict:
    """A chat.completion body; ``tool`` = (name, raw arguments string)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool is not None:
        message["tool_calls"] = [{"id": "call_x", "type": "function",
                                  "function": {"name": tool[0], "arguments": tool[1]}}]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if tool else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeServer:
    """Answers POST /v1/chat/completions from a script of (status, body, headers, delay).

    ``requests`` records each request's JSON body and headers; ``max_in_flight`` the most
    requests handled at once. When the script is empty, ``default`` answers.
    """

    def __init__(self) -> None:
        self.script: list[tuple[int, Any, dict, float]] = []
        self.default: tuple[int, Any, dict, float] | None = None
        self.requests: list[tuple[dict, dict]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((body, {k.lower(): v for k, v in self.headers.items()}))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    step = server.script.pop(0) if server.script else server.default
                try:
                    status, payload, headers, delay = step or (500, {"error": "script empty"}, {}, 0)
                    time.sleep(delay)
                    data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, body: Any, status: int = 200, headers: dict | None = None, delay: float = 0.0):
        self.script.append((status, body, headers or {}, delay))
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(name="completion")
def completion_fixture():
    """The chat.completion body builder (a fixture: test modules do not import conftest)."""
    return make_completion


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture
def fast_backoff(monkeypatch):
    """The SDK's exponential backoff (0.5 s, doubling) shortened for tests."""
    import openai._base_client as base

    monkeypatch.setattr(base, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(base, "MAX_RETRY_DELAY", 0.05)


@pytest.fixture
def segmenter():
    """Bright pixels inside the latest box; clicks add or remove a 6-px disk (numpy only)."""
    return BrightBackbone(radius=6)
