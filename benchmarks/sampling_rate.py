"""Delivered sampling rate and the sampler's own cost per sampling event.

    python benchmarks/sampling_rate.py [--seconds 2]

Each case runs a known workload under pysampler and prints the delivered
rate (sampling events per second) against the requested one, the share of
timer ticks that became sampling events, who recorded them (a program
thread, or the timer/fallback thread), the time the sampler spent recording
(Metadata.sampling_ns) per event, and the CPU its own threads used per
event (Metadata.sampler_cpu_ns). On a machine where the timer thread is not
run on time (load above the core count) ticks are missed: "served" says
whether the mechanism kept up with the ticks it got.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pysampler
from workloads import busy_until, sleep_until, spin_cpu


def at_depth(depth: int, seconds: float) -> int:
    if depth <= 1:
        return spin_cpu(seconds)
    return at_depth(depth - 1, seconds)


def case(
    hz: int, mode: str, main: Callable[[], object], others: list[Callable[[threading.Event], None]]
) -> pysampler.Metadata:
    stop = threading.Event()
    threads = [threading.Thread(target=fn, args=(stop,)) for fn in others]
    for t in threads:
        t.start()
    try:
        with pysampler.profile(hz=hz, mode=mode) as p:
            main()
    finally:
        stop.set()
        for t in threads:
            t.join()
    return p.profile.metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    s = parser.parse_args().seconds
    sys.setrecursionlimit(5000)

    def join_busy_workers(n: int) -> Callable[[], None]:
        def run() -> None:
            ts = [threading.Thread(target=spin_cpu, args=(s / n,)) for _ in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        return run

    cases = [
        ("CPU-bound main, depth 30", lambda: at_depth(30, s), []),
        ("CPU-bound main, depth 300", lambda: at_depth(300, s), []),
        ("CPU-bound main + 3 sleeping threads", lambda: at_depth(30, s), [sleep_until] * 3),
        ("CPU-bound main + 1 busy thread", lambda: at_depth(30, s / 2), [busy_until]),
        ("CPU-bound main + 2 busy threads", lambda: at_depth(30, s / 3), [busy_until] * 2),
        ("main in join, 1 busy worker", join_busy_workers(1), []),
        ("main in join, 4 busy workers", join_busy_workers(4), []),
        ("main in join, 16 busy workers", join_busy_workers(16), []),
        ("busy main + 3 busy workers", lambda: at_depth(30, s / 4), [busy_until] * 3),
        ("main sleeping (wall mode)", lambda: time.sleep(s), []),
    ]
    print(
        f"{'case':<40} {'hz':>5} {'delivered':>9} {'served':>7} {'in place':>8} {'timer':>6} "
        f"{'us/event':>8} {'cpu us/ev':>9}"
    )
    for hz in (100, 1000):
        for name, fn, others in cases:
            mode = "wall" if "wall" in name else "cpu"
            m = case(hz, mode, fn, others)
            ev = max(1, m.sampling_events)
            print(
                f"{name:<40} {hz:>5} {m.hz_delivered:>9.1f} "
                f"{m.sampling_events / max(1, m.ticks):>7.1%} "
                f"{m.served_in_place:>8} {m.served_by_timer:>6} {m.sampling_ns / ev / 1e3:>8.2f} "
                f"{m.sampler_cpu_ns / ev / 1e3:>9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
