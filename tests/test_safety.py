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


# atexit runs its handlers last registered first: one registered before
# pysampler is imported runs after pysampler's own exit hook, one registered
# after runs before it. Between them, the exit hook must have stopped a
# sampler that was live until then, before the interpreter finalizes.
EXIT_PROBES = """
import atexit, os, sys, threading

def native_threads():
    # threads that are not Python threads (the sampler's, a library's)
    try:
        return len(os.listdir("/proc/self/task")) - threading.active_count()
    except OSError:
        return 0  # no per-thread view here

def after_pysampler():
    import time
    from pysampler import _sampler
    # the timer and fallback threads are gone (a joined thread leaves the
    # OS's list a moment later: under emulation, qemu-user's teardown)
    deadline = time.monotonic() + 5
    while native_threads() != baseline and time.monotonic() < deadline:
        time.sleep(0.01)
    print("after:", _sampler.is_running(), native_threads() == baseline)
    sys.stdout.flush()

atexit.register(after_pysampler)
import pysampler
from pysampler import _sampler
from workloads import spin_cpu
baseline = native_threads()

def before_pysampler():
    print("before:", _sampler.is_running(), _sampler.sample_count() > 0)

atexit.register(before_pysampler)
"""


def test_exit_while_profiling_stops_the_sampler_before_finalization() -> None:
    # a daemon thread still runs Python code while the interpreter exits
    out = run(
        EXIT_PROBES
        + """
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
    assert out.stdout.splitlines() == ["bye", "before: True True", "after: False True"]
    assert out.stderr == ""


def test_sys_exit_from_profiled_code_keeps_exit_code() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            EXIT_PROBES + "pysampler.start(hz=1000)\nspin_cpu(0.05)\nsys.exit(7)\n",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(__file__)),
    )
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.splitlines() == ["before: True True", "after: False True"]
    assert proc.stderr == ""


def test_atexit_handler_registered_after_import_can_still_save_the_profile() -> None:
    # the common "save at exit" pattern: the program's handler is registered
    # after `import pysampler` but before the session controls first load
    out = run(
        """
        import atexit, pysampler
        from workloads import spin_cpu

        def save():
            prof = pysampler.stop()
            print("saved", prof.sample_count > 0)

        atexit.register(save)
        pysampler.start(hz=1000)
        spin_cpu(0.05)
        """
    )
    assert out.stdout.splitlines() == ["saved True"]


def test_start_after_the_exit_hook_is_refused_even_if_never_used_before() -> None:
    # the session controls load lazily: a first start() from an atexit
    # handler that runs after pysampler's own hook must still be refused
    out = run(
        """
        import atexit

        def late():
            import pysampler
            try:
                pysampler.start(hz=1000)
                print("started late")
            except RuntimeError as e:
                print("refused:", e)

        atexit.register(late)  # registered first: runs after pysampler's hook
        import pysampler
        """
    )
    assert out.stdout.splitlines() == ["refused: the interpreter is shutting down"]


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


def test_code_objects_freed_before_their_pinning_step_are_left_alone() -> None:
    # The stack reader (3.11+) sees a code object without the GIL; a step
    # holding the GIL takes a reference soon after, only if the memory
    # still holds that live object. Here thousands of short-lived code
    # objects a second (each compiled, run for a moment, then freed) meet
    # a 5 kHz session, so many die between being sampled and that step. On
    # 3.14 the step read the 32-bit ob_refcnt, took the low half of the
    # allocator's free-list link in a freed object for a count, and
    # INCREFed freed memory: the program crashed in its allocator in 5
    # runs of 5. The freed ones must show as such, and the program live.
    out = run(
        """
        import time, pysampler
        pysampler.start(hz=5000, mode="cpu")
        end = time.perf_counter() + 2.0
        i = 0
        while time.perf_counter() < end:
            src = (f"def f{i}(n):\\n    t = 0\\n    for k in range(n):\\n"
                   f"        t += k * {i}\\n    return t\\nr = f{i}(300)\\n")
            exec(compile(src, f"<generated {i}>", "exec"), {})
            i += 1
        p = pysampler.stop()
        names = {f.function for f in p.functions()}
        print(i, p.metadata.sampling_events, sorted(n for n in names if n.startswith("f"))[:3])
        """
    )
    compiled, events, _ = out.stdout.split(maxsplit=2)
    assert int(compiled) > 1000 and int(events) > 1000, out.stdout


def test_stop_does_not_leave_eval_breaker_busy() -> None:
    # After stop the program runs at full speed again: no wake-up of ours
    # is left set on the eval breaker, or every later bytecode boundary
    # would take the slow path. Checked on the breaker itself, after many
    # sessions at a high rate (the leftover came from a race with the last
    # tick), not by timing the program.
    out = run(
        """
        import pysampler
        from pysampler import _sampler
        from workloads import spin_cpu
        left_set = 0
        for _ in range(50):
            pysampler.start(hz=5000)
            spin_cpu(0.02)
            pysampler.stop()
            for _ in range(1000):  # safe points: anything pending is served
                pass
            left_set += _sampler.eval_breaker_set()
        print(left_set)
        """
    )
    assert out.stdout.strip() == "0"


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
