"""Cost of asyncio=True: a CPU-bound coroutine's run time, side by side.

The loop runs one busy coroutine (so sampling events are served in place
by the main thread) while N idle tasks, each three coroutines deep, wait on
an Event. Each configuration runs the same fixed work; the ratio of its run
time to the unprofiled one is the overhead. Also reports the delivered
sampling rate and task samples per event.

    python benchmarks/asyncio_tasks.py [--tasks 10000] [--hz 100] [--repeat 5]

Writes benchmarks/results/asyncio_tasks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pysampler


async def leaf(gate: asyncio.Event) -> None:
    await gate.wait()


async def middle(gate: asyncio.Event) -> None:
    await leaf(gate)


async def outer(gate: asyncio.Event) -> None:
    await middle(gate)


def work(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFF
    return acc


async def busy(steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        work(20_000)
        await asyncio.sleep(0)  # let the loop run, as a server would
    return time.perf_counter() - t0


async def measure(config: dict[str, Any] | None, steps: int) -> dict[str, float]:
    if config is not None:
        pysampler.start(**config)
    elapsed = await busy(steps)
    out = {"seconds": elapsed}
    if config is not None:
        p = pysampler.stop()
        m = p.metadata
        out.update(
            hz_delivered=m.hz_delivered,
            task_samples_per_event=m.task_samples / max(1, m.sampling_events),
            dropped_task_samples=m.dropped_task_samples,
        )
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    gate = asyncio.Event()
    crowd = [asyncio.create_task(outer(gate)) for _ in range(args.tasks)]
    await asyncio.sleep(0)
    configs: dict[str, dict[str, Any] | None] = {
        "off": None,
        "wall": {"hz": args.hz, "mode": "wall"},
        "wall+asyncio": {"hz": args.hz, "mode": "wall", "asyncio": True},
        "wall+asyncio(max_tasks=100)": {
            "hz": args.hz,
            "mode": "wall",
            "asyncio": True,
            "max_tasks": 100,
        },
    }
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in configs}
    for _ in range(args.repeat):  # interleaved, so drift hits all alike
        for name, cfg in configs.items():
            runs[name].append(await measure(cfg, args.steps))
    gate.set()
    await asyncio.gather(*crowd)
    base = statistics.median(r["seconds"] for r in runs["off"])
    result: dict[str, Any] = {"tasks": args.tasks, "hz": args.hz, "configs": {}}
    for name, rs in runs.items():
        row = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        row["overhead"] = row["seconds"] / base - 1
        result["configs"][name] = row
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--hz", type=float, default=100)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    result = asyncio.run(main(ap.parse_args()))
    out = Path(__file__).parent / "results" / "asyncio_tasks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, row in result["configs"].items():
        print(f"{name:<28} " + "  ".join(f"{k}={v:.4g}" for k, v in row.items()))
