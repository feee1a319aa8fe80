"""Volume sessions on a shared server (issue 26): scheduling and memory, against baselines of
the same run, with a stand-in backbone so that it measures the server, not a model.

The stand-in (:class:`PacedBright`) is BrightBackbone with LiteMedSAM-sized embeddings
(256×64×64 float32, 4 MiB each) and a fixed cost per call (``--encode-ms``, ``--decode-ms``:
sleeps, as a GPU model's call leaves the CPU to others). One ``msagent``-style server runs in
a subprocess (this script with ``--serve``), with the documented defaults except where said.

1. Scheduling: the p99 latency of a 2-D request (a new image: session create, which encodes,
   then a box) while one 300-slice propagation runs, against its idle p99 in the same run.
   Target: ≤ 2×.
2. Memory: 4 volume sessions on 4 synthetic 512×512×300 int16 NIfTI volumes, each propagated
   through all 300 slices; then 4 more uploads (refused with 429: every volume in memory is
   held). The server's peak RSS against the budget the limits document (docs/security.md):
   the idle server + the volumes + per session its windowed slices (1 byte a voxel) and
   ``--volume-embeddings-in-memory`` embeddings. Spill on disk against ``--max-spill-mb``.

``python benchmarks/bench_volume_server.py [--slices 300] [--size 512]`` (a few minutes on 2
CPU cores; ``--quick`` for a small run).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io as _io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EMBEDDING = (256, 64, 64)  # LiteMedSAM's image embedding, float32: 4 MiB


def paced_backbone(encode_s: float, decode_s: float):
    from msagent.backbones.segmenter import Embedding
    from msagent.testing import BrightBackbone

    class PacedBright(BrightBackbone):
        name = "paced-bright"

        def encode_image(self, image):
            time.sleep(encode_s)
            return super().encode_image(image), np.ones(EMBEDDING, np.float32)

        def decode_prompts(self, embedding, prompt_sets, prev_logits, *, multimask):
            time.sleep(decode_s * len(prompt_sets))
            inner = Embedding(embedding.features[0], embedding.image_size, embedding.key)
            return super().decode_prompts(inner, prompt_sets, prev_logits, multimask=multimask)

    return PacedBright(cache_size=64)


def serve(args: argparse.Namespace) -> None:
    import attrs
    import uvicorn

    from msagent.server import ServerConfig, create_app
    from msagent.webapp import install

    wanted = {"batch_window_ms": 0, "max_upload_bytes": 512 * 2**20,
              "volume_sessions_per_client": 4, "volume_sessions_per_minute": 1000,
              "max_spill_bytes": int(args.max_spill_mb * 2**20), "request_timeout_s": 60}
    fields = attrs.fields_dict(ServerConfig)
    config = ServerConfig(**{k: v for k, v in wanted.items() if k in fields})
    app = create_app(paced_backbone(args.encode_ms / 1000, args.decode_ms / 1000), config)
    install(app)
    uvicorn.run(app, host="127.0.0.1", port=args.serve, log_level="warning",
                timeout_graceful_shutdown=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def server(args: argparse.Namespace, spill: Path):
    import httpx

    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port), "--encode-ms", str(args.encode_ms),
               "--decode-ms", str(args.decode_ms), "--max-spill-mb", str(args.max_spill_mb)]
    process = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(spill)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=60)


def tube_nifti(slices: int, size: int, seed: int) -> bytes:
    """A 512×512×300-style int16 CT-like volume with a bright tube through every slice."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    data = np.full((size, size, slices), -900, np.int16)
    data += rng.integers(0, 40, size=(size, size, 1), dtype=np.int16)  # cheap texture
    ii, jj = np.mgrid[:size, :size]
    for k in range(slices):
        radius = size / 10 + size / 40 * np.sin(np.pi * k / slices)
        data[:, :, k][(ii - size / 2) ** 2 + (jj - size / 2 + k % 7) ** 2 <= radius ** 2] = 200
    return gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes(), compresslevel=1)


def png_variant(index: int, size: int = 512) -> bytes:
    from PIL import Image

    from msagent.testing import make_phantom

    image, _ = make_phantom(size, size, center=(size // 2, size // 2), radii=(80, 90), seed=index)
    out = _io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def volume_session(client, vid: str) -> str:
    info = client.post(f"/v1/volumes/{vid}/sessions", json={"target": "tube", "window": "400/40"})
    assert info.status_code == 201, info.text
    body = info.json()
    path = f"/v1/volumes/{vid}/sessions/{body['session_id']}"
    box = {"x1": 0, "y1": 0, "x2": body["width"] - 1, "y2": body["height"] - 1}
    step = client.post(f"{path}/slices/{body['count'] // 2}/prompts", json={"box": box})
    assert step.status_code == 200, step.text
    return path


def two_d_latencies(client, images: list[str]) -> list[float]:
    out = []
    for image_id in images:
        started = time.perf_counter()
        made = client.post("/v1/sessions", data={"image_id": image_id})
        assert made.status_code == 201, made.text
        sid = made.json()["session_id"]
        box = client.post(f"/v1/sessions/{sid}/box", json={"x1": 150, "y1": 150, "x2": 360, "y2": 360})
        assert box.status_code == 200, box.text
        out.append(time.perf_counter() - started)
        client.delete(f"/v1/sessions/{sid}")
    return out


def metrics_cache(client) -> int:
    return int(client.get("/metrics").json()["cache"]["size"])


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--encode-ms", type=float, default=20.0)
    parser.add_argument("--decode-ms", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=60, help="2-D requests per phase")
    parser.add_argument("--max-spill-mb", type=float, default=1024.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.quick:
        args.slices, args.size, args.requests = 60, 256, 30
    import tempfile

    print(f"stand-in: {args.encode_ms:g} ms encode, {args.decode_ms:g} ms decode, "
          f"{np.prod(EMBEDDING) * 4 / 2**20:.0f} MiB embeddings; volumes {args.size}²×"
          f"{args.slices} int16", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-spill-") as spill_dir:
        measure(args, Path(spill_dir))
        left = list(Path(spill_dir).glob("msagent-embeddings-*"))
        print(f"spill folders left after SIGTERM: {len(left)}")


def measure(args: argparse.Namespace, spill: Path) -> None:
    import threading

    import httpx

    with server(args, spill) as (url, process), httpx.Client(base_url=url, timeout=600) as client:
        idle_rss = status(process.pid, "VmRSS")
        volumes_bytes = [tube_nifti(args.slices, args.size, seed) for seed in range(8)]
        images = [client.post("/v1/images", files={"file": ("i.png", png_variant(i))}).json()
                  ["image_id"] for i in range(2 * args.requests + 4)]
        two_d_latencies(client, images[-4:])  # warm-up
        images_mb = len(images) * 512 * 512 * 3 / 2**20
        # 1. scheduling -----------------------------------------------------------------------
        vids = []
        for data in volumes_bytes[:4]:
            made = client.post("/v1/volumes", files=[("files", ("ct.nii.gz", data))])
            assert made.status_code == 201, made.text
            vids.append(made.json()["volume_id"])
        idle = two_d_latencies(client, images[:args.requests])
        first = volume_session(client, vids[0])
        result: dict = {}

        def run() -> None:
            started = time.perf_counter()
            with httpx.Client(base_url=url, timeout=600) as other:
                response = other.post(f"{first}/propagate")
            result.update(status=response.status_code, seconds=time.perf_counter() - started,
                          body=response.json())

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.5)
        busy = two_d_latencies(client, images[args.requests:2 * args.requests])
        during = client.get(first).json()["progress"]
        thread.join()
        assert result["status"] == 200, result
        slices = len(result["body"]["slices"])
        print(f"2-D create+box p99: idle {p99(idle):.1f} ms, during a {slices}-slice propagation "
              f"{p99(busy):.1f} ms: ratio {p99(busy) / p99(idle):.2f} (target <= 2); "
              f"{len(busy)} requests while it ran at {during['done']}/{during['total']} slices; "
              f"the propagation took {result['seconds']:.1f} s", flush=True)
        # 2. memory ---------------------------------------------------------------------------
        paths = [first] + [volume_session(client, vid) for vid in vids[1:]]
        for path in paths[1:]:
            response = client.post(f"{path}/propagate")
            assert response.status_code == 200, response.text
        refused = sum(client.post("/v1/volumes", files=[("files", ("ct.nii.gz", data))]).status_code
                      == 429 for data in volumes_bytes[4:])
        peak, now = status(process.pid, "VmHWM"), status(process.pid, "VmRSS")
        voxels = args.size * args.size * args.slices
        embedding_mb = np.prod(EMBEDDING) * 4 / 2**20
        volumes_mb = 4 * voxels * 2 / 2**20
        # per session: its windowed slices, 32 embeddings, and per slice the propagation's
        # mask (1 byte a pixel) and 256×256 float32 logits
        state_mb = args.slices * (args.size * args.size + 256 * 256 * 4) / 2**20
        sessions_mb = 4 * (voxels / 2**20 + 32 * embedding_mb + state_mb)
        cache_mb = metrics_cache(client) * embedding_mb
        budget = idle_rss + images_mb + cache_mb + volumes_mb + sessions_mb
        spilled = sum(p.stat().st_size for p in spill.glob("msagent-embeddings-*/*.pkl")) / 2**20
        metrics = client.get("/metrics").json()
        print(f"4 volume sessions, each propagated through {args.slices} slices: RSS now {now:.0f} "
              f"MiB, peak {peak:.0f} MiB; budget {budget:.0f} MiB = idle {idle_rss:.0f} + "
              f"2-D images {images_mb:.0f} + 2-D embedding cache {cache_mb:.0f} + volumes "
              f"{volumes_mb:.0f} + sessions {sessions_mb:.0f} (slices, 32 embeddings and the "
              f"propagation's masks and logits each): "
              f"peak/budget {peak / budget:.2f} (target <= 1)", flush=True)
        print(f"4 more uploads while every volume is held: {refused}/4 refused with 429; spill on "
              f"disk {spilled:.0f} MiB (budget {args.max_spill_mb:.0f}); volume encodes counted "
              f"by /metrics {metrics['counters'].get('volume_encodes', 0)}; /health volume "
              f"sessions {client.get('/health').json().get('volume_sessions')}", flush=True)


if __name__ == "__main__":
    main()
