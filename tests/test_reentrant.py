"""start() and stop() re-entered from a signal handler on the same thread.

A SIGUSR1 handler that toggles profiling is a common pattern; a second
signal can arrive while stop() is still building its result, which runs
Python code (a thread's ``name``, a finalizer). The nested call must get a
clear error, never free tables the outer stop() is reading (a crash) or
wait for a lock its own thread holds (a hang). Each case runs in a
subprocess so that a crash or a hang is a failing test with output.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from helpers import run_python

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1 (POSIX signals)"
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    # A deadlock shows as a timeout, not as a stuck test run.
    return run_python(code, timeout=60)


# A signal handler that toggles a profiler, and a way to make the signal
# arrive at a chosen point: the handler runs at the next bytecode of the
# main thread, so a Python callback that sends it runs the handler inside
# the callback, wherever that callback was called from.
TOGGLE = """
import os, signal, threading
import pysampler
from pysampler.errors import ProfilerAlreadyRunning, ProfilerNotRunning

outcomes = []

def toggle(signum, frame):
    try:
        if PROFILER.is_running():
            PROFILER.stop()
            outcomes.append("stopped")
        else:
            PROFILER.start()
            outcomes.append("started")
    except (ProfilerAlreadyRunning, ProfilerNotRunning) as exc:
        outcomes.append(f"{type(exc).__name__}: {exc}")

signal.signal(signal.SIGUSR1, toggle)

def send_signal():
    os.kill(os.getpid(), signal.SIGUSR1)
    for _ in range(100):  # bytecodes: the handler runs among them
        pass

def until_sampled():
    # a session with something recorded, however loaded the machine
    import time
    from pysampler import _sampler
    deadline = time.monotonic() + 30
    while _sampler.sample_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
"""


def test_start_from_signal_handler_during_stop_is_refused_cleanly() -> None:
    # stop() reads each thread's name while it copies the tables; the
    # property sends the signal, so the handler's start() lands in the
    # middle of stop(). Before, it freed the tables being copied (SIGSEGV).
    out = run(
        TOGGLE
        + """
PROFILER = pysampler
armed = threading.Event()

class Named(threading.Thread):
    @property
    def name(self):
        if armed.is_set():
            armed.clear()
            send_signal()
        return "named"

go = threading.Event()
t = Named(target=go.wait)
t.start()
try:
    for cycle in range(20):
        pysampler.start(hz=2000, mode="wall")
        until_sampled()
        armed.set()
        profile = pysampler.stop()
        assert not armed.is_set(), "the name was never read"
        assert "named" in {th.name for th in profile.threads}, profile.threads
        assert profile.sample_count > 0, profile.metadata
        # the nested start() was refused: nothing runs now
        assert not pysampler.is_running()
        # and profiling works as before
        with pysampler.profile(hz=1000, mode="wall") as p:
            until_sampled()
        assert p.profile.sample_count > 0, p.profile.metadata
finally:
    go.set()
    t.join()
assert len(outcomes) == 20, outcomes
assert set(outcomes) == {
    "ProfilerAlreadyRunning: the profiling session is still stopping"
}, outcomes
print("ok")
"""
    )
    assert out.stdout.strip() == "ok"


# The native calls start() and stop() make with their lock held, wrapped so
# that the signal arrives as each returns, still inside start() or stop().
SIGNAL_AFTER_NATIVE = """
from pysampler import _sampler

def signal_after(name):
    native = getattr(_sampler, name)
    def wrapper(*args, **kwargs):
        try:
            return native(*args, **kwargs)
        finally:
            if armed:
                armed.clear()
                send_signal()
    setattr(_sampler, name, wrapper)

armed = []
"""


def test_stop_or_cancel_from_signal_handler_during_start_or_stop_is_refused() -> None:
    out = run(
        TOGGLE
        + SIGNAL_AFTER_NATIVE
        + """
PROFILER = pysampler
signal_after("start")
signal_after("stop")

def every_call(signum, frame):
    for call in (pysampler.start, pysampler.stop, pysampler.cancel):
        try:
            outcomes.append(f"{call.__name__}: {call()!r}")
        except (ProfilerAlreadyRunning, ProfilerNotRunning) as exc:
            outcomes.append(f"{call.__name__}: {type(exc).__name__}: {exc}")

signal.signal(signal.SIGUSR1, every_call)
for cycle in range(10):
    armed.append(1)
    pysampler.start(hz=2000, mode="wall")  # the handler's calls: still starting
    assert pysampler.is_running()
    until_sampled()
    armed.append(1)
    profile = pysampler.stop()  # the handler's calls: already stopping
    assert profile.sample_count > 0, profile.metadata
    assert not pysampler.is_running()
assert outcomes[:6] == [
    "start: ProfilerAlreadyRunning: a profiling session is already starting",
    "stop: ProfilerNotRunning: the profiling session is still starting",
    "cancel: False",
    "start: ProfilerAlreadyRunning: the profiling session is still stopping",
    "stop: ProfilerNotRunning: the profiling session is already stopping",
    "cancel: False",
], outcomes
assert outcomes[6:] == outcomes[:6] * 9, outcomes
print("ok")
"""
    )
    assert out.stdout.strip() == "ok"


def test_heap_start_or_stop_from_signal_handler_during_heap_calls() -> None:
    # Before, the handler's heap.stop() or heap.start() waited forever for
    # the lock its own thread held.
    out = run(
        TOGGLE
        + SIGNAL_AFTER_NATIVE
        + """
PROFILER = pysampler.heap
for name in ("heap_start", "heap_snapshot", "heap_stop"):
    signal_after(name)

for cycle in range(10):
    armed.append(1)
    pysampler.heap.start(sample_bytes=4096)  # the handler's start(): still starting
    assert pysampler.heap.is_running()
    keep = [str(i) * 10 for i in range(10_000)]
    armed.append(1)
    snap = pysampler.heap.snapshot()  # the handler's stop() ends the session
    assert not pysampler.heap.is_running()
    assert not _sampler.heap_hooked()
    pysampler.heap.start(sample_bytes=4096)
    keep = [str(i) * 10 for i in range(10_000)]
    armed.append(1)
    prof = pysampler.heap.stop()  # the handler's start(): still stopping
    assert not pysampler.heap.is_running()
    assert not _sampler.heap_hooked()
    assert prof.alloc_bytes > 0 and snap.alloc_bytes > 0
assert outcomes[:3] == [
    "ProfilerAlreadyRunning: heap profiling is already starting",
    "stopped",
    "ProfilerAlreadyRunning: heap profiling is still stopping",
], outcomes
assert outcomes[3:] == outcomes[:3] * 9, outcomes
print("ok")
"""
    )
    assert out.stdout.strip() == "ok"
