"""Cost per sampling event and memory per minute against idle threads.

    python benchmarks/idle_threads.py [--seconds 2] [--counts 0,10,100,500]
                                      [--hz 1000] [--out DIR]

The main thread runs pure Python while N idle threads wait, each 30 frames
deep, on an Event; pysampler samples at 1 kHz in CPU mode and in wall mode.
Per case: the sampler's own time per event (Metadata.sampling_ns, and the
CPU of its threads, Metadata.sampler_cpu_ns) as a share of wall time, and
the memory its tables grow by per minute (sample rows, from the profile's
row count, 36 bytes a row). Writes idle_threads.json and idle_threads.png
(cost and memory against N, both modes) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pysampler
from workloads import spin_cpu

ROW_BYTES = 36  # stack, thread, count (int32) + time, cpu, wall (int64)


def _deep(depth: int, stop: threading.Event) -> None:
    if depth > 1:
        _deep(depth - 1, stop)
    else:
        stop.wait()


def measure(n: int, mode: str, hz: int, seconds: float) -> dict[str, float]:
    stop = threading.Event()
    threads = [threading.Thread(target=_deep, args=(30, stop), daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        with pysampler.profile(hz=hz, mode=mode) as p:
            spin_cpu(seconds)
    finally:
        stop.set()
        for t in threads:
            t.join()
    m = p.profile.metadata
    ev = max(1, m.sampling_events)
    return {
        "threads": n,
        "mode": mode,
        "events": m.sampling_events,
        "us_per_event": m.sampling_ns / ev / 1e3,
        "cpu_us_per_event": m.sampler_cpu_ns / ev / 1e3,
        "share_of_wall": m.sampling_ns / (m.duration * 1e9),
        "cpu_share_of_wall": m.sampler_cpu_ns / (m.duration * 1e9),
        "rows": len(p.profile.stack),
        "mib_per_minute": len(p.profile.stack) * ROW_BYTES * 60 / m.duration / 2**20,
    }


def chart(results: list[dict[str, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in ("cpu", "wall"):
        rows = [r for r in results if r["mode"] == mode]
        xs = [r["threads"] for r in rows]
        a.plot(xs, [100 * r["share_of_wall"] for r in rows], "o-", label=f"{mode} mode: sampling")
        a.plot(
            xs,
            [100 * r["cpu_share_of_wall"] for r in rows],
            "o--",
            alpha=0.6,
            label=f"{mode} mode: sampler threads' CPU",
        )
        b.plot(xs, [r["mib_per_minute"] for r in rows], "o-", label=f"{mode} mode")
    a.axhline(2.0, color="grey", linestyle=":", label="2%")
    a.set(
        xlabel="idle threads (30 frames deep)",
        ylabel="% of wall time",
        title="cost at 1 kHz (sampling_ns; sampler_cpu_ns)",
    )
    b.set(
        xlabel="idle threads (30 frames deep)", ylabel="MiB per minute", title="sample table growth"
    )
    for ax in (a, b):
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--counts", default="0,10,100,500")
    parser.add_argument("--hz", type=int, default=1000)
    parser.add_argument("--out", default=os.path.join("build", "idle-threads"))
    args = parser.parse_args()
    sys.setrecursionlimit(5000)
    results = []
    print(
        f"{'mode':<5} {'threads':>7} {'us/event':>9} {'cpu us/ev':>9} {'% wall':>7} "
        f"{'cpu %':>6} {'rows':>8} {'MiB/min':>8}"
    )
    for mode in ("cpu", "wall"):
        for n in (int(c) for c in args.counts.split(",")):
            r = measure(n, mode, args.hz, args.seconds)
            results.append(r)
            print(
                f"{mode:<5} {n:>7} {r['us_per_event']:>9.1f} {r['cpu_us_per_event']:>9.1f} "
                f"{100 * r['share_of_wall']:>7.2f} {100 * r['cpu_share_of_wall']:>6.2f} "
                f"{r['rows']:>8} {r['mib_per_minute']:>8.2f}",
                flush=True,
            )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "idle_threads.json"), "w") as f:
        json.dump({"hz": args.hz, "seconds": args.seconds, "results": results}, f, indent=1)
    try:
        chart(results, os.path.join(args.out, "idle_threads.png"))
    except ImportError:
        print("matplotlib is not installed (bench extra): no chart")


if __name__ == "__main__":
    main()
