"""Overhead of heap profiling on an allocation-heavy workload, side by side.

Runs the same workload with no profiler, with pysampler.heap at its default
rate (one sample per 512 KiB on average), and with tracemalloc (1 frame, its
default, and 32 frames, closer to the full stacks pysampler records),
interleaved in one process: every round runs each mode once, in an order
that rotates, so drift of a shared, noisy machine hits all modes alike.
Reports the median and the minimum time per mode and their ratios to no
profiler (on a shared, noisy machine the minimum is the steadier estimate of
what a mode itself costs).

    python benchmarks/heap_overhead.py [--rounds 9] [--n 150000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

import pysampler.heap


def workload(n: int) -> int:
    """Build and drop many small and mid-sized objects: dicts, str, lists,
    bytes, tuples (what a web handler or a parser allocates)."""
    live: list[object] = []
    total = 0
    for i in range(n):
        record = {
            "id": i,
            "name": f"item-{i}",
            "tags": [str(i % 7), str(i % 11), "x" * (i % 40)],
            "blob": b"\0" * (i % 600),
            "pos": (i, i + 1, float(i)),
        }
        live.append(record)
        if len(live) >= 5000:
            total += len(live)
            live = live[2500:]  # keep some alive, free the rest
    return total + len(live)


def _none() -> tuple[Callable[[], None], Callable[[], None]]:
    return (lambda: None), (lambda: None)


def _pysampler() -> tuple[Callable[[], None], Callable[[], None]]:
    return (lambda: pysampler.heap.start()), (lambda: pysampler.heap.stop() and None)


def _tracemalloc(frames: int) -> Callable[[], tuple[Callable[[], None], Callable[[], None]]]:
    def make() -> tuple[Callable[[], None], Callable[[], None]]:
        return (lambda: tracemalloc.start(frames)), tracemalloc.stop

    return make


MODES = {
    "none": _none,
    "pysampler.heap (512 KiB)": _pysampler,
    "tracemalloc (1 frame)": _tracemalloc(1),
    "tracemalloc (32 frames)": _tracemalloc(32),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--n", type=int, default=150_000, help="records per run")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    names = list(MODES)
    times: dict[str, list[float]] = {m: [] for m in names}
    workload(args.n // 10)  # warm up
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start, stop = MODES[name]()
            start()
            t0 = time.perf_counter()
            workload(args.n)
            elapsed = time.perf_counter() - t0
            stop()
            times[name].append(elapsed)

    base = statistics.median(times["none"])
    base_min = min(times["none"])
    rows = []
    print(f"{'mode':<26} {'median':>10} {'ratio':>6}  {'min':>10} {'ratio':>6}")
    for name in names:
        med, low = statistics.median(times[name]), min(times[name])
        rows.append(
            {
                "mode": name,
                "median_s": med,
                "ratio_median": med / base,
                "min_s": low,
                "ratio_min": low / base_min,
                "runs": times[name],
            }
        )
        print(
            f"{name:<26} {med * 1e3:7.1f} ms x{med / base:5.2f}  "
            f"{low * 1e3:7.1f} ms x{low / base_min:5.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "argv": sys.argv[1:],
                    "rounds": args.rounds,
                    "n": args.n,
                    "results": rows,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
