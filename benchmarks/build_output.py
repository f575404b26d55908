"""Cost of building a long profile and writing it: ``stop()`` plus ``save()``.

A 10-minute, 1 kHz CPU profile of 8 busy threads has about 4.8 million
sample rows. Recording one for real takes ten minutes and a quiet machine,
so this benchmark synthesises the native core's raw tables instead (what
``_sampler.stop()`` hands back, with real code objects), then times, per
format, the Python side of ``stop()`` (building the Profile from the raw
tables) and ``Profile.to_bytes()``. The copy out of the native tables (one
memcpy per column) is not included; it is the same whatever builds on it.

    python benchmarks/build_output.py                      # this interpreter
    python benchmarks/build_output.py --compare A B [...]  # interleaved runs

``--compare`` runs each interpreter (or virtualenv ``bin/python``) in a
fresh child per round, alternating which goes first, and prints the median
times side by side with their ratio (B / A). Each child generates the same
tables from the same seed.

Options: ``--seconds 600 --hz 1000 --threads 8`` (the table's size),
``--nodes 20000`` (stack-tree size), ``--formats pprof,cpuprofile,...``,
``--rounds 3``, ``--json FILE``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

FORMATS = ("pprof", "cpuprofile", "collapsed", "html", "speedscope")


def _code_objects(functions: int) -> list[Any]:
    """``functions`` real code objects, each a few lines long."""
    lines = []
    for i in range(functions):
        lines.append(f"def function_{i}(x):")
        lines += [f"    x = x + {j}" for j in range(6)]
        lines.append("    return x")
    module = compile("\n".join(lines), "/synthetic/app.py", "exec")
    return [c for c in module.co_consts if hasattr(c, "co_code")]


def raw_tables(
    seconds: float, hz: float, threads: int, nodes: int, seed: int = 1
) -> dict[str, Any]:
    """Raw tables shaped as ``_sampler.stop()`` returns them, in the column
    type the installed pysampler expects (numpy arrays, or ``array.array``
    for a pysampler that keeps numpy out of the profiled process)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    codes = _code_objects(600)
    # two offsets per line for some frames, as the native core records them
    frames = []
    for code in codes:
        first = code.co_firstlineno
        frames += [(code, first + 1 + k) for k in range(6)]
        frames.append((code, first + 3))
    nframes = len(frames)

    # a stack tree: each node's parent is a recent node, so stacks run
    # 10-40 deep; a few roots
    parent = np.empty(nodes, dtype=np.int32)
    parent[:8] = -1
    depth = np.zeros(nodes, dtype=np.int32)
    for i in range(8, nodes):
        p = int(rng.integers(max(0, i - 300), i))
        if depth[p] >= 40:
            p = int(rng.integers(0, 8))
        parent[i] = p
        depth[i] = depth[p] + 1
    frame = rng.integers(0, nframes, size=nodes, dtype=np.int32)

    events = int(seconds * hz)
    n = events * threads
    period = int(1e9 / hz)
    # each thread spends its time in a Zipf-weighted set of leaves of its own
    width = min(2000, nodes - nodes // 4)
    leaves = np.empty((threads, width), dtype=np.int32)
    for t in range(threads):
        leaves[t] = rng.choice(np.arange(nodes // 4, nodes), size=width, replace=False)
    pick = np.minimum(rng.zipf(1.3, size=n) - 1, width - 1)
    thread = np.tile(np.arange(threads, dtype=np.int32), events)
    stack = leaves[thread, pick].astype(np.int32)
    event_time = 1_000_000_000 + np.arange(events, dtype=np.int64) * period
    event_time += rng.integers(0, period // 2, size=events)
    time_ns = np.repeat(event_time, threads)
    wall = np.repeat(np.diff(np.r_[event_time[0] - period, event_time]), threads)
    cpu = (wall * rng.uniform(0.3, 1.0, size=n)).astype(np.int64)
    count = np.ones(n, dtype=np.int32)

    columns = {
        "node_parent": parent,
        "node_frame": frame,
        "stack": stack,
        "thread": thread,
        "time_ns": time_ns,
        "cpu_ns": cpu,
        "wall_ns": wall.astype(np.int64),
        "count": count,
    }
    if _wants_arrays():
        import array

        columns = {
            k: array.array("i" if v.dtype == np.int32 else "q", v.tobytes())
            for k, v in columns.items()
        }
    return {
        "mode": "cpu",
        "frames": frames,
        **columns,
        "threads": [(1000 + t, 2000 + t, f"worker-{t}") for t in range(threads)],
        "start_ns": int(event_time[0]) - period,
        "stop_ns": int(event_time[-1]),
        "max_depth": 512,
        "stats": {
            "ticks": events,
            "missed_ticks": 0,
            "served_pending": events,
            "served_fallback": 0,
            "dropped_samples": 0,
            "truncated_stacks": 0,
            "sampling_ns": 0,
            "task_samples": 0,
            "dropped_task_samples": 0,
        },
        "asyncio": False,
    }


def _wants_arrays() -> bool:
    import importlib.util

    return importlib.util.find_spec("pysampler._columns") is not None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build and write each format once; seconds per step."""
    from pysampler import formats
    from pysampler._build import build_profile

    t0 = time.perf_counter()
    raw = raw_tables(args.seconds, args.hz, args.threads, args.nodes)
    out: dict[str, Any] = {
        "rows": len(raw["stack"]),
        "generate_s": time.perf_counter() - t0,
        "numpy_loaded_by_build": None,
        "formats": {},
    }
    for name in args.formats:
        gc.collect()
        t0 = time.perf_counter()
        profile = build_profile(raw, args.hz, 1.7e9)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        data = formats.get(name).write(profile)
        t2 = time.perf_counter()
        out["formats"][name] = {"build_s": t1 - t0, "write_s": t2 - t1, "bytes": len(data)}
        del profile, data
    return out


def compare(args: argparse.Namespace) -> dict[str, Any]:
    pythons = args.compare
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in pythons}
    child_args = [
        "--seconds",
        str(args.seconds),
        "--hz",
        str(args.hz),
        "--threads",
        str(args.threads),
        "--nodes",
        str(args.nodes),
        "--formats",
        ",".join(args.formats),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")}
    for r in range(args.rounds):
        order = pythons if r % 2 == 0 else pythons[::-1]
        for py in order:
            proc = subprocess.run(
                [py, os.path.abspath(__file__), *child_args, "--child"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{py} failed:\n{proc.stderr}")
            runs[py].append(json.loads(proc.stdout))
            print(f"round {r + 1}/{args.rounds} {py} done", file=sys.stderr, flush=True)
    table: dict[str, Any] = {}
    for name in args.formats:
        row = {}
        for py in pythons:
            total = [
                x["formats"][name]["build_s"] + x["formats"][name]["write_s"] for x in runs[py]
            ]
            build = [x["formats"][name]["build_s"] for x in runs[py]]
            row[py] = {
                "total_s": statistics.median(total),
                "build_s": statistics.median(build),
                "write_s": statistics.median(total) - statistics.median(build),
                "all_total_s": total,
            }
        table[name] = row
    return {"rows": runs[pythons[0]][0]["rows"], "rounds": args.rounds, "table": table}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--hz", type=float, default=1000.0)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--nodes", type=int, default=20_000)
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compare", nargs="+", metavar="PYTHON")
    p.add_argument("--json", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.formats = [f for f in args.formats.split(",") if f]
    if args.child:
        print(json.dumps(measure(args)))
        return
    if not args.compare:
        args.compare = [sys.executable]
    result = compare(args)
    names = args.compare
    print(f"{result['rows']} rows, median of {args.rounds} interleaved rounds (seconds)")
    head = " | ".join(f"{n} build+write" for n in names)
    print(f"| format | {head} | ratio |")
    for fmt, row in result["table"].items():
        cells = " | ".join(
            f"{row[n]['build_s']:.2f} + {row[n]['write_s']:.2f} = {row[n]['total_s']:.2f}"
            for n in names
        )
        ratio = row[names[-1]]["total_s"] / row[names[0]]["total_s"]
        print(f"| {fmt} | {cells} | {ratio:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
