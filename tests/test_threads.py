"""Threaded programs: every thread sampled at the full rate without GIL
hand-offs (3.11+: the timer reads stacks itself), and CPU put where it was
spent, checked against an independently measured truth (tests/threaded.py)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import pysampler
import threaded
from helpers import (
    EMULATED,
    EMULATION_SLOWDOWN,
    function_share,
    run_python,
    scaled,
    thread_value,
)
from workloads import running_threads, spin_cpu

READER = sys.version_info >= (3, 11)
needs_reader = pytest.mark.skipif(not READER, reason="3.9/3.10 keep the GIL-holding path")


def _join_busy_workers(n: int, hz: int, seconds: float = 1.2) -> pysampler.Metadata:
    workers = [
        threading.Thread(target=spin_cpu, args=(seconds / n,), name=f"busy-{i}") for i in range(n)
    ]
    with pysampler.profile(hz=hz, mode="cpu") as p:
        for w in workers:
            w.start()
        for w in workers:
            w.join()  # the main thread blocks in C the whole time
    return p.profile.metadata


@needs_reader
@pytest.mark.parametrize("n", [4, 16])
@pytest.mark.parametrize("hz", [100, 1000])
def test_busy_workers_with_main_in_join_get_every_tick(n: int, hz: int) -> None:
    m = _join_busy_workers(n, hz)
    # every tick becomes a sampling event, none waits for the GIL...
    assert m.sampling_events >= 0.9 * m.ticks, m
    assert m.served_in_place == 0, m  # ...and none runs on a program thread
    # the timer keeps its schedule unless the OS did not run it on time
    # (an overloaded machine shows up as missed ticks)
    if m.missed_ticks < 0.05 * m.ticks:
        assert m.hz_delivered >= 0.9 * hz, m


@needs_reader
def test_busy_main_thread_and_busy_workers_get_every_tick() -> None:
    with (
        running_threads({f"busy-{i}": _spin_until for i in range(3)}),
        pysampler.profile(hz=1000, mode="cpu") as p,
    ):
        spin_cpu(0.4)
    m = p.profile.metadata
    assert m.sampling_events >= 0.9 * m.ticks, m
    names = {t.name for t in p.profile.threads}
    assert {"MainThread", "busy-0", "busy-1", "busy-2"} <= names


def _forced_switches() -> int:
    """Times the OS took the CPU from the calling thread (Linux)."""
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith("nonvoluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no nonvoluntary_ctxt_switches in /proc/thread-self/status")


def _busy_thread_forced_switches(where: str, seconds: float) -> tuple[int, int, float]:
    """One thread burns CPU under a 1 kHz session: a worker with the main
    thread in join, or the main thread itself. How often the OS took the CPU
    from it, the session's ticks, and the CPU pressure over the window (-1:
    not known)."""
    forced: list[int] = []

    def work() -> None:
        before = _forced_switches()
        spin_cpu(seconds)
        forced.append(_forced_switches() - before)

    stall0, t0 = threaded.cpu_stall_us(), time.monotonic()
    with pysampler.profile(hz=1000, mode="cpu") as p:
        if where == "main":
            work()
        else:
            worker = threading.Thread(target=work, name="busy")
            worker.start()
            worker.join()
    stall1, wall = threaded.cpu_stall_us(), time.monotonic() - t0
    pressure = -1.0
    if stall0 is not None and stall1 is not None:
        pressure = (stall1 - stall0) / 1e6 / wall
    return forced[0], p.profile.metadata.ticks, pressure


def _timer_can_move() -> bool:
    """placement.h works here: Linux with glibc 2.35+ (rseq published) on
    x86-64 or ARM64, not under instruction emulation (no rseq there)."""
    libc, version = platform.libc_ver()
    numbers = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    return (
        libc == "glibc"
        and numbers >= (2, 35)
        and platform.machine() in ("x86_64", "aarch64")
        and not EMULATED
    )


#: CPU pressure up to which a CPU is taken to be free for the timer
CPU_FREE = 0.05


@needs_reader
@pytest.mark.skipif(
    not os.path.exists("/proc/thread-self/status") or len(os.sched_getaffinity(0)) < 2,
    reason="Linux with two CPUs or more",
)
@pytest.mark.skipif(not _timer_can_move(), reason="needs glibc 2.35+ (rseq), not emulated")
@pytest.mark.parametrize("where", ["worker", "main"])
def test_timer_leaves_the_cpu_of_the_thread_running_python(where: str) -> None:
    # One busy thread, a CPU free for the timer at every tick. A real-time
    # timer (as root) woke on the CPU it last ran on and took it from the
    # thread there: a worker started after the timer (main in join) landed
    # next to it and was preempted at every tick, 1.00 forced switches per
    # tick, each one stopping all Python code; placement.h moves the timer
    # off the GIL holder's CPU. (A busy main thread was spared before too:
    # the timer starts on another CPU than the thread starting it.) Without
    # real-time priority (not root) the OS already places the timer on the
    # free CPU, and this holds too. A window in which another job took the
    # free CPU (CPU pressure over CPU_FREE) says nothing: measured again,
    # skipped if all did.
    rows = []
    for _ in range(3):
        forced, ticks, pressure = _busy_thread_forced_switches(where, scaled(0.6))
        rows.append(f"forced {forced} in {ticks} ticks, CPU pressure {pressure:.2f}")
        if 0 <= pressure <= CPU_FREE:
            assert forced <= 0.1 * ticks, rows
            return
    pytest.skip("no CPU was free (or no PSI) in any window: " + "; ".join(rows))


def _churn_checking_the_eval_breaker(loops: int) -> tuple[int, int]:
    """threads8's shape: 8 short busy threads at a time, the main thread in
    ``join``. Returns (checks that found the eval breaker set, checks)."""
    from pysampler import _sampler

    counts = [0, 0]

    def work() -> None:
        seen = checks = 0
        for i in range(40_000):
            if i % 50 == 0:
                checks += 1
                seen += _sampler.eval_breaker_set()
        counts[0] += seen
        counts[1] += checks

    for loop in range(loops):
        workers = [threading.Thread(target=work, name=f"churn-{loop}-{i}") for i in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return counts[0], counts[1]


@needs_reader
def test_pin_requests_leave_the_workers_eval_breaker_alone() -> None:
    # Every new thread (and new code) asks for a pinning step, a pending
    # call. 3.11 serves it on the main thread only, and its eval breaker is
    # one per interpreter: set while a worker ran (main in join), every
    # safe point of that worker took the slow path until the GIL changed
    # hands: the breaker was found set at 56-81% of the workers' checks at
    # 1 kHz (81% with 8 threads at a time). It is set only while the main
    # thread holds the GIL now.
    _churn_checking_the_eval_breaker(1)
    with pysampler.profile(hz=1000, mode="cpu") as p:
        seen, checks = _churn_checking_the_eval_breaker(40)
    assert seen <= 0.02 * checks, (seen, checks)
    # the workers' CPU is still all there (short-lived threads are counted)
    totals = p.profile.thread_totals()
    threads = p.profile.threads
    churned = sum(v for i, (_, v) in totals.items() if threads[i].name != "MainThread")
    assert churned >= 0.8 * sum(v for _, v in totals.values()), (churned, totals)


def _leaf(x: int) -> int:
    return x + 1


def _wide(x: int) -> int:
    a = b = c = d = e = f = g = h = i = j = k = m = n = o = p = q = r = s = t = u = x
    first = _leaf(a + b + c + d + e + f + g + h + i + j)
    return first + _leaf(k + m + n + o + p + q + r + s + t + u)


def _deep(n: int, x: int) -> int:
    if n == 0:
        return _wide(x)
    y0 = y1 = y2 = x
    return _deep(n - 1, y0) + _leaf(y1) + y2


def _calls_of_many_frame_sizes(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for k in range(6):
            _deep(k, k)
            _wide(k)


@needs_reader
@pytest.mark.parametrize("threads", [0, 4])
@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_running_threads_in_call_heavy_code_keep_their_samples(threads: int, mode: str) -> None:
    # The running thread's stack is read while it runs: calls and returns
    # of frames of different sizes leave a frame's place holding another
    # frame's locals a moment later. The frame pointer and the data stack
    # were copied one after the other, and disagreed: 30-34% of these
    # samples were dropped (richards 13%, raytrace in threads 25%). One copy
    # of both, and a retry of a walk that failed, keep them.
    seconds = scaled(0.8)
    workers = [
        threading.Thread(target=_calls_of_many_frame_sizes, args=(seconds,), name=f"calls-{i}")
        for i in range(threads)
    ]
    with pysampler.profile(hz=1000, mode=mode) as p:
        if not workers:
            _calls_of_many_frame_sizes(seconds)
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    m = p.profile.metadata
    assert m.sampling_events > 100, m
    assert m.dropped_samples <= 0.03 * m.sampling_events, m
    # and what was kept is real: the work's own stacks, whole
    for name in [w.name for w in workers] or [None]:
        share = function_share(p.profile, "_calls_of_many_frame_sizes", name, self_only=False)
        assert share > 0.9, (name, share)


def _spin_until(stop: threading.Event) -> None:
    while not stop.is_set():
        spin_cpu(0.002)


@pytest.mark.parametrize("case", list(threaded.CASES))
def test_cpu_goes_where_it_was_spent(case: str) -> None:
    if not READER:
        pytest.skip("3.9/3.10 attribute CPU at GIL hand-offs (documented)")
    if case in ("flask", "waitress"):
        pytest.importorskip("flask" if case == "flask" else "waitress")
    # The figures hold on a machine with a core for every runnable thread.
    # Where other jobs oversubscribe it, the OS preempts GIL holders and
    # the holder samples are biased (README, "What it can still get wrong"),
    # a few points already at a CPU pressure of 0.2 (a CI run: waitress's
    # heavy_handler 0.56 for a truth of 0.50 at 0.24, Flask's blocking lines
    # 0.056 at 0.17). So a missing window is measured again, up to three:
    # a profiler that is wrong misses in every one and fails, naming them;
    # the case is skipped, naming the pressure, only if every window was
    # oversubscribed (over OVERSUBSCRIBED).
    misses, unpressured = [], []
    for _ in range(3):
        out = threaded.run_case(case, hz=500, seconds=2.0)
        miss = _attribution_miss(out)
        if miss is None:
            return
        if out.cpu_pressure <= OVERSUBSCRIBED:  # (-1: not known)
            unpressured.append(miss)
        misses.append(miss)
    assert not unpressured, "every window missed:\n" + "\n".join(misses)
    pytest.skip("every window was oversubscribed:\n" + "\n".join(misses))


#: CPU pressure (share of the window in which a runnable task waited for a
#: core) above which the machine, not the profiler, decides the shares
OVERSUBSCRIBED = 0.3

#: How far a CPU-heavy function's share may be from its measured truth.
#: Under emulation, 10 points: measured on the arm64 cell (no CPU pressure,
#: at 500 Hz and at 100 Hz alike), queue_pool's queue_job came out 0.02 to
#: 0.12 over its truth (0.00-0.04 on x86-64 hardware). Much of it is the
#: denominator: there the profile's total falls a few percent short of the
#: process's CPU (emulated queue locks and GIL hand-offs), short on the
#: other functions; in two windows looked at closely, queue_job's CPU in
#: seconds was within 2% of its truth, its share 2-7 points over.
SHARE_SLACK = 0.10 if EMULATED else 0.05

#: CPU share that lines making blocking calls may hold beyond their
#: measured truth (see _attribution_miss)
BLOCKING_SLACK = 0.10 if EMULATED else 0.05


def _attribution_miss(out: threaded.Outcome) -> str | None:
    """What of the requirement ``out`` misses, or None."""
    report = out.row()
    # the profile holds the CPU the program used in the window
    if abs(out.total_ratio - 1) > 0.10:
        return "total: " + report
    # each CPU-heavy function gets its measured share; a thread's target
    # may also hold the thread's start-up, which its first sample carries
    for fn, (prof_share, truth) in out.shares.items():
        if not truth - SHARE_SLACK <= prof_share <= truth + out.startup.get(fn, 0) + SHARE_SLACK:
            return "share: " + report + f" (start-up {out.startup.get(fn, 0):.3f})"
    # and blocking calls (select, waits, sleeps, socket writes) almost
    # nothing: what they really used (waitress's select) plus 5 points.
    # Under emulation the system call and the GIL hand-off around each
    # blocking call are emulated code (qemu-user's system call path, glibc's
    # locks), far dearer next to the program's own work than on hardware:
    # on the arm64 cell those lines hold 6-8% of the servers' CPU (3.5-4% on
    # x86-64 hardware), so 10 points there. Still almost nothing: time
    # spent blocked, charged as CPU, would take tens of points
    if out.blocking >= BLOCKING_SLACK + out.blocking_truth:
        return "blocking: " + report
    return None


@needs_reader
def test_short_lived_threads_are_counted() -> None:
    out = threaded.run_case("short_threads", hz=100, seconds=2.0)
    # 300 threads of 4 ms CPU, one after another, at 100 Hz: a thread is
    # the GIL holder at ~0.4 ticks on average, each worth 10 ms
    share, truth = out.shares["short_job"]
    # none of their CPU is lost: the profile's share is the measured one
    # (a thread's first sample also holds its start-up, so a few points more)
    assert share > truth - 0.05, out.row()
    # which, on hardware, is most of the program's CPU. Not under emulation:
    # starting and ending a thread is far dearer there (qemu-user sets up
    # and tears down an emulated CPU for each), the measured share ~0.6
    if not EMULATED:
        assert share > 0.8, out.row()
    assert abs(out.total_ratio - 1) <= 0.10, out.row()
    assert out.threads_seen > 50, out.row()


def test_thread_that_only_sleeps_records_nothing_in_cpu_mode() -> None:
    stop = threading.Event()

    def sleeper() -> None:
        stop.wait()  # blocked the whole session: no CPU at all

    with running_threads({"sleeper": lambda s: sleeper()}):
        time.sleep(0.05)  # it is blocked before the session starts
        try:
            with pysampler.profile(hz=1000, mode="cpu") as p:
                spin_cpu(0.3)
        finally:
            stop.set()
    n, ns = thread_value(p.profile, "sleeper")
    assert (n, ns) == (0, 0), (n, ns)
    assert thread_value(p.profile, "MainThread")[1] > 0.2e9


def worker_alpha(seconds: float) -> int:
    return spin_cpu(seconds)


def worker_beta(seconds: float) -> int:
    return spin_cpu(seconds)


#: more threads than the sampler walks the whole thread list for at every
#: tick (src/_sampler/core.h, PS_QUIET_MIN_THREADS): while no other thread
#: takes the GIL, a tick then reads the holder's thread state alone
MANY_IDLE = 64


def _idle(n: int) -> dict[str, Callable[[threading.Event], object]]:
    return {f"idle-{i}": (lambda stop: stop.wait()) for i in range(n)}


@pytest.mark.parametrize("idle", [0, MANY_IDLE])
@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_workers_that_start_and_exit_during_session_have_their_own_stacks(
    mode: str, idle: int
) -> None:
    with running_threads(_idle(idle)), pysampler.profile(hz=1000, mode=mode) as p:
        for round_ in range(6):
            ts = [
                threading.Thread(target=worker_alpha, args=(0.02,), name=f"alpha-{round_}"),
                threading.Thread(target=worker_beta, args=(0.02,), name=f"beta-{round_}"),
            ]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
    prof = p.profile
    seen = 0
    for i, node in enumerate(prof.stack.tolist()):
        name = prof.threads[int(prof.thread[i])].name
        funcs = {prof.frames[f].function for f in prof.stack_of(node)}
        if name.startswith("alpha"):
            assert "worker_beta" not in funcs, (name, funcs)
            seen += "worker_alpha" in funcs
        elif name.startswith("beta"):
            assert "worker_alpha" not in funcs, (name, funcs)
            seen += "worker_beta" in funcs
    assert seen > 20
    names = {t.name for t in prof.threads}
    assert sum(n.startswith(("alpha", "beta")) for n in names) >= 8, names


def test_reused_thread_idents_stay_separate_threads() -> None:
    # glibc hands a joined thread's pthread_t (the ident) to the next thread:
    # six sequential threads share one or two idents, and must still be six
    with pysampler.profile(hz=1000, mode="wall") as p:
        for i in range(6):
            t = threading.Thread(target=spin_cpu, args=(0.03,), name=f"seq-{i}")
            t.start()
            t.join()
    names = [t.name for t in p.profile.threads if t.name.startswith("seq-")]
    assert sorted(names) == [f"seq-{i}" for i in range(6)], names
    for i in range(6):
        assert thread_value(p.profile, f"seq-{i}")[0] > 0


@needs_reader
@pytest.mark.parametrize("idle", [0, MANY_IDLE])
def test_gil_released_c_work_is_attributed_to_its_call(idle: int) -> None:
    import hashlib

    # ~100 ms a call with the GIL released; under emulation (10x slower) a
    # tenth as much, or the call running when the session ends would go on
    # for a second more, counted in `used` but not in the profile
    data = b"x" * ((32 << 20) // (EMULATION_SLOWDOWN if EMULATED else 1))
    used = []

    def hashing(stop: threading.Event) -> None:
        t0 = time.thread_time()
        while not stop.is_set():
            hashlib.sha256(data).digest()  # ~100 ms with the GIL released
        used.append(time.thread_time() - t0)

    targets = {"hasher": hashing, **_idle(idle)}
    with running_threads(targets), pysampler.profile(hz=500, mode="cpu") as p:
        spin_cpu(1.0)
    _, hasher_ns = thread_value(p.profile, "hasher")
    # the hasher's CPU is in the profile, under its own call, although it
    # never held the GIL at a tick while hashing
    assert hasher_ns > 0.5 * used[0] * 1e9, (hasher_ns, used)
    assert hasher_ns < 1.2 * used[0] * 1e9, (hasher_ns, used)
    assert (
        function_share(
            p.profile,
            "test_gil_released_c_work_is_attributed_to_its_call.<locals>.hashing",
            thread="hasher",
            self_only=False,
        )
        > 0.95
    )


@needs_reader
def test_idle_threads_extend_their_rows_in_wall_mode() -> None:
    stop = threading.Event()
    idle = {f"idle-{i}": (lambda s: s.wait()) for i in range(50)}
    with running_threads(idle):
        try:
            with pysampler.profile(hz=1000, mode="wall") as p:
                spin_cpu(0.4)
        finally:
            stop.set()
    prof = p.profile
    ticks = prof.metadata.sampling_events
    idle_rows = [
        i
        for i in range(len(prof.stack))
        if prof.threads[int(prof.thread[i])].name.startswith("idle-")
    ]
    # one row (or a few) per idle thread, not one per thread per tick
    assert len(idle_rows) <= 3 * 50, (len(idle_rows), ticks)
    # yet every thread still gets the whole wall time
    for name in ("idle-0", "idle-49"):
        _, ns = thread_value(prof, name)
        assert ns >= 0.9 * (prof.metadata.duration * 1e9) * 0.9, (name, ns)


def _wait_here(stop: threading.Event) -> None:
    stop.wait(0.02)


def _wait_there(stop: threading.Event) -> None:
    stop.wait(0.02)


@needs_reader
def test_many_idle_threads_each_get_every_tick_and_a_moving_thread_is_seen_moving() -> None:
    def moving(stop: threading.Event) -> None:
        while not stop.is_set():
            _wait_here(stop)
            _wait_there(stop)

    targets = {**_idle(MANY_IDLE), "moving": moving}
    with running_threads(targets), pysampler.profile(hz=1000, mode="wall") as p:
        spin_cpu(0.6)
    prof = p.profile
    events = prof.metadata.sampling_events
    for name in ("idle-0", f"idle-{MANY_IDLE - 1}"):
        count, ns = thread_value(prof, name)
        # credited in bulk on the ticks that read only the GIL holder, yet
        # exactly one sample per sampling event, weighing the session
        assert count == events, (name, count, events)
        assert ns == pytest.approx(prof.metadata.duration * 1e9, rel=0.05), (name, ns)
    assert thread_value(prof, "moving")[0] == events
    here = function_share(prof, "_wait_here", thread="moving", self_only=False)
    there = function_share(prof, "_wait_there", thread="moving", self_only=False)
    assert 0.3 < here < 0.7 and 0.3 < there < 0.7 and here + there > 0.95, (here, there)


def test_two_thousand_start_stop_cycles_while_threads_churn() -> None:
    # Under emulation (qemu-user) two threads churn, not eight: each thread
    # that starts costs the emulator an emulated CPU and memory it keeps
    # (measured on the arm64 cell: eight churners alone, no profiler, grow
    # the process's RSS by ~100 MB a second, and 2,000 cycles took 9 of the
    # 10 minutes allowed). And the memory figure is then what the program
    # holds, not the process's peak RSS, which the emulator's own grows:
    # glibc's malloc in use (mallinfo2: our tables, Python's large blocks)
    # plus Python's small-object blocks, in KiB at 64 bytes a block.
    out = run_python(
        """
        import ctypes, os, sys, threading, resource, pysampler
        from helpers import EMULATED
        from workloads import spin_cpu
        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                "fsmblks", "uordblks", "fordblks", "keepcost")]
        def memory_kib():
            if not EMULATED:
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            libc = ctypes.CDLL(None)
            libc.mallinfo2.restype = MallInfo2
            m = libc.mallinfo2()
            return (m.uordblks + m.hblkhd + 64 * sys.getallocatedblocks()) // 1024
        stop = threading.Event()
        def churn():
            while not stop.is_set():
                t = threading.Thread(target=spin_cpu, args=(0.0002,))
                t.start(); t.join()
        # one session first: reading its columns may start numpy's pool
        pysampler.start(hz=5000); p = pysampler.stop(); p.stack.tolist()
        tasks_before = len(os.listdir("/proc/self/task"))
        churners = [threading.Thread(target=churn) for _ in range(2 if EMULATED else 8)]
        for c in churners: c.start()
        bad = 0
        rss = []
        try:
            for i in range(2_000):
                pysampler.start(hz=5000, mode="wall" if i % 2 else "cpu")
                p = pysampler.stop()
                n = len(p.stack_parent)
                for s, t in zip(p.stack.tolist(), p.thread.tolist()):
                    if not (0 <= s < n and 0 <= t < len(p.threads)):
                        bad += 1
                for f in p.frames:
                    if not f.function:
                        bad += 1
                if i % 400 == 0:
                    rss.append(memory_kib())
        finally:
            stop.set()
            for c in churners: c.join()
        import time
        deadline = time.monotonic() + 5  # exiting threads leave the list a moment later
        while len(os.listdir("/proc/self/task")) > tasks_before and time.monotonic() < deadline:
            time.sleep(0.01)
        print(bad, rss[1], rss[-1], tasks_before, len(os.listdir("/proc/self/task")))
        """,
        timeout=1800 if EMULATED else 600,
    )
    bad, rss_early, rss_late, tasks_before, tasks_after = (int(x) for x in out.stdout.split())
    assert bad == 0
    # KiB over 1,600 cycles: under 5 KiB a cycle, so nothing leaks per cycle
    assert rss_late - rss_early < 8_000, (rss_early, rss_late)
    assert tasks_after == tasks_before, (tasks_before, tasks_after)  # no native thread left


def _embedding_flags() -> list[str] | None:
    config = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}-config"
    )
    cc = shutil.which("cc") or shutil.which("gcc")
    if not config.exists() or cc is None or sys.platform == "win32":
        return None
    flags = subprocess.run(
        [str(config), "--cflags", "--ldflags", "--embed"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [cc, *flags.stdout.split()] if flags.returncode == 0 else None


EMBED_C = r"""
#include <Python.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    int i;
    for (i = 0; i < 2; i++) {
        Py_Initialize();
        if (PyRun_SimpleString(argv[1]) != 0) return 2;
        if (Py_FinalizeEx() < 0) return 3;
        printf("round %d done\n", i);
        fflush(stdout);
    }
    return 0;
}
"""

EMBED_PY = """
import atexit, os, time
def late():
    import pysampler
    try:
        pysampler.start(hz=1000)
        print("started late", flush=True)
    except RuntimeError as e:
        print("refused:", e, flush=True)
if os.environ.get("PYSAMPLER_TEST_ROUND") is None:
    os.environ["PYSAMPLER_TEST_ROUND"] = "2"
    atexit.register(late)   # runs after pysampler's own atexit hook
    import pysampler
    from workloads import spin_cpu
    pysampler.start(hz=1000)
    spin_cpu(0.05)
else:
    t0 = time.time()
    while time.time() - t0 < 0.5:
        pass   # a timer left from the first interpreter would crash this
    print("second interpreter ran", flush=True)
"""


def test_no_sampler_outlives_an_embedded_interpreter(tmp_path: Path) -> None:
    cmd = _embedding_flags()
    if cmd is None:
        pytest.skip("no C compiler or pythonX.Y-config to build an embedding program")
    src = tmp_path / "embed.c"
    src.write_text(EMBED_C)
    exe = tmp_path / "embed"
    cflags, ldflags = cmd[1:], []
    build = subprocess.run(
        [cmd[0], str(src), "-o", str(exe), *cflags, *ldflags], capture_output=True, text=True
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build an embedding program: {build.stderr[-300:]}")
    here = os.path.dirname(__file__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, *[p for p in sys.path if p]]))
    env.pop("PYSAMPLER_TEST_ROUND", None)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        env["LD_LIBRARY_PATH"] = libdir + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    proc = subprocess.run(
        [str(exe), EMBED_PY], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "refused: the interpreter is shutting down" in proc.stdout
    assert "second interpreter ran" in proc.stdout and "round 1 done" in proc.stdout
