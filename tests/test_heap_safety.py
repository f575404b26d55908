"""Heap profiling never harms the program: many sessions, threads
allocating concurrently, fork, exit while running, another allocator hook
(tracemalloc) above or below ours, and no leak. Each case runs in a
subprocess so that a crash is a failing test with output."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import run_python


def run(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_python(code, timeout)


def test_many_sessions_with_concurrent_allocating_threads() -> None:
    out = run(
        """
        import threading, pysampler
        from pysampler import _sampler

        stop = threading.Event()

        def churn(seed):
            keep = []
            i = 0
            while not stop.is_set():
                keep.append([str(i)] * (i % 50) + [bytes(i % 3000)])
                keep.append({i: "x" * (i % 700)})
                if len(keep) > 2000:
                    del keep[: len(keep) // 2]
                i += seed

        threads = [threading.Thread(target=churn, args=(s,), name=f"churn-{s}") for s in (1, 3, 7)]
        for t in threads:
            t.start()
        seen = 0
        try:
            for cycle in range(150):
                pysampler.heap.start(sample_bytes=4096 if cycle % 2 else 512 * 1024)
                if cycle % 10 == 0:
                    pysampler.start(hz=1000)  # the CPU sampler at the same time
                for _ in range(3):
                    snap = pysampler.heap.snapshot()
                prof = pysampler.heap.stop()
                if pysampler.is_running():
                    pysampler.stop()
                assert not _sampler.heap_hooked()
                seen += sum(1 for f in prof.functions() if f.function == "churn")
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert seen > 10, seen
        print("ok", seen)
        """
    )
    assert out.stdout.startswith("ok")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_while_heap_profiling_child_has_no_hook() -> None:
    run(
        """
        import os, pysampler
        from pysampler import _sampler

        pysampler.heap.start(sample_bytes=1024)
        kept = [bytes(i % 5000) for i in range(20000)]
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                ok = not pysampler.heap.is_running() and not _sampler.heap_hooked()
                # the inherited blocks, sampled in the parent, are freed here
                kept.clear()
                junk = [str(i) * 10 for i in range(100000)]
                # the child may profile itself
                pysampler.heap.start(sample_bytes=4096)
                more = [bytes(1000) for _ in range(10000)]
                p = pysampler.heap.stop()
                ok = ok and p.inuse_bytes > 5e6 and not _sampler.heap_hooked()
                os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
        p = pysampler.heap.stop()
        assert p.with_view("inuse").inuse_bytes > 50e6
        """
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_multiprocessing_fork_pool_while_heap_profiling() -> None:
    run(
        """
        import multiprocessing as mp
        import pysampler

        def work(n):
            return len([bytes(100) for _ in range(n)])

        pysampler.heap.start(sample_bytes=2048)
        with mp.get_context("fork").Pool(2) as pool:
            assert sum(pool.map(work, [5000] * 8)) == 40000
        pysampler.heap.stop()
        """
    )


def test_exit_while_heap_profiling_with_allocating_daemon_threads() -> None:
    run(
        """
        import threading, pysampler

        def churn():
            while True:
                x = [bytes(i) for i in range(200)]

        for _ in range(2):
            threading.Thread(target=churn, daemon=True).start()
        pysampler.heap.start(sample_bytes=1024)
        kept = [str(i) for i in range(100000)]
        """
    )


def test_tracemalloc_above_and_below_our_wrapper() -> None:
    run(
        """
        import tracemalloc, pysampler
        from pysampler import _sampler

        # tracemalloc wraps over us; we stop first and must not take it out
        pysampler.heap.start(sample_bytes=4096)
        tracemalloc.start()
        a = [bytes(1000) for _ in range(1000)]
        p = pysampler.heap.stop()
        assert p.alloc_bytes > 5e5
        assert tracemalloc.is_tracing()
        b = [bytes(1000) for _ in range(1000)]
        snap = tracemalloc.take_snapshot()
        assert sum(s.size for s in snap.statistics("filename")) > 1e6
        del a, b
        tracemalloc.stop()
        # our pass-through came back on top: the next session takes it off
        pysampler.heap.start(sample_bytes=4096)
        c = [bytes(1000) for _ in range(1000)]
        assert pysampler.heap.stop().alloc_bytes > 5e5
        assert not _sampler.heap_hooked()

        # tracemalloc under us, stopped while we run
        tracemalloc.start()
        pysampler.heap.start(sample_bytes=4096)
        d = [bytes(1000) for _ in range(1000)]
        tracemalloc.stop()
        e = [bytes(1000) for _ in range(1000)]
        del c, d, e
        pysampler.heap.stop()
        pysampler.heap.start(sample_bytes=4096)
        f = [bytes(1000) for _ in range(1000)]
        assert pysampler.heap.stop().alloc_bytes > 5e5
        assert not _sampler.heap_hooked()
        print("ok")
        """
    )


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_leak_across_1000_start_stop_cycles() -> None:
    out = run(
        """
        import gc, os, pysampler

        page = os.sysconf("SC_PAGE_SIZE")

        def rss():
            gc.collect()
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page

        def cycle(i):
            pysampler.heap.start(sample_bytes=2048)
            x = [bytes(j % 900) for j in range(2000)]
            if i % 4 == 0:
                pysampler.heap.snapshot()
            pysampler.heap.stop()

        for i in range(100):
            cycle(i)
        before = rss()
        for i in range(1000):
            cycle(i)
        after = rss()
        print(before, after)
        assert after - before < 4 * 2**20, (before, after)
        """,
        timeout=240,
    )
    before, after = map(int, out.stdout.split())
    assert after - before < 4 << 20
