"""Workloads with known shapes, so tests can state expected shares."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def spin_cpu(seconds: float) -> int:
    """Burn ``seconds`` of this thread's CPU time in pure Python."""
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        for _ in range(200):
            n += 1
    return n


def hot(seconds: float) -> int:
    return spin_cpu(seconds)


def cold(seconds: float) -> int:
    return spin_cpu(seconds)


def hot_and_cold(total: float, hot_share: float, slice_s: float = 0.004) -> None:
    """Alternate ``hot`` and ``cold`` so that ``hot`` gets ``hot_share`` of
    this thread's CPU over ``total`` CPU-seconds."""
    end = time.thread_time() + total
    while time.thread_time() < end:
        hot(slice_s * hot_share)
        cold(slice_s * (1 - hot_share))


def busy_until(stop: threading.Event) -> None:
    while not stop.is_set():
        spin_cpu(0.005)


def sleep_until(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.01)


def recurse(depth: int, seconds: float) -> int:
    """A stack ``depth`` frames of ``recurse`` deep, spinning at the bottom."""
    if depth <= 1:
        return spin_cpu(seconds)
    return recurse(depth - 1, seconds)


class Worker:
    def crunch(self, seconds: float) -> int:
        return spin_cpu(seconds)


@contextmanager
def running_threads(
    targets: dict[str, Callable[[threading.Event], object]],
) -> Iterator[list[threading.Thread]]:
    """Run each ``name: fn(stop)`` in a thread of that name for the ``with``
    block; on leaving it, set ``stop`` and join them all."""
    stop = threading.Event()
    threads = [threading.Thread(target=fn, args=(stop,), name=name) for name, fn in targets.items()]
    for t in threads:
        t.start()
    try:
        yield threads
    finally:
        stop.set()
        for t in threads:
            t.join()
