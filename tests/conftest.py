"""Shared fixtures: every test starts and ends with the profiler idle."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import pysampler
from pysampler import _sampler

sys.path.insert(0, os.path.dirname(__file__))

# A suite started in the background by a shell without job control
# (`pytest ... &` in a script) inherits SIGINT ignored, and so would every
# program the tests start: Python leaves an ignored SIGINT ignored, and the
# tests that interrupt a child with it (Ctrl-C of `run`, `record`, `top`)
# would wait for it in vain. Catching it here makes exec give each child
# the default back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _os_thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


@pytest.fixture(autouse=True)
def profiler_idle() -> Iterator[None]:
    """Nothing of ours runs before or after a test: no session, no native
    timer thread left behind."""
    assert not pysampler.is_running(), "a session was left running before this test"
    assert not _sampler.is_running()
    assert not pysampler.heap.is_running(), "heap profiling was left running before this test"
    assert not _sampler.heap_hooked(), "an allocator wrapper was left installed before this test"
    before = _os_thread_count() - threading.active_count()
    yield
    assert not pysampler.is_running(), "the test left a session running"
    assert not _sampler.is_running(), "the native sampler is still running"
    assert not pysampler.heap.is_running(), "the test left heap profiling running"
    assert not _sampler.heap_hooked(), "the test left an allocator wrapper installed"
    deadline = time.monotonic() + 5
    while _os_thread_count() - threading.active_count() > before:
        assert time.monotonic() < deadline, "a native thread was left behind"
        time.sleep(0.01)
