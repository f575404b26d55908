"""The profiled program comes first: fork, exit, thread churn and odd
shapes of code neither crash, hang nor change it. Each case runs in a
subprocess so that a crash is a failing test with output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import run_python


def run(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_python(code, timeout)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_while_profiling_child_runs_without_sampler() -> None:
    out = run(
        """
        import os, sys
        import pysampler
        from pysampler import _sampler
        from workloads import spin_cpu
        pysampler.start(hz=1000)
        spin_cpu(0.1)
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                ok = not pysampler.is_running() and not _sampler.is_running()
                spin_cpu(0.1)
                # the child may profile itself
                pysampler.start(hz=500)
                spin_cpu(0.1)
                p = pysampler.stop()
                os._exit(0 if ok and p.sample_count > 10 else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
        after = _sampler.monotonic_ns()
        spin_cpu(0.2)
        p = pysampler.stop()
        # the parent kept profiling after its forks
        assert (p.time_ns > after).sum() >= 50, p.metadata
        print("ok", p.sample_count)
        """
    )
    assert out.stdout.startswith("ok")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_multiprocessing_fork_pool_while_profiling() -> None:
    run(
        """
        import multiprocessing as mp
        import pysampler
        from workloads import spin_cpu
        pysampler.start(hz=1000)
        with mp.get_context("fork").Pool(2) as pool:
            assert sum(pool.map(spin_cpu, [0.05] * 8)) > 0
        pysampler.stop()
        """
    )


def test_exit_while_profiling_neither_crashes_nor_hangs() -> None:
    run(
        """
        import threading, pysampler
        from workloads import spin_cpu
        def forever():
            while True:
                spin_cpu(0.01)
        threading.Thread(target=forever, daemon=True).start()
        pysampler.start(hz=1000, mode="wall")
        spin_cpu(0.1)
        print("bye")
        """,
        timeout=30,
    )


def test_sys_exit_from_profiled_code_keeps_exit_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import pysampler, sys; pysampler.start(hz=1000); sys.exit(7)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 7, proc.stderr
    assert proc.stderr == ""


def test_thread_churn_during_sampling() -> None:
    run(
        """
        import threading, pysampler
        from workloads import spin_cpu
        pysampler.start(hz=2000, mode="wall")
        for _ in range(300):
            ts = [threading.Thread(target=spin_cpu, args=(0.0005,)) for _ in range(4)]
            for t in ts: t.start()
            for t in ts: t.join()
        p = pysampler.stop()
        assert p.sample_count > 0
        """
    )


def test_results_of_program_unchanged_under_profiling() -> None:
    run(
        """
        import pysampler, hashlib, json
        def work():
            acc = []
            def gen(n):
                for i in range(n):
                    yield i * i
            for i in range(2000):
                acc.append(sum(gen(i % 50)))
            try:
                raise ValueError("x")
            except ValueError:
                acc.append(-1)
            return hashlib.sha256(json.dumps(acc).encode()).hexdigest()
        plain = work()
        pysampler.start(hz=5000, mode="wall")
        profiled = work()
        pysampler.stop()
        assert plain == profiled
        """
    )


def test_blocked_main_thread_is_sampled_by_timer() -> None:
    out = run(
        """
        import threading, time, pysampler
        from workloads import spin_cpu
        # a busy worker holds the GIL: each timer sample waits for a GIL
        # hand-off (at most the switch interval), so the rate is lower
        t = threading.Thread(target=spin_cpu, args=(1.0,), name="worker")
        pysampler.start(hz=500)
        t.start()
        t.join()   # main thread blocked in C: the timer thread samples
        p = pysampler.stop()
        m = p.metadata
        names = {th.name for th in p.threads}
        assert "worker" in names, names
        assert m.served_by_timer > 50, m
        # nobody holds the GIL: the timer samples at the full rate
        pysampler.start(hz=500, mode="wall")
        time.sleep(1.0)
        q = pysampler.stop()
        print(m.hz_delivered, q.metadata.sampling_events / q.metadata.ticks)
        """
    )
    busy, idle_served = (float(x) for x in out.stdout.split())
    assert busy > 60
    # every tick is served: the timer's schedule, not the main thread, sets the rate
    assert idle_served > 0.8


def test_stop_does_not_leave_eval_breaker_busy() -> None:
    # after stop the program runs at full speed again: no leftover work per
    # bytecode. Compared side by side, generously (a stuck breaker costs 2x+).
    run(
        """
        import time, pysampler
        from workloads import spin_cpu
        def loop():
            t = time.perf_counter(); n = 0
            for i in range(2_000_000): n += i
            return time.perf_counter() - t
        base = min(loop() for _ in range(3))
        for _ in range(20):
            pysampler.start(hz=5000); spin_cpu(0.02); pysampler.stop()
        after = min(loop() for _ in range(3))
        assert after < base * 1.5, (base, after)
        """
    )


def test_start_and_stop_while_threads_are_being_created() -> None:
    # A thread state exists, unbound (ident 0), between threading creating
    # it and the new thread starting; start() reads every thread's CPU
    # clock and must leave such a state alone.
    run(
        """
        import threading, pysampler
        stop = threading.Event()
        def spawner():
            while not stop.is_set():
                ts = [threading.Thread(target=lambda: None) for _ in range(8)]
                for t in ts: t.start()
                for t in ts: t.join()
        spawners = [threading.Thread(target=spawner) for _ in range(2)]
        for s in spawners: s.start()
        try:
            for i in range(300):
                pysampler.start(hz=2000, mode="wall" if i % 2 else "cpu")
                pysampler.stop()
        finally:
            stop.set()
            for s in spawners: s.join()
        """
    )
