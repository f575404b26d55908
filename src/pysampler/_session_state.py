"""Where a profiling session is (idle, starting, running, stopping), for the
CPU sampler (_control) and the heap profiler (heap) alike.

Calls come from any thread, and may re-enter on the same thread: a signal
handler that toggles profiling runs on the main thread between two
bytecodes, possibly inside ``stop()``, which runs Python code while it
copies the tables (thread names, a collection's finalizers). A nested call
finds "starting" or "stopping" and gets a clear error: waiting for the
lock its own thread holds would deadlock, and going ahead would free the
tables the interrupted call is reading. The lock is re-entrant for that
reason; other threads wait on it until the call in progress is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pysampler.errors import ProfilerAlreadyRunning, ProfilerNotRunning

IDLE, STARTING, RUNNING, STOPPING = "idle", "starting", "running", "stopping"


class SessionState:
    """The state of one kind of session, and the lock that guards it.

    Args:
        a: how errors name a session that exists ("a profiling session").
        the: how they name this one ("the profiling session").
        none: the error when none runs ("no profiling session is running").
    """

    def __init__(self, a: str, the: str, none: str) -> None:
        self.lock = threading.RLock()
        self.state = IDLE
        self.busy = {
            STARTING: f"{a} is already starting",
            RUNNING: f"{a} is already running",
            STOPPING: f"{the} is still stopping",
        }
        self.not_running = {
            IDLE: none,
            STARTING: f"{the} is still starting",
            STOPPING: f"{the} is already stopping",
        }

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @contextmanager
    def starting(self) -> Iterator[None]:
        """Hold the lock around a start; running after, idle if it raised.

        Raises:
            ProfilerAlreadyRunning: not idle.
        """
        with self.lock:
            if self.state != IDLE:
                raise ProfilerAlreadyRunning(self.busy[self.state])
            self.state = STARTING
            try:
                yield
            except BaseException:
                self.state = IDLE
                raise
            self.state = RUNNING

    @contextmanager
    def while_running(self) -> Iterator[None]:
        """Hold the lock around a call that needs a running session.

        Raises:
            ProfilerNotRunning: not running.
        """
        with self.lock:
            if self.state != RUNNING:
                raise ProfilerNotRunning(self.not_running[self.state])
            yield

    @contextmanager
    def stopping(self) -> Iterator[None]:
        """Hold the lock around a stop; idle after, whatever happened.

        Raises:
            ProfilerNotRunning: not running.
        """
        with self.lock:
            if self.state != RUNNING:
                raise ProfilerNotRunning(self.not_running[self.state])
            self.state = STOPPING
            try:
                yield
            finally:
                self.state = IDLE

    def cancel(self, stop: Callable[[], object]) -> bool:
        """Run ``stop`` as :meth:`stopping` does if a session runs; whether
        one did (False also while one is starting or stopping)."""
        with self.lock:
            if self.state != RUNNING:
                return False
            with self.stopping():
                stop()
            return True
