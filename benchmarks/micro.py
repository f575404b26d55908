"""pysampler's own costs, each measured in a fresh child process.

- ``latency``: how long ``start()`` and ``stop()`` take (stop includes
  building the Profile), idle and after a second at 1 kHz.
- ``sample_cost``: time per sampling event against stack depth and thread
  count. A fixed amount of pure-Python work is timed with the sampler off
  and on at a high rate, alternately; the difference of the medians divided
  by the number of sampling events is the cost of one event (for all
  threads), which divided by the thread samples it recorded is the cost of
  one thread's stack.
- ``memory``: RSS growth and table sizes of a long 1 kHz CPU-mode profile
  of a busy workload, with a linear fit projected to 10 minutes.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any, Callable

import workloads

#: bytes per row of the native sample table (src/_sampler/tables.h: int32 stack,
#: thread and sample count, int64 time, cpu ns and wall ns)
SAMPLE_ROW_BYTES = 36


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def _at_depth(depth: int, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with ``depth`` more Python frames on the stack."""
    if depth > 0:
        return _at_depth(depth - 1, fn)
    return fn()


def latency(spec: dict[str, Any]) -> dict[str, Any]:
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    import pysampler
    from pysampler import start, stop  # noqa: F401  (names resolve on first use)

    import_s = time.perf_counter() - t0
    import_cpu_s = time.process_time() - c0
    # keep this thread busy for half a second: whatever CPU the process uses
    # beyond this thread's own is other threads' (a library's thread pool
    # spinning after import would show here)
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        _spin(1_000)
    other_threads_s = (time.process_time() - c0) - (time.thread_time() - m0)
    starts: list[float] = []
    stops: list[float] = []
    for _ in range(spec.get("repeat", 20)):
        a = time.perf_counter()
        pysampler.start(hz=100, mode="cpu")
        b = time.perf_counter()
        _spin(20_000)
        c = time.perf_counter()
        pysampler.stop()
        d = time.perf_counter()
        starts.append(b - a)
        stops.append(d - c)
    busy_stops: list[float] = []
    busy_samples: list[int] = []
    for _ in range(spec.get("busy_repeat", 3)):
        pysampler.start(hz=1000, mode="cpu")
        end = time.perf_counter() + spec.get("busy_seconds", 1.0)
        while time.perf_counter() < end:
            _at_depth(20, lambda: _spin(5_000))
        c = time.perf_counter()
        prof = pysampler.stop()
        busy_stops.append(time.perf_counter() - c)
        busy_samples.append(prof.sample_count)
    return {
        "import_s": import_s,
        "import_cpu_s": import_cpu_s,
        "import_other_threads_cpu_s": other_threads_s,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "start_s": starts,
        "stop_s": stops,
        "stop_after_busy_s": busy_stops,
        "busy_samples": busy_samples,
        "busy_seconds": spec.get("busy_seconds", 1.0),
    }


def sample_cost(spec: dict[str, Any]) -> dict[str, Any]:
    import pysampler

    depth, nthreads, mode = spec["depth"], spec["threads"], spec["mode"]
    hz, work, repeat = spec.get("hz", 5000), spec.get("work", 1_500_000), spec.get("repeat", 9)
    release = threading.Event()
    parked = threading.Barrier(nthreads)

    def park() -> None:
        def wait() -> None:
            parked.wait()
            release.wait()

        _at_depth(depth, wait)

    others = [threading.Thread(target=park, daemon=True) for _ in range(nthreads - 1)]
    for t in others:
        t.start()
    parked.wait()
    # per run: (wall s, main thread CPU s, process CPU s)
    off: list[tuple[float, float, float]] = []
    on: list[tuple[float, float, float]] = []
    events: list[int] = []
    samples: list[int] = []

    def timed() -> tuple[float, float, float]:
        w, t, p = time.perf_counter(), time.thread_time(), time.process_time()
        _spin(work)
        return time.perf_counter() - w, time.thread_time() - t, time.process_time() - p

    def alternate() -> None:
        _spin(work)  # warm
        for _ in range(repeat):
            off.append(timed())
            pysampler.start(hz=hz, mode=mode)
            on.append(timed())
            prof = pysampler.stop()
            events.append(prof.metadata.sampling_events)
            samples.append(prof.sample_count)

    try:
        _at_depth(depth, alternate)
    finally:
        release.set()
        for t in others:
            t.join()
    med_events = statistics.median(events)
    med_samples = statistics.median(samples)

    def cost(k: int) -> float | None:
        """µs per sampling event from column ``k``: the fastest of many short
        alternating runs, since interference from other processes only ever
        adds time (and CPU time, through cache and frequency effects)."""
        if not med_events:
            return None
        return (min(r[k] for r in on) - min(r[k] for r in off)) / med_events * 1e6

    per_event = cost(2)
    return {
        "depth": depth,
        "threads": nthreads,
        "mode": mode,
        "hz": hz,
        "off": off,
        "on": on,
        "events": events,
        "samples": samples,
        # process CPU: the main thread's sampling plus the native timer thread
        "per_event_us": per_event,
        "per_event_thread_cpu_us": cost(1),
        "per_event_wall_us": cost(0),
        "per_thread_sample_us": (
            None if per_event is None or not med_samples else per_event * med_events / med_samples
        ),
        "overhead_ratio": min(r[0] for r in on) / min(r[0] for r in off),
        "cpu_overhead_ratio": min(r[2] for r in on) / min(r[2] for r in off),
        "median_overhead_ratio": statistics.median(r[0] for r in on)
        / statistics.median(r[0] for r in off),
    }


def _slope(points: list[tuple[float, int]], seconds: float) -> tuple[float, float]:
    """Least-squares (slope, intercept) of RSS growth against time, skipping
    the first tenth (tables start small and double)."""
    import numpy as np

    fit = [(t, g) for t, g in points if t >= min(1.0, seconds / 10)]
    if len(fit) < 2:
        return 0.0, 0.0
    slope, intercept = np.polyfit([t for t, _ in fit], [g for _, g in fit], 1)
    return float(slope), float(intercept)


def memory(spec: dict[str, Any]) -> dict[str, Any]:
    import pysampler

    body = workloads.load(spec.get("workload", "richards"))
    seconds = spec["seconds"]
    step = max(0.5, seconds / 60)

    def track(t_end: float, base: int) -> list[tuple[float, int]]:
        """Run the body until ``t_end`` seconds, noting RSS growth over ``base``."""
        t0 = time.perf_counter()
        points: list[tuple[float, int]] = []
        next_point = 0.0
        while (now := time.perf_counter() - t0) < t_end:
            if now >= next_point:
                points.append((now, _rss_bytes() - base))
                next_point += step
            body(1)
        points.append((time.perf_counter() - t0, _rss_bytes() - base))
        return points

    track(min(2.0, seconds / 4), 0)  # warm: caches, the allocator's arenas
    # the same workload unprofiled first, so its own drift can be told apart
    control = track(seconds, _rss_bytes())
    base = _rss_bytes()
    pysampler.start(hz=1000, mode="cpu")
    points = track(seconds, base)
    prof = pysampler.stop()
    after_stop = _rss_bytes() - base
    columns = ("stack_parent", "stack_frame", "stack", "thread", "time_ns", "cpu_ns", "wall_ns")
    profile_bytes = sum(len(prof.column(c)) * prof.column(c).itemsize for c in (*columns, "count"))
    slope, intercept = _slope(points, seconds)
    duration = prof.metadata.duration
    samples = len(prof.column("stack"))
    return {
        "workload": spec.get("workload", "richards"),
        "control_rss_growth_bytes": control[-1][1],
        "control_rss_slope_bytes_per_s": _slope(control, seconds)[0],
        "seconds": duration,
        "rss_base_bytes": base,
        "rss_growth_points": points,
        "rss_growth_bytes": points[-1][1],
        "rss_growth_after_stop_bytes": after_stop,
        "rss_slope_bytes_per_s": slope,
        "rss_growth_10min_projected_bytes": intercept + slope * 600,
        "samples": samples,
        "samples_10min_projected": samples / duration * 600,
        "row_bytes": SAMPLE_ROW_BYTES,
        "sample_table_bytes": samples * SAMPLE_ROW_BYTES,
        "sample_table_10min_projected_bytes": samples / duration * 600 * SAMPLE_ROW_BYTES,
        "stack_nodes": len(prof.column("stack_parent")),
        "frames": len(prof.frames),
        "profile_array_bytes": profile_bytes,
        "hz_delivered": prof.metadata.hz_delivered,
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the micro-benchmark ``spec["micro"]``."""
    return {"latency": latency, "sample_cost": sample_cost, "memory": memory}[spec["micro"]](spec)
