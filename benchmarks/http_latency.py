"""Latency from request to first response byte of ``/profile/cpu?duration=1``.

Starts a CPU-bound script (unchanged: the endpoint comes from the
PYSAMPLER_PORT start-up hook) and times, over a raw socket, the request
until the first byte of the answer, for each route and format asked. The
profile itself takes ``duration`` seconds; what is over that is the cost of
stopping, building the Profile and writing the file.

    python benchmarks/http_latency.py [--runs 5] [--threads 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

APP = textwrap.dedent(
    """
    import sys, threading, time

    def crunch_numbers():
        return sum(i * i for i in range(20000))

    def worker():
        while True:
            crunch_numbers()

    for _ in range(int(sys.argv[1])):
        threading.Thread(target=worker, daemon=True).start()
    time.sleep(3600)
    """
)


def first_byte(host: str, port: int, path: str) -> tuple[float, float, int, str]:
    """(seconds to first byte, seconds to last byte, body bytes, status line)."""
    with socket.create_connection((host, port)) as sock:
        t0 = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunk = sock.recv(65536)
        t_first = time.perf_counter() - t0
        data = chunk
        while chunk:
            chunk = sock.recv(65536)
            data += chunk
        t_last = time.perf_counter() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    return t_first, t_last, len(body), head.split(b"\r\n")[0].decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=3, help="CPU-bound app threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "app.py")
        script.write_text(APP)
        env = {**os.environ, "PYSAMPLER_PORT": "0"}
        proc = subprocess.Popen(
            [sys.executable, str(script), str(args.threads)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            match = re.search(r"http://([\d.]+):(\d+)", proc.stderr.readline())
            assert match, "the endpoint did not start"
            host, port = match.group(1), int(match.group(2))
            results = {}
            for path in (
                "/debug/pprof/",
                "/profile/cpu?duration=1",
                "/profile/cpu?duration=1&format=pprof",
                "/debug/pprof/profile?seconds=1",
            ):
                runs = [first_byte(host, port, path) for _ in range(args.runs)]
                assert all(" 200 " in r[3] for r in runs), runs
                results[path] = {
                    "first_byte_median_ms": round(statistics.median(r[0] for r in runs) * 1e3, 1),
                    "first_byte_max_ms": round(max(r[0] for r in runs) * 1e3, 1),
                    "last_byte_median_ms": round(statistics.median(r[1] for r in runs) * 1e3, 1),
                    "body_bytes": runs[-1][2],
                }
        finally:
            proc.kill()
            proc.wait()
    result = {
        "python": sys.version.split()[0],
        "runs_each": args.runs,
        "workload": f"{args.threads} threads in a pure-Python loop",
        "routes": results,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
