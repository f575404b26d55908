"""What a process group costs: the extra latency of a group request over a
lone process's, and what an idle member holds.

Latency: starts a pre-fork program (a master that forks N workers; all
idle, or all spinning with ``--busy``) with the PYSAMPLER_PORT start-up
hook, and times ``/debug/pprof/profile?seconds=S`` to the last byte, for
N = 0 (a lone process) and each N asked, interleaved run by run so that
background load hits every N alike. What is over S is the cost of asking
every member, waiting for the last answer, merging and writing pprof.

Idle cost: per forked worker and per spawned (``python -c``) child, RSS,
threads and file descriptors with the group (PYSAMPLER_PORT set) minus
without it, read from /proc.

    python benchmarks/group_cost.py [--workers 3 16] [--runs 5] [--seconds 1] [--busy]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PREFORK = textwrap.dedent(
    """
    import os, sys, time

    def spin():
        n = 0
        for i in range(20000):
            n += i * i

    busy = sys.argv[2] == "busy"
    for _ in range(int(sys.argv[1])):
        if os.fork() == 0:
            while True:
                spin() if busy else time.sleep(1)
    print("ready", flush=True)
    while True:
        time.sleep(1)
    """
)

#: a forked child and a spawned child, idle, that report their pids
IDLE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    if os.fork() == 0:
        time.sleep(3600)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    time.sleep(3)  # both have joined (or not) by now
    me = os.getpid()
    print(me, open(f"/proc/{me}/task/{me}/children").read(), flush=True)
    time.sleep(3600)
    """
)


def _env(port: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")}
    if port is not None:
        env["PYSAMPLER_PORT"] = port
    return env


def fetch(port: int, path: str) -> tuple[float, int, dict[str, str]]:
    """(seconds to the last byte, body bytes, headers)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        t0 = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
        elapsed = time.perf_counter() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert " 200 " in lines[0], lines[0]
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return elapsed, len(body), headers


def start(workdir: Path, workers: int, busy: bool) -> tuple[subprocess.Popen[str], int]:
    script = workdir / "prefork.py"
    script.write_text(PREFORK)
    err = open(workdir / f"err{workers}.txt", "w+")  # noqa: SIM115 (kept open with the process)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(workers), "busy" if busy else "idle"],
        env=_env("0"),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while True:
        err.seek(0)
        match = re.search(r"endpoint on http://127\.0\.0\.1:(\d+)", err.read())
        if match:
            port = int(match.group(1))
            break
        assert time.monotonic() < deadline, "no endpoint"
        time.sleep(0.05)
    while True:  # every worker has joined
        _, _, headers = fetch(port, "/debug/pprof/profile?seconds=0.1")
        if len(headers.get("x-pysampler-pids", str(os.getpid())).split()) == workers + 1:
            return proc, port
        assert time.monotonic() < deadline, headers
        time.sleep(0.2)


def latency(args: argparse.Namespace) -> dict[str, object]:
    counts = [0, *args.workers]
    out: dict[str, list[float]] = {str(n): [] for n in counts}
    with tempfile.TemporaryDirectory() as tmp:
        running = {n: start(Path(tmp), n, args.busy) for n in counts}
        try:
            for _ in range(args.runs):
                for n in counts:
                    path = f"/debug/pprof/profile?seconds={args.seconds}"
                    elapsed, _, headers = fetch(running[n][1], path)
                    if n:
                        assert len(headers["x-pysampler-pids"].split()) == n + 1, headers
                    out[str(n)].append(elapsed - args.seconds)
        finally:
            for proc, _ in running.values():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {
        "seconds": args.seconds,
        "busy": args.busy,
        "over_window_ms": {n: [round(v * 1000, 1) for v in vals] for n, vals in out.items()},
        "median_over_window_ms": {
            n: round(statistics.median(vals) * 1000, 1) for n, vals in out.items()
        },
    }


def _proc_facts(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        uss = sum(int(v) for v in re.findall(r"Private_(?:Clean|Dirty):\s+(\d+)", rollup))
    except OSError:
        uss = 0
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_kib": rss, "uss_kib": uss, "threads": threads, "fds": fds}


def idle_cost() -> dict[str, object]:
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "idle.py")
        script.write_text(IDLE)
        for label, port in (("without", None), ("with", "0")):
            proc = subprocess.Popen(
                [sys.executable, str(script)],
                env=_env(port),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            try:
                assert proc.stdout is not None
                pids = [int(p) for p in proc.stdout.readline().split()]
                master, forked, spawned = pids[0], pids[1], pids[2]
                result[label] = {
                    "leader": _proc_facts(master),
                    "forked member": _proc_facts(forked),
                    "spawned member": _proc_facts(spawned),
                }
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[3, 16])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--busy", action="store_true", help="workers spin instead of sleeping")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = {"latency": latency(args), "idle": idle_cost()}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
