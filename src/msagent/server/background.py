"""Run the server in a background thread of this process (tests, benchmarks, notebooks).

>>> with serve_in_thread(create_app(segmenter)) as url:   # doctest: +SKIP
...     remote = msagent.load_backbone("remote", url=url)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from msagent.errors import MsAgentError


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, *,
                    startup_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``host:port`` (0: a free port) until the block ends;
    yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="msagent-server")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise MsAgentError(f"the server did not start on {host}:{sock.getsockname()[1]}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
