"""Profile the profiler: where pysampler's own CPU time goes, with ``perf``.

    python benchmarks/profile_sampler.py [--hz 1000] [--seconds 3] [--depth 30]

Runs a pure-Python loop ``--depth`` frames deep under ``pysampler.start(hz)``
inside ``perf record`` (Debian package ``linux-perf``), then splits the CPU
samples perf took by thread and shared object: the main thread's time in
``pysampler._sampler`` (recording samples through the pending call), the
sampler's native threads (timer and fallback, told apart as the threads that
appeared at ``start()``), other threads (e.g. numpy's OpenBLAS pool) and the
rest. This is the direct cost; the differential cost in ``micro.py`` also
catches indirect costs (eval-breaker handling, context switches, caches).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

TARGET = r"""
import json, os, sys, time
import pysampler

def spin(n):
    t = 0
    for i in range(n):
        t += i * i % 7
    return t

def deep(d, end):
    if d:
        return deep(d - 1, end)
    while time.perf_counter() < end:
        spin(20_000)

hz, seconds, depth, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
before = set(os.listdir("/proc/self/task"))
pysampler.start(hz=hz, mode="cpu")
sampler = sorted(set(os.listdir("/proc/self/task")) - before)
c0 = time.process_time()
deep(depth, time.perf_counter() + seconds)
cpu = time.process_time() - c0
prof = pysampler.stop()
json.dump({"main": os.getpid(), "sampler_threads": [int(t) for t in sampler],
           "events": prof.metadata.sampling_events, "hz_delivered": prof.metadata.hz_delivered,
           "cpu_s": cpu, "seconds": prof.metadata.duration}, open(out, "w"))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hz", type=float, default=1000)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--freq", type=int, default=2999, help="perf's sampling frequency")
    args = p.parse_args()
    if not shutil.which("perf"):
        print("perf is not installed (Debian: apt-get install linux-perf)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        data, facts = os.path.join(tmp, "perf.data"), os.path.join(tmp, "facts.json")
        cmd = [
            sys.executable,
            "-c",
            TARGET,
            str(args.hz),
            str(args.seconds),
            str(args.depth),
            facts,
        ]
        subprocess.run(
            ["perf", "record", "-q", "-F", str(args.freq), "-o", data, "--", *cmd], check=True
        )
        report = subprocess.run(
            ["perf", "report", "-i", data, "--no-children", "-n", "--sort", "pid,dso", "--stdio"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        with open(facts) as f:
            info = json.load(f)
    # perf samples each thread's CPU time at --freq, so samples / freq ~ CPU seconds
    seconds: dict[str, float] = defaultdict(float)
    for line in report.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\d+):\S*\s+(\S+)", line)
        if not m:
            continue
        cpu, tid, dso = int(m.group(1)) / args.freq, int(m.group(2)), m.group(3)
        if tid in info["sampler_threads"]:
            seconds["sampler native threads (timer, fallback)"] += cpu
        elif tid == info["main"] and "_sampler" in dso:
            seconds["main thread in pysampler._sampler"] += cpu
        elif tid == info["main"]:
            seconds[f"main thread in {dso}"] += cpu
        else:
            seconds["other threads (e.g. numpy's OpenBLAS pool)"] += cpu
    ticks = args.hz * info["seconds"]
    print(
        f"pysampler at {args.hz:.0f} Hz for {info['seconds']:.1f} s: {info['events']} sampling "
        f"events ({info['hz_delivered']:.0f}/s delivered), {args.depth}-frame stack; "
        f"{info['cpu_s']:.2f} s process CPU in the profiled window; whole process, CPU by perf:"
    )
    for what, sec in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {sec * 1e3:9.1f} ms  {what}")
    timer = seconds["sampler native threads (timer, fallback)"]
    in_place = seconds["main thread in pysampler._sampler"]
    print(
        f"timer and fallback threads: {100 * timer / info['seconds']:.2f}% of a core, "
        f"{timer / ticks * 1e6:.2f} µs per tick; recording in the main thread: "
        f"{in_place / max(1, info['events']) * 1e6:.2f} µs per event "
        f"(the eval-breaker and pending-call handling in libpython are not counted here)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
