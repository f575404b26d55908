"""Overhead suite: every workload under every configuration, side by side.

    python benchmarks/run.py            # full suite -> docs/benchmarks/
    python benchmarks/run.py --quick    # a few minutes' subset -> build/bench-quick/

Each (workload, configuration) run is a fresh child process (``child.py``).
Configurations are interleaved round-robin within each repetition, in a
rotating order, so that drift in machine load hits all of them alike; each
ratio to ``none`` is taken between runs of the same repetition and the
median over repetitions is reported. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import configs  # noqa: E402  (benchmarks/ is not a package)
import report  # noqa: E402

import workloads  # noqa: E402

CHILD = os.path.join(HERE, "child.py")
#: Environment of the measured children. pysampler does not import numpy;
#: should anything in a child (a peer, a benchmark's own analysis after the
#: timed body) import it, its OpenBLAS pool must not busy-wait on another
#: core during a timed body (no workload uses BLAS).
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1"}
PEER_PACKAGES = (
    "pysampler",
    "pyperformance",
    "py-spy",
    "austin-dist",
    "pyinstrument",
    "yappi",
    "ddtrace",
    "pyroscope-io",
)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_child(
    spec: dict[str, Any],
    config: configs.Config,
    tmp: str,
    timeout: float,
    base_env: dict[str, str] = CHILD_ENV,
) -> dict[str, Any]:
    """Run one child process and return its result plus what the parent saw.

    ``tree_cpu_s`` is the CPU time of the whole process tree (the Python
    child and, for an external tool, the tool itself), from the parent's
    ``RUSAGE_CHILDREN``: runs are sequential, so the difference across one
    run belongs to that run alone.
    """
    result_path = os.path.join(tmp, "result.json")
    if os.path.exists(result_path):
        os.unlink(result_path)
    spec = {**spec, "result": result_path, "outdir": tmp, "config": config.__dict__}
    prefix = [a.format(outdir=tmp) for a in config.prefix]
    cmd = [*prefix, sys.executable, CHILD, json.dumps(spec)]
    env = {**base_env, **os.environ, **{k: v.format(outdir=tmp) for k, v in config.env.items()}}
    load = os.getloadavg()[0]
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    pin = spec.get("pin")
    # --pin: the child starts on the tool's CPU (an external tool stays there,
    # with every thread it starts); the Python child moves its own main thread
    # to the program's CPU at once (child.py)
    preexec = (lambda: os.sched_setaffinity(0, {pin["tool"]})) if pin else None
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=preexec
        )
        returncode, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode, stderr = -1, f"timed out after {timeout:.0f} s: {exc.stderr!r}"
    lifetime = time.perf_counter() - t0
    tree_cpu = _children_cpu() - cpu0
    out: dict[str, Any] = {"load1": load, "lifetime_s": lifetime, "tree_cpu_s": tree_cpu}
    if returncode != 0 or not os.path.exists(result_path):
        tail = (stderr or "").strip().splitlines()[-3:]
        out["error"] = f"exit {returncode}: " + " | ".join(tail)
        return out
    with open(result_path) as f:
        out.update(json.load(f))
    if config.kind == "external":
        # the tool's own CPU: the tree less the profiled process itself
        out["tool_cpu_s"] = max(0.0, tree_cpu - out["process_cpu_s"])
    return out


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PEER_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a subset that finishes in minutes")
    p.add_argument("--workloads", help="comma-separated workload names (default: all)")
    p.add_argument("--configs", help="comma-separated configuration names (default: all)")
    p.add_argument("--reps", type=int, help="repetitions of each run (full 5, quick 2)")
    p.add_argument(
        "--seconds", type=float, help="unprofiled seconds per run (full 0.5, quick 0.15)"
    )
    p.add_argument(
        "--micro",
        choices=("full", "quick", "none"),
        help="latency / per-sample cost / memory micro-benchmarks (default: as the mode)",
    )
    p.add_argument(
        "--memory-seconds",
        type=float,
        help="length of the 1 kHz memory profile, projected to 10 min (full 60, quick 4)",
    )
    p.add_argument("--out", help="output folder (full: docs/benchmarks, quick: build/bench-quick)")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument(
        "--pin",
        action="store_true",
        help="the program's threads on one CPU, the profiler's own (or the external\n"
        "tool) on another: takes the GIL's cross-core hand-offs out of the noise",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.workloads = (
        args.workloads.split(",")
        if args.workloads
        else list(workloads.QUICK if quick else workloads.ALL)
    )
    names = (
        args.configs.split(",")
        if args.configs
        else list(configs.QUICK if quick else configs.BY_NAME)
    )
    unknown = [n for n in names if n not in configs.BY_NAME]
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; known: {', '.join(configs.BY_NAME)}")
    if "none" not in names:
        names.insert(0, "none")  # every ratio is to "none"
    args.configs = names
    bad = [w for w in args.workloads if w not in workloads.ALL]
    if bad:
        p.error(f"unknown workload(s) {bad}; known: {', '.join(workloads.ALL)}")
    args.reps = args.reps or (2 if quick else 5)
    args.seconds = args.seconds or (0.15 if quick else 0.5)
    args.micro = args.micro or ("quick" if quick else "full")
    args.memory_seconds = args.memory_seconds or (4.0 if quick else 60.0)
    args.out = args.out or os.path.join(ROOT, "build/bench-quick" if quick else "docs/benchmarks")
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or not os.path.isdir("/proc/self/task"):
            p.error("--pin needs Linux and two CPUs")
        args.pin = {"work": cpus[-1], "tool": cpus[0]}
    else:
        args.pin = None
    return args


def micro_specs(level: str, memory_seconds: float) -> list[dict[str, Any]]:
    """The micro-benchmark runs for ``level`` ("quick" or "full")."""
    quick = level == "quick"
    specs: list[dict[str, Any]] = [
        {"micro": "latency", "repeat": 10 if quick else 30, "busy_repeat": 2 if quick else 5}
    ]
    depths = (1, 30, 300) if quick else (1, 10, 30, 100, 300)
    rep, work = (5, 1_000_000) if quick else (15, 1_500_000)
    for d in depths:
        specs.append(
            {
                "micro": "sample_cost",
                "depth": d,
                "threads": 1,
                "mode": "cpu",
                "repeat": rep,
                "work": work,
            }
        )
    for n in (16,) if quick else (1, 4, 16):
        for mode in ("cpu", "wall"):
            specs.append(
                {
                    "micro": "sample_cost",
                    "depth": 30,
                    "threads": n,
                    "mode": mode,
                    "repeat": rep,
                    "work": work,
                }
            )
    specs.append({"micro": "memory", "seconds": memory_seconds, "workload": "richards"})
    return specs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    t_start = time.perf_counter()
    command = "python benchmarks/run.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    os.makedirs(args.out, exist_ok=True)
    chosen = [configs.BY_NAME[n] for n in args.configs]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pysampler-bench-") as tmp:
        cfg_info = []
        for c in chosen:
            why = configs.unavailable(c, tmp)
            cfg_info.append(
                {**c.__dict__, "env": dict(c.env), "available": why is None, "reason": why}
            )
            print(
                f"config {c.name:26s} {'ok' if why is None else 'UNAVAILABLE: ' + why}", flush=True
            )
        runnable = [c for c, i in zip(chosen, cfg_info) if i["available"]]

        wl_info: dict[str, dict[str, Any]] = {}
        for w in args.workloads:
            cal = run_child(
                {"workload": w, "calibrate": True, "seconds": args.seconds, "pin": args.pin},
                configs.BY_NAME["none"],
                tmp,
                timeout=120,
            )
            wl_info[w] = cal
            print(
                f"workload {w:16s} {cal.get('loops')} loops, {cal.get('per_loop_s', 0):.4f} s/loop "
                f"{cal.get('error', '')}",
                flush=True,
            )

        runs: list[dict[str, Any]] = []
        for rep in range(args.reps):
            for wi, w in enumerate(args.workloads):
                if "loops" not in wl_info[w]:
                    continue
                shift = (rep + wi) % len(runnable)
                for c in runnable[shift:] + runnable[:shift]:
                    spec = {"workload": w, "loops": wl_info[w]["loops"], "pin": args.pin}
                    r = run_child(spec, c, tmp, timeout=60 + 30 * args.seconds)
                    runs.append({"workload": w, "config": c.name, "rep": rep, **r})
                    if "error" in r:
                        print(f"  {w} {c.name} rep {rep}: {r['error']}", flush=True)
            print(
                f"rep {rep + 1}/{args.reps} done, {time.perf_counter() - t_start:.0f} s, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )

        micro: dict[str, Any] = {}
        if args.micro != "none":
            for spec in micro_specs(args.micro, args.memory_seconds):
                r = run_child(
                    spec,
                    configs.BY_NAME["none"],
                    tmp,
                    timeout=120 + 3 * args.memory_seconds,
                    base_env={} if spec["micro"] == "latency" else CHILD_ENV,
                )
                r["spec"] = spec
                micro.setdefault(spec["micro"], []).append(r)
                print(
                    f"micro {spec['micro']} {spec.get('depth', '')} {spec.get('threads', '')} "
                    f"{spec.get('mode', '')} {r.get('error', 'ok')}",
                    flush=True,
                )

    data: dict[str, Any] = {
        "meta": {
            "command": command,
            "quick": args.quick,
            "reps": args.reps,
            "seconds": args.seconds,
            "python": sys.version,
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "started_unix": started,
            "duration_s": time.perf_counter() - t_start,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "versions": _versions(),
            "pin": args.pin,
        },
        "configs": cfg_info,
        "workloads": wl_info,
        "runs": runs,
        "micro": micro,
    }
    report.analyse(data)
    paths = report.write(data, args.out, chart=not args.no_chart)
    for p in paths:
        print(f"wrote {os.path.relpath(p, ROOT) if p.startswith(ROOT) else p}")
    print(report.headline(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
