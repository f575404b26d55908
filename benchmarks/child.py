"""One measured run, in a fresh process: ``python child.py SPEC_JSON``.

The spec names a workload, a configuration and a loop count (or asks to
calibrate the loop count, or to run one of the micro-benchmarks in
``micro.py``). The child builds the workload body first, then starts the
in-process profiler (if any), times the body alone, stops the profiler, and
writes what it measured as JSON to ``spec["result"]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads


def _cpu_seconds() -> float:
    """CPU time of this whole process: every thread, native ones included
    (CLOCK_PROCESS_CPUTIME_ID, nanosecond resolution)."""
    return time.process_time()


def _profiler(config: dict[str, Any], outdir: str) -> tuple[Callable[[], None], Callable[[], Any]]:
    """(start, stop) for an in-process configuration; stop returns facts to record."""
    kind, name = config["kind"], config["name"]
    if kind in ("none", "external"):
        return (lambda: None), (lambda: None)
    if kind == "import":
        # what a program that imports pysampler but is not profiling holds
        from pysampler import start, stop  # noqa: F401

        return (lambda: None), (lambda: None)
    if kind == "pysampler":
        import pysampler

        def stop_pysampler() -> dict[str, Any]:
            prof = pysampler.stop()
            meta = prof.metadata
            return {
                "hz_requested": meta.hz_requested,
                "hz_delivered": meta.hz_delivered,
                "sampling_events": meta.sampling_events,
                "served_in_place": meta.served_in_place,
                "served_by_timer": meta.served_by_timer,
                "missed_ticks": meta.missed_ticks,
                "dropped_samples": meta.dropped_samples,
                "samples": prof.sample_count,
                "duration_s": meta.duration,
            }

        return (lambda: pysampler.start(hz=config["hz"], mode=config["mode"])), stop_pysampler
    if name == "pyinstrument":
        from pyinstrument import Profiler

        pi = Profiler()
        return pi.start, pi.stop
    if name == "yappi":
        import yappi

        yappi.set_clock_type("cpu")
        return yappi.start, yappi.stop
    if name == "cProfile":
        import cProfile

        cp = cProfile.Profile()
        return cp.enable, cp.disable
    if name == "pyroscope-io":
        import pyroscope

        def start_pyroscope() -> None:
            # a closed local port: the agent samples and drops its uploads
            pyroscope.configure(
                application_name="bench",
                server_address="http://127.0.0.1:9",
                sample_rate=100,
                upload_interval=60,
            )

        return start_pyroscope, pyroscope.shutdown
    if name == "ddtrace":
        from ddtrace.profiling import Profiler as DDProfiler

        dd = DDProfiler()
        return dd.start, lambda: dd.stop(flush=True)
    raise ValueError(f"unknown in-process configuration {name!r}")


def _native_threads() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def _pin_started(
    start: Callable[[], None], tool_cpu: int, moved: list[list[int]]
) -> Callable[[], None]:
    """``start`` that moves the threads it starts (the profiler's own: pysampler's
    timer and writer, pyroscope-io's agent, ddtrace's collectors) to ``tool_cpu``,
    away from the program's, which stay where ``main`` pinned them. Appends the
    CPUs each moved thread may then run on to ``moved``."""

    def pinned() -> None:
        before = _native_threads()
        start()
        for tid in _native_threads() - before:
            with contextlib.suppress(OSError):  # already gone
                os.sched_setaffinity(tid, {tool_cpu})
                moved.append(sorted(os.sched_getaffinity(tid)))

    return pinned


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``spec["loops"]`` loops of the workload under the configuration."""
    body = workloads.load(spec["workload"])
    start, stop = _profiler(spec["config"], spec["outdir"])
    moved: list[list[int]] = []
    if spec.get("pin"):
        start = _pin_started(start, spec["pin"]["tool"], moved)
    t0 = time.perf_counter()
    start()
    t1 = time.perf_counter()
    cpu0 = _cpu_seconds()
    body(spec["loops"])
    t2 = time.perf_counter()
    cpu1 = _cpu_seconds()
    info = stop()
    t3 = time.perf_counter()
    return {
        "wall_s": t2 - t1,
        "cpu_s": cpu1 - cpu0,
        "start_s": t1 - t0,
        "stop_s": t3 - t2,
        "profiler": info if isinstance(info, dict) else None,
        **(
            {"pinned": {"program": sorted(os.sched_getaffinity(0)), "profiler_threads": moved}}
            if spec.get("pin")
            else {}
        ),
    }


def calibrate(spec: dict[str, Any]) -> dict[str, Any]:
    """Loops of the workload that take about ``spec["seconds"]`` unprofiled."""
    body = workloads.load(spec["workload"])
    body(1)  # warm: imports, caches, specialisation
    loops = 1
    while True:
        t0 = time.perf_counter()
        body(loops)
        took = time.perf_counter() - t0
        if took >= 0.05 or loops >= 1 << 20:
            break
        loops *= 4
    per_loop = took / loops
    return {"per_loop_s": per_loop, "loops": max(1, round(spec["seconds"] / per_loop))}


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("pin"):
        # this thread, and every thread it starts from now on (the workload's),
        # on the program's CPU (--pin in run.py)
        os.sched_setaffinity(0, {spec["pin"]["work"]})
    if spec.get("micro"):
        import micro

        out: dict[str, Any] = micro.run(spec)
    elif spec.get("calibrate"):
        out = calibrate(spec)
    else:
        out = measure(spec)
    out["process_cpu_s"] = _cpu_seconds()
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(spec["result"], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
