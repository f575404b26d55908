"""What watching a service with ``pysampler top URL`` costs the service.

Starts a CPU-bound service (unchanged: the endpoint comes from the
PYSAMPLER_PORT start-up hook) whose main thread counts loop iterations and
reports, a few times a second, its count, its own CPU time and the whole
process's. Phases of ``--phase`` seconds alternate between nobody watching
and ``pysampler top URL --plain`` attached at its defaults (a 1-second CPU
profile at 100 Hz, one after another), interleaved so background load hits
both alike. Per phase:

- throughput: iterations per second of wall time (what a user sees; on a
  shared machine, as noisy as the machine);
- iterations per second of the main thread's own CPU time (the sampler's
  recording runs in that thread; robust to other load);
- CPU the process spends outside the main thread, per second (the native
  timer thread, the endpoint answering: stopping the session, building the
  profile, writing pprof).

Each "on" phase is compared with the mean of its two "off" neighbours; the
medians of those ratios are printed.

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
            print(f"{now:.6f} {count} {time.thread_time():.6f} {time.process_time():.6f}",
                  flush=True)
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
        #: (monotonic time, iterations, main thread CPU s, process CPU s)
        self.points: list[tuple[float, ...]] = []

    def read_for(self, seconds: float) -> None:
        """Collect the service's reports for ``seconds``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.selector.select(0.1):
                self.points.append(tuple(float(x) for x in self.proc.stdout.readline().split()))

    def phase(self, start: float, end: float) -> dict[str, float]:
        """Throughput and CPU between two moments (reports inside them)."""
        inside = [p for p in self.points if start <= p[0] <= end]
        (t0, n0, m0, p0), (t1, n1, m1, p1) = inside[0], inside[-1]
        return {
            "iterations_per_s": (n1 - n0) / (t1 - t0),
            "iterations_per_main_cpu_s": (n1 - n0) / (m1 - m0),
            "other_cpu_per_s": ((p1 - p0) - (m1 - m0)) / (t1 - t0),
            "main_cpu_per_s": (m1 - m0) / (t1 - t0),
        }

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
            phases: list[tuple[bool, dict[str, float]]] = []
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
                phases.append((watching, service.phase(began + args.settle, ended)))
        finally:
            service.close()

    def ratios(key: str) -> list[float]:
        out = []
        for i in range(1, len(phases), 2):
            base = (phases[i - 1][1][key] + phases[i + 1][1][key]) / 2
            out.append(phases[i][1][key] / base)
        return out

    def on_minus_off(key: str) -> list[float]:
        out = []
        for i in range(1, len(phases), 2):
            base = (phases[i - 1][1][key] + phases[i + 1][1][key]) / 2
            out.append(phases[i][1][key] - base)
        return out

    wall = ratios("iterations_per_s")
    per_cpu = ratios("iterations_per_main_cpu_s")
    other = on_minus_off("other_cpu_per_s")
    result = {
        "threads": args.threads,
        "phase_seconds": args.phase,
        "phases": [{"top": w, **r} for w, r in phases],
        "throughput_ratios": wall,
        "median_throughput_ratio": statistics.median(wall),
        "main_thread_efficiency_ratios": per_cpu,
        "median_main_thread_efficiency_ratio": statistics.median(per_cpu),
        "extra_cpu_outside_main_thread": other,
        "median_extra_cpu_outside_main_thread": statistics.median(other),
        "refreshes_per_phase": refreshes,
        "python": sys.version.split()[0],
        "load_average": os.getloadavg(),
    }
    print(
        f"with top attached / without, median of {len(wall)} interleaved pairs "
        f"({args.phase:g} s phases, refreshes per phase {refreshes}):\n"
        f"  throughput (iterations per wall second): {statistics.median(wall):.4f}"
        f"  [{', '.join(f'{r:.3f}' for r in wall)}]\n"
        f"  iterations per second of the main thread's CPU: {statistics.median(per_cpu):.4f}"
        f"  [{', '.join(f'{r:.3f}' for r in per_cpu)}]\n"
        f"  extra CPU outside the main thread: {1000 * statistics.median(other):.1f} ms/s"
        f"  [{', '.join(f'{1000 * r:.1f}' for r in other)}]"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
