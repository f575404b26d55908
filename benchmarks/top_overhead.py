"""What watching a service with ``pysampler top URL`` costs the service.

Starts a CPU-bound service (unchanged: the endpoint comes from the
PYSAMPLER_PORT start-up hook) whose main thread counts loop iterations and
reports its count a few times a second. Phases of ``--phase`` seconds
alternate between nobody watching and ``pysampler top URL --plain`` attached
at its defaults (a 1-second CPU profile at 100 Hz, one after another),
interleaved so background load hits both alike. For each on/off pair the
service's throughput with top attached is divided by the mean of its
neighbouring phases without; the median of those ratios is the cost.

    python benchmarks/top_overhead.py [--pairs 6] [--phase 6] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SERVICE = textwrap.dedent(
    """
    import sys, threading, time

    def crunch():
        n = 0
        for i in range(2000):
            n += i * i
        return n

    def busy_thread():
        while True:
            crunch()

    for _ in range(int(sys.argv[1]) - 1):
        threading.Thread(target=busy_thread, daemon=True).start()
    count = 0
    last = time.monotonic()
    while True:
        crunch()
        count += 1
        now = time.monotonic()
        if now - last >= 0.25:
            print(f"{now:.6f} {count}", flush=True)
            last = now
    """
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")}


class Service:
    def __init__(self, threads: int, folder: Path) -> None:
        script = folder / "service.py"
        script.write_text(SERVICE)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(threads)],
            env=dict(_env(), PYSAMPLER_PORT="0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None and self.proc.stdout is not None
        line = self.proc.stderr.readline()
        match = re.search(r"profiling endpoint on (http://\S+)", line)
        if not match:
            raise SystemExit(f"the service did not start its endpoint: {line!r}")
        self.url = match.group(1)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.points: list[tuple[float, int]] = []

    def read_for(self, seconds: float) -> None:
        """Collect the service's (time, count) reports for ``seconds``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.selector.select(0.1):
                t, n = self.proc.stdout.readline().split()
                self.points.append((float(t), int(n)))

    def rate(self, start: float, end: float) -> float:
        """Iterations per second between two moments (reports inside them)."""
        inside = [(t, n) for t, n in self.points if start <= t <= end]
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0)

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6, help="on/off pairs (default 6)")
    parser.add_argument("--phase", type=float, default=6.0, help="seconds per phase (default 6)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds left out after a switch")
    parser.add_argument("--threads", type=int, default=1, help="busy threads in the service")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        service = Service(args.threads, Path(folder))
        try:
            service.read_for(2.0)  # warm up
            phases: list[tuple[bool, float]] = []
            refreshes = []
            # off, on, off, on, ..., off: every "on" phase has two neighbours
            for i in range(2 * args.pairs + 1):
                watching = i % 2 == 1
                top = None
                if watching:
                    top = subprocess.Popen(
                        [sys.executable, "-m", "pysampler", "top", service.url, "--plain"],
                        env=_env(),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                        # SIGINT ends it as Ctrl-C would, even when this
                        # script runs in the background (SIGINT ignored)
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                    )
                began = time.monotonic()
                service.read_for(args.phase)
                ended = time.monotonic()
                if top is not None:
                    top.send_signal(signal.SIGINT)
                    out, _ = top.communicate(timeout=30)
                    refreshes.append(out.count("pysampler top "))
                phases.append((watching, service.rate(began + args.settle, ended)))
        finally:
            service.close()

    ratios = []
    for i in range(1, len(phases), 2):
        base = (phases[i - 1][1] + phases[i + 1][1]) / 2
        ratios.append(phases[i][1] / base)
    result = {
        "threads": args.threads,
        "phase_seconds": args.phase,
        "phases": [{"top": w, "iterations_per_s": r} for w, r in phases],
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "refreshes_per_phase": refreshes,
        "python": sys.version.split()[0],
        "load_average": os.getloadavg(),
    }
    print(
        f"service throughput with top attached / without (median of {len(ratios)} "
        f"interleaved pairs): {result['median_ratio']:.4f} "
        f"(cost {100 * (1 - result['median_ratio']):+.2f}%); "
        f"pairs: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"refreshes per {args.phase:g} s phase: {refreshes}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
