"""The segmentation server under load (litemedsam on CPU unless --device cuda): N concurrent
clients × M requests each against one ``msagent serve`` subprocess on loopback, against 1 client
× M requests in the same run (the baseline).

Each client loops over a session's life: create (on one shared image, so the embedding cache
serves it after the first), a box, a click, the mask, delete. Reported: requests per second,
p50/p99 latency, errors (any non-2xx or transport error), the server's RSS before and after,
and that the server still answers afterwards. Bounded: M requests per client, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_server import prompt_plan, server_process  # noqa: E402

from msagent import io  # noqa: E402
from msagent.io.wire import png_bytes  # noqa: E402
from msagent.testing import mni152_slice  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def client_loop(client: httpx.AsyncClient, image_png: bytes, plan: list[dict], requests: int,
                      latencies: list[float], errors: list[str]) -> None:
    sent, sid = 0, None
    steps = ["create", "box", "point", "mask", "delete"]
    while sent < requests:
        step = steps[sent % len(steps)]
        started = time.perf_counter()
        try:
            if step == "create":
                upload = {"image": ("i.png", image_png, "image/png")}
                response = await client.post("/v1/sessions", files=upload)
                sid = response.json().get("session_id") if response.status_code == 201 else None
            elif sid is None:
                response = await client.get("/health")
            elif step in ("box", "point"):
                body = plan[0 if step == "box" else 1]["body"]
                response = await client.post(f"/v1/sessions/{sid}/{step}",
                                             json={**body, "mask_format": "rle"})
            elif step == "mask":
                response = await client.get(f"/v1/sessions/{sid}/mask", params={"format": "rle"})
            else:
                response = await client.delete(f"/v1/sessions/{sid}")
            if response.status_code >= 300:
                errors.append(f"{step}: {response.status_code}")
        except httpx.HTTPError as exc:
            errors.append(f"{step}: {type(exc).__name__}")
        latencies.append(time.perf_counter() - started)
        sent += 1


async def load(url: str, clients: int, requests: int, image_png: bytes, plan: list[dict]) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*[client_loop(client, image_png, plan, requests, latencies, errors)
                               for _ in range(clients)])
        wall = time.perf_counter() - started
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return {"requests": len(latencies), "wall_s": wall, "rps": len(latencies) / wall,
            "p50_ms": p50, "p99_ms": p99, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=os.environ.get("MSAGENT_BENCH_DEVICE", "cpu"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    image, gt = mni152_slice("brain", resolution=1)
    image = io.to_rgb_uint8(image)
    image_png, plan = png_bytes(image), prompt_plan(gt, 2)
    with server_process(args.device, "--batch-window-ms", "0") as (url, process):
        pid = process.pid
        asyncio.run(load(url, 1, 5, image_png, plan))  # warm: weights, first encode
        before = rss_mb(pid)
        baseline = asyncio.run(load(url, 1, args.requests, image_png, plan))
        loaded = asyncio.run(load(url, args.clients, args.requests, image_png, plan))
        after = rss_mb(pid)
        recovered = httpx.get(f"{url}/health", timeout=30).status_code == 200
    print(f"litemedsam on {args.device}; {args.clients} clients × {args.requests} requests "
          f"(create, box, click, mask, delete, ...); load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"{'clients':>8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for n, r in ((1, baseline), (args.clients, loaded)):
        print(f"{n:>8} {r['requests']:>9} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{len(r['errors']):>7}")
    print(f"throughput ratio {loaded['rps'] / baseline['rps']:.2f}x ({args.clients} clients / 1 client); "
          f"p99 ratio {loaded['p99_ms'] / baseline['p99_ms']:.2f}x")
    print(f"server RSS {before:.0f} MB before, {after:.0f} MB after ({after - before:+.0f} MB); "
          f"answers afterwards: {recovered}")
    if loaded["errors"] or baseline["errors"]:
        print("errors:", sorted(set(baseline["errors"] + loaded["errors"]))[:10])


if __name__ == "__main__":
    main()
