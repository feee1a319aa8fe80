"""Segmentation server benchmark (litemedsam; CPU unless --device cuda), as ratios measured in
the same run. Each configuration runs as its own ``msagent serve`` subprocess on loopback, all
started up front, and measurements alternate between them (medians of ``--rounds``), so that
background load hits every configuration alike; clients are asyncio httpx sessions.

1. Decode throughput and p50/p99 latency with N = 1, 8, 32 concurrent sessions on one image
   (a GRPO group): micro-batching on vs off.
2. Whole episodes (create session + decodes) with vs without the shared embedding cache.
3. Server overhead: in-process ``decode`` vs the same decode through the server
   (``/v1/sessions/.../point`` round trip and the ``remote`` backbone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx
import numpy as np

import msagent
from msagent import io
from msagent.io.wire import png_bytes
from msagent.testing import mni152_slice
from msagent.types import BBox, Point, Prompts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(device: str, *extra: str):
    """``msagent serve`` with litemedsam on a free loopback port; yields its URL."""
    with server_process(device, *extra) as (url, _):
        yield url


@contextlib.contextmanager
def server_process(device: str, *extra: str):
    """Like :func:`server`, yielding (URL, the server's Popen)."""
    port = free_port()
    command = [sys.executable, "-c", "import sys; from msagent.cli import main; sys.exit(main())",
               "serve", "--backbone", "litemedsam", "--backbone-option", f"device={device}",
               "--port", str(port), "--max-sessions", "512", "--request-timeout", "900", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {' '.join(command)}")
            time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def variant(image: np.ndarray, index: int) -> np.ndarray:
    """The image with one pixel changed: a different content hash, so a cold cache."""
    out = image.copy()
    out[0, 0, 0] = (int(out[0, 0, 0]) + 1 + index) % 256
    return out


def prompt_plan(gt: np.ndarray, decodes: int) -> list[dict]:
    """A box around the target, then clicks inside it (request bodies for the session API)."""
    ys, xs = np.nonzero(gt)
    plan = [{"kind": "box", "body": {"x1": int(xs.min()), "y1": int(ys.min()),
                                     "x2": int(xs.max()), "y2": int(ys.max())}}]
    rng = np.random.default_rng(0)
    for index in rng.choice(len(xs), decodes - 1, replace=False):
        plan.append({"kind": "point", "body": {"x": int(xs[index]), "y": int(ys[index]), "label": 1}})
    return plan


async def episode(client: httpx.AsyncClient, image_png: bytes, plan: list[dict],
                  latencies: list[float], barrier: asyncio.Barrier | None) -> None:
    created = await client.post("/v1/sessions", files={"image": ("i.png", image_png, "image/png")})
    created.raise_for_status()
    sid = created.json()["session_id"]
    if barrier is not None:  # decode phase only: all sessions exist before the first decode
        await barrier.wait()
    for step in plan:
        started = time.perf_counter()
        response = await client.post(f"/v1/sessions/{sid}/{step['kind']}",
                                     json={**step["body"], "mask_format": "none"})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
    await client.delete(f"/v1/sessions/{sid}")


async def run_sessions(url: str, image_png: bytes, plan: list[dict], sessions: int,
                       decode_phase_only: bool) -> dict:
    latencies: list[float] = []
    barrier = asyncio.Barrier(sessions) if decode_phase_only else None
    limits = httpx.Limits(max_connections=sessions + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        before = (await client.get("/metrics")).json()
        if decode_phase_only:  # warm the embedding so only decodes are timed
            await client.post("/v1/images", params={"encode": True},
                              files={"file": ("i.png", image_png, "image/png")})
        started = time.perf_counter()
        await asyncio.gather(*[episode(client, image_png, plan, latencies, barrier)
                               for _ in range(sessions)])
        wall = time.perf_counter() - started
        after = (await client.get("/metrics")).json()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return {"wall_s": wall, "decodes_per_s": len(latencies) / wall, "episodes_per_s": sessions / wall,
            "p50_ms": p50, "p99_ms": p99,
            "encodes": after["cache"]["misses"] - before["cache"]["misses"],
            "mean_batch": after["batches"]["mean_size"]}


def in_process_overhead(device: str, url: str, image: np.ndarray, plan: list[dict],
                        repeats: int) -> dict:
    segmenter = msagent.load_backbone("litemedsam", device=device)
    remote = msagent.load_backbone("remote", url=url)
    box = BBox(**plan[0]["body"])
    point = Point(plan[1]["body"]["x"], plan[1]["body"]["y"])
    times: dict[str, list[float]] = {"in-process": [], "remote backbone": [], "session API": []}
    local, served = segmenter.encode(image), remote.encode(image)
    first = segmenter.decode(local, Prompts(box=box), multimask=False)
    remote_first = remote.decode(served, Prompts(box=box))
    with httpx.Client(base_url=url, timeout=600) as client:
        sid = client.post("/v1/sessions", files={"image": ("i.png", png_bytes(image), "image/png")}
                          ).json()["session_id"]
        client.post(f"/v1/sessions/{sid}/box", json=plan[0]["body"])
        for _ in range(repeats):
            started = time.perf_counter()
            segmenter.decode(local, Prompts(box=box, points=(point,)), first.low_res_logits,
                             multimask=False)
            times["in-process"].append(time.perf_counter() - started)
            started = time.perf_counter()
            remote.decode(served, Prompts(box=box, points=(point,)), remote_first.low_res_logits)
            times["remote backbone"].append(time.perf_counter() - started)
            started = time.perf_counter()
            client.post(f"/v1/sessions/{sid}/point", json={**plan[1]["body"], "mask_format": "rle"})
            times["session API"].append(time.perf_counter() - started)
            client.post(f"/v1/sessions/{sid}/undo", params={"mask_format": "none"})
    out = {name: statistics.median(values) * 1000 for name, values in times.items()}
    sets = [Prompts(box=box, points=(point,))] * 8
    prev = [first.low_res_logits] * 8
    one_by_one, batched = [], []
    for _ in range(max(3, repeats // 4)):
        started = time.perf_counter()
        for prompts, logits in zip(sets, prev):
            segmenter.decode(local, prompts, logits, multimask=False)
        one_by_one.append(time.perf_counter() - started)
        started = time.perf_counter()
        segmenter.decode_batch(local, sets, prev, multimask=False)
        batched.append(time.perf_counter() - started)
    out["8 decodes, one by one"] = statistics.median(one_by_one) * 1000
    out["8 decodes, one batch"] = statistics.median(batched) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=os.environ.get("MSAGENT_BENCH_DEVICE", "cpu"))
    parser.add_argument("--sessions", default="1,8,32")
    parser.add_argument("--decodes", type=int, default=4, help="decodes per session")
    parser.add_argument("--repeats", type=int, default=20, help="overhead measurement repeats")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating runs per configuration (medians are reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads, here and in the server (OMP_NUM_THREADS)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    counts = [int(n) for n in args.sessions.split(",")]
    image, gt = mni152_slice("brain", resolution=1)
    image = io.to_rgb_uint8(image)
    image_png, plan = png_bytes(image), prompt_plan(gt, args.decodes)
    print(f"litemedsam on {args.device} ({args.threads} CPU thread(s)); image "
          f"{image.shape[1]}x{image.shape[0]}; {args.decodes} decodes per session; "
          f"medians of {args.rounds} alternating rounds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    configs = {"batched": ("--batch-window-ms", "2"), "unbatched": ("--batch-window-ms", "0"),
               "no cache": ("--batch-window-ms", "2", "--cache-size", "0")}
    runs: dict[tuple[str, int], list[dict]] = {}
    with contextlib.ExitStack() as stack:  # all servers up at once; runs alternate between them
        urls = {label: stack.enter_context(server(args.device, *extra))
                for label, extra in configs.items()}
        for n in counts:
            for _ in range(args.rounds):
                for label in ("batched", "unbatched"):
                    runs.setdefault((label, n), []).append(
                        asyncio.run(run_sessions(urls[label], image_png, plan, n, True)))
                for label in ("batched", "no cache"):
                    fresh = png_bytes(variant(image, sum(map(len, runs.values()))))  # cold cache
                    runs.setdefault((label + " episodes", n), []).append(
                        asyncio.run(run_sessions(urls[label], fresh, plan, n, False)))
        overhead = in_process_overhead(args.device, urls["batched"], image, plan, args.repeats)
    results = {key: {k: statistics.median(r[k] for r in values) for k in values[0]}
               for key, values in runs.items()}

    print("\n1. decodes, N sessions on one image (batched: a 2 ms micro-batching window, forced on "
          "even on CPU, where the server default is off)")
    print(f"{'N':>3} {'mode':>10} {'decodes/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10}")
    for n in counts:
        for label in ("batched", "unbatched"):
            r = results[(label, n)]
            print(f"{n:>3} {label:>10} {r['decodes_per_s']:>10.1f} {r['p50_ms']:>8.1f} "
                  f"{r['p99_ms']:>8.1f} {r['mean_batch']:>10.2f}")
        b, u = results[("batched", n)], results[("unbatched", n)]
        print(f"{n:>3} {'ratio':>10} {b['decodes_per_s'] / u['decodes_per_s']:>9.2f}x "
              f"{b['p50_ms'] / u['p50_ms']:>7.2f}x {b['p99_ms'] / u['p99_ms']:>7.2f}x   "
              "(batched / unbatched)")

    print("\n2. whole episodes (create + decodes), N sessions on one image")
    print(f"{'N':>3} {'cache':>10} {'episodes/s':>10} {'encodes':>8} {'p99 ms':>8}")
    for n in counts:
        c, nc = results[("batched episodes", n)], results[("no cache episodes", n)]
        print(f"{n:>3} {'shared':>10} {c['episodes_per_s']:>10.2f} {c['encodes']:>8} {c['p99_ms']:>8.1f}")
        print(f"{n:>3} {'none':>10} {nc['episodes_per_s']:>10.2f} {nc['encodes']:>8} {nc['p99_ms']:>8.1f}")
        print(f"{n:>3} {'ratio':>10} {c['episodes_per_s'] / nc['episodes_per_s']:>9.2f}x "
              "(shared cache / no cache)")

    base = overhead["in-process"]
    print("\n3. one decode (box + click + previous logits), median ms")
    for name in ("in-process", "remote backbone", "session API"):
        ms = overhead[name]
        print(f"{name:>16}: {ms:7.1f} ms  ({ms / base:.2f}x in-process, {ms - base:+.1f} ms)")
    one, batch = overhead["8 decodes, one by one"], overhead["8 decodes, one batch"]
    print(f"\n4. what batching can gain on this device (in-process): 8 decodes one by one "
          f"{one:.0f} ms, as one decode_batch {batch:.0f} ms -> {one / batch:.2f}x")


if __name__ == "__main__":
    main()
