"""A real ``msagent serve`` stopped by SIGTERM or SIGINT removes every spill folder of its
volume sessions (issue 26, item 4: uvicorn re-raises SIGTERM after its shutdown, so atexit
handlers never run; the app's shutdown closes the sessions instead)."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from msagent.testing import make_tube, zyx_to_nifti

httpx = pytest.importorskip("httpx")
nib = pytest.importorskip("nibabel")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_removes_every_spill_folder(tmp_path, sig):
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(temp), "MSAGENT_LOAD_PLUGINS": "mybackbone"}
    server = subprocess.Popen(
        [sys.executable, "-m", "msagent", "serve", "--backbone", "mybackbone", "--port", str(port),
         "--volume-embeddings-in-memory", "1"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        volume, _ = make_tube(count=10)
        data = gzip.compress(nib.Nifti1Image(zyx_to_nifti(volume.astype(np.float32)),
                                             np.eye(4)).to_bytes())
        with httpx.Client(base_url=url, timeout=60) as client:
            vid = client.post("/v1/volumes", files=[("files", ("t.nii.gz", data))]).json()["volume_id"]
            info = client.post(f"/v1/volumes/{vid}/sessions",
                               json={"target": "tube", "window": "200/110"}).json()
            path = f"/v1/volumes/{vid}/sessions/{info['session_id']}"
            box = {"x1": 0, "y1": 0, "x2": info["width"] - 1, "y2": info["height"] - 1}
            assert client.post(f"{path}/slices/5/prompts", json={"box": box}).status_code == 200
            response = client.post(f"{path}/propagate")
            assert response.status_code == 200, response.text
        spilled = list(temp.glob("msagent-embeddings-*/*.pkl"))
        assert spilled, "the session spilled nothing: the test proves nothing"
        server.send_signal(sig)
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert not list(temp.glob("msagent-embeddings-*")), "a spill folder outlived the server"
