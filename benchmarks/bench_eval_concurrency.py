"""API policies are I/O-bound: ``msagent eval --concurrency 32`` against ``--concurrency 1``.

The ``gpt`` policy talks to a local fake OpenAI-compatible server (its own process) that
answers every request after a fixed 300 ms: a box, three positive clicks, then
``stop_action``, in the checkpoint's ``<tool_call>`` text format (``tool_mode=prompt``), so
five requests a case. The backbone's cost is negligible next to it (the example plugin's
threshold backbone on 64×64 phantoms; policy images at 64 px). Both runs evaluate the same
cases through the CLI; the per-case results (status, Dice, IoU, turns, stop reason) must be
identical and the wall-time ratio at least 20×. ``--cases`` (default 32) keeps the
concurrency-1 run under a minute. The policy's own ``max_concurrency`` (default 8) is raised
with the eval's: ``--policy-option max_concurrency=32``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from msagent import io
from msagent.cli import main as msagent_main
from msagent.datasets import write_folder
from msagent.testing import make_phantom

DELAY = 0.3
#: the scripted replies, by the number of assistant turns already in the conversation
SCRIPT = [("add_bbox", {"bbox_2d": [150, 150, 850, 850]}),
          ("add_point", {"point_2d": [500, 500], "point_type": "positive"}),
          ("add_point", {"point_2d": [400, 450], "point_type": "positive"}),
          ("add_point", {"point_2d": [600, 550], "point_type": "positive"}),
          ("stop_action", {})]


def completion(turn: int) -> dict:
    """The checkpoint's reply format (``tool_mode=prompt``): a rationale and one tool call."""
    name, arguments = SCRIPT[min(turn, len(SCRIPT) - 1)]
    call = json.dumps({"name": name, "arguments": arguments})
    message = {"role": "assistant", "content": f"Refining the mask.\n<tool_call>\n{call}\n</tool_call>"}
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020}}


class FakeOpenAI:
    """POST /v1/chat/completions answered after ``DELAY`` seconds, one thread per request.
    ``serve`` runs it in its own process (as a real API is), reporting counts on stderr."""

    def __init__(self, port: int = 0) -> None:
        self.requests = 0
        self.in_flight = self.max_in_flight = 0
        lock, server = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one segment per reply: no delayed-ACK stalls

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                turn = sum(1 for m in body["messages"] if m.get("role") == "assistant")
                with lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(DELAY)
                data = json.dumps(completion(turn)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with lock:
                    server.in_flight -= 1

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # socketserver's 5 drops the 32 first connects' SYNs (1 s)

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def start_server() -> tuple[subprocess.Popen, str]:
    """The fake API in a subprocess (its JSON parsing does not share this process's GIL)."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit("the fake OpenAI server did not start")
    return proc, url


def write_cases(folder: Path, count: int) -> Path:
    rows = []
    for i in range(count):
        image, gt = make_phantom(64, 64, center=(30 + i % 5, 32 - i % 4), radii=(14 + i % 6, 18),
                                 seed=i)
        io.save_png(image, folder / f"images/p{i:03d}.png")
        io.save_mask_png(gt, folder / f"masks/p{i:03d}.png")
        rows.append({"image": f"images/p{i:03d}.png", "mask": f"masks/p{i:03d}.png",
                     "target": "ellipse", "id": f"p{i:03d}", "dataset": "phantoms"})
    write_folder(folder, rows)
    return folder


def run_eval(data: Path, out: Path, url: str, concurrency: int) -> float:
    argv = ["eval", str(data), "--backbone", "mybackbone", "--policy", "gpt",
            "--policy-option", f"base_url={url}", "--policy-option", "model=fake",
            "--policy-option", "api_key=bench", "--policy-option", "image_size=64",
            "--policy-option", "tool_mode=prompt",
            "--policy-option", f"max_concurrency={concurrency}",
            "--concurrency", str(concurrency), "--out", str(out), "--no-report", "--no-masks"]
    start = time.perf_counter()
    status = msagent_main(argv)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"msagent eval --concurrency {concurrency} exited {status}")
    return seconds


def per_case(out: Path) -> dict[str, tuple]:
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line]
    return {r["case_id"]: (r["status"], r["dice"], r["iou"], r["turns"], r["stop_reason"])
            for r in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        server = FakeOpenAI()
        print(server.url, flush=True)
        threading.Event().wait()
    proc, url = start_server()
    try:
        return measure(args, url)
    finally:
        proc.kill()


def measure(args: argparse.Namespace, url: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_cases(root / "data", args.cases)
        import contextlib
        import io as _io

        with contextlib.redirect_stdout(_io.StringIO()):  # the eval tables; figures below
            serial = run_eval(data, root / "c1", url, 1)
            concurrent = run_eval(data, root / f"c{args.concurrency}", url, args.concurrency)
        same = per_case(root / "c1") == per_case(root / f"c{args.concurrency}")
        cases = per_case(root / "c1")
    ratio = serial / concurrent
    requests = sum(v[3] + 1 for v in cases.values())  # executed actions + the stop
    print(f"{args.cases} cases, {requests} requests per run, answered after {DELAY * 1000:.0f} ms")
    print(f"--concurrency 1: {serial:.1f} s; --concurrency {args.concurrency}: {concurrent:.2f} s")
    verdict = "meets" if same and ratio >= 20 else "MISSES"
    print(f"wall-time ratio {ratio:.1f}x; per-case results identical: {same}; all cases ok: "
          f"{all(v[0] == 'ok' for v in cases.values())}; {verdict} the target (>= 20x, identical)")
    return 0 if same and ratio >= 20 else 1


if __name__ == "__main__":
    main()  # no sys.exit: benchmarks/run_all.py runs the next benchmark after this one
