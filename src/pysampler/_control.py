"""start() / stop() / profile(): the session controls of the public API.

One session per process. A lock makes start and stop safe to call from
any thread; fork and interpreter exit are handled here so that a child
starts without a sampler and exit never waits on one.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import threading
import time
from contextlib import contextmanager

from pysampler import _asyncio, _sampler
from pysampler._session_state import IDLE, RUNNING, SessionState
from pysampler.errors import ProfilerAlreadyRunning, ProfilerNotRunning

# typing and the Profile's modules are for annotations only here: a program
# that imports pysampler without profiling does not load them
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from pysampler.profile import Profile

MODES = ("cpu", "wall")
MIN_HZ = 1
MAX_HZ = 10_000
DEFAULT_HZ = 100
DEFAULT_MAX_DEPTH = 512
#: sample rows kept before new ones are dropped (and counted): 5.5 hours
#: of one busy thread at 1 kHz, 32 bytes a row
DEFAULT_MAX_SAMPLES = 20_000_000
DEFAULT_MAX_FRAMES = 1_000_000
DEFAULT_MAX_NODES = 4_000_000

#: the largest sample table a session may ask for: rows of
#: _sampler.SAMPLE_ROW_BYTES each (memory grows with use, up to this)
MAX_SAMPLE_TABLE_BYTES = 4 << 30
MAX_SAMPLES = MAX_SAMPLE_TABLE_BYTES // _sampler.SAMPLE_ROW_BYTES


def _new_state() -> SessionState:
    return SessionState(
        "a profiling session", "the profiling session", "no profiling session is running"
    )


# One session per process; start/stop may re-enter from a signal handler
# (see _session_state)
_state = _new_state()
_session: dict[str, Any] | None = None


def validate(hz: object, mode: object) -> tuple[float, str]:
    """Check ``hz`` and ``mode`` as start() takes them; raise ValueError."""
    if isinstance(hz, bool) or not isinstance(hz, (int, float)):
        raise ValueError(f"hz must be a number from {MIN_HZ} to {MAX_HZ}, not {hz!r}")
    if not (math.isfinite(hz) and MIN_HZ <= hz <= MAX_HZ):
        raise ValueError(f"hz must be from {MIN_HZ} to {MAX_HZ}, not {hz!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, not {mode!r}")
    return float(hz), str(mode)


def start(
    hz: float = DEFAULT_HZ,
    mode: str = "cpu",
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    asyncio: bool = False,
    max_tasks: int = _asyncio.DEFAULT_MAX_TASKS,
) -> None:
    """Start sampling every thread of this process.

    Args:
        hz: sampling events per second, 1 to 10000 (default 100).
        mode: ``"cpu"`` weights each thread's sample by the CPU time it used
            (idle threads record nothing); ``"wall"`` counts elapsed time
            for every thread, waiting or not.
        max_depth: frames kept per stack (innermost first); deeper stacks
            get a visible ``[truncated ...]`` root frame.
        max_samples: sample rows kept; further samples are dropped and
            counted in the profile's metadata.
        asyncio: wall mode only: also record, at each sample, the stack of
            every asyncio task that is waiting (``Task: name`` -> its
            coroutines -> ``(awaiting Future)``), as rows of an
            ``asyncio tasks`` pseudo-thread. A ``ValueError`` in CPU mode,
            where a waiting task uses no CPU. See docs/asyncio.md.
        max_tasks: with ``asyncio``, tasks recorded per sample at most;
            further tasks wait for the next samples and are counted as
            dropped task samples.

    Raises:
        ProfilerAlreadyRunning: a session is already running.
        ValueError: ``hz``, ``mode``, ``max_depth``, ``max_samples`` or
            ``max_tasks`` is out of range, or ``asyncio`` is asked for in CPU
            mode or on a Python whose tasks cannot be read (3.15+,
            free-threaded).
    """
    global _session
    rate, kind = validate(hz, mode)
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or not 1 <= max_depth <= 65536:
        raise ValueError(f"max_depth must be an integer from 1 to 65536, not {max_depth!r}")
    if (
        isinstance(max_samples, bool)
        or not isinstance(max_samples, int)
        or not 1 <= max_samples <= MAX_SAMPLES
    ):
        raise ValueError(
            f"max_samples must be an integer from 1 to {MAX_SAMPLES} "
            f"({MAX_SAMPLE_TABLE_BYTES >> 20} MiB of samples), not {max_samples!r}"
        )
    if not isinstance(asyncio, bool):
        raise ValueError(f"asyncio must be True or False, not {asyncio!r}")
    if asyncio and kind != "wall":
        # the CLI's --asyncio and the endpoint's asyncio=1 say the same
        raise ValueError("asyncio=True needs mode='wall' (a waiting task uses no CPU)")
    tasks = _asyncio.registry_config(max_tasks) if asyncio else None
    with _state.starting():
        start_unix = time.time()
        try:
            _sampler.start(
                rate,
                kind,
                max_depth,
                max_samples,
                DEFAULT_MAX_FRAMES,
                DEFAULT_MAX_NODES,
                getattr(threading, "_active", None),
                tasks,
            )
        except _sampler.AlreadyRunning:
            raise ProfilerAlreadyRunning(_state.busy[RUNNING]) from None
        _session = {"hz": rate, "start_unix": start_unix}


def stop() -> Profile:
    """Stop the running session and return its Profile.

    Raises:
        ProfilerNotRunning: no session is running (or one is still
            starting or already stopping: a call from a signal handler that
            interrupted start() or stop()).
    """
    return stop_recording()()


def stop_recording() -> Callable[[], Profile]:
    """Stop the running session and copy its tables; return the function
    that builds its Profile. Callers that hold a lock of their own build
    the profile (the slow part) after releasing it.

    Raises:
        ProfilerNotRunning: as :func:`stop`.
    """
    global _session
    with _state.stopping():
        session, _session = _session, None
        assert session is not None
        try:
            raw = _sampler.stop()
        except _sampler.NotRunning:
            raise ProfilerNotRunning(_state.not_running[IDLE]) from None
    # loaded at the first stop(): a program that never profiles does not pay for it
    from pysampler._build import build_profile

    return functools.partial(build_profile, raw, session["hz"], session["start_unix"])


def is_running() -> bool:
    """True while a profiling session is running."""
    return _state.running


def cancel() -> bool:
    """Stop the running session, if any, and discard what it recorded.

    Returns:
        Whether a session was running (False also while one is still
        starting or already stopping).
    """
    return _state.cancel(_discard)


def _discard() -> None:
    global _session
    _session = None
    _sampler.stop(discard=True)


class Profiling:
    """What ``with pysampler.profile() as p`` binds: the Profile once the
    block has ended (``p.top()``, ``p.save()``, ``p.profile``)."""

    def __init__(self) -> None:
        self._profile: Profile | None = None

    @property
    def profile(self) -> Profile:
        if self._profile is None:
            raise RuntimeError("the profile is available once the with block has ended")
        return self._profile

    def top(self, n: int = 10) -> str:
        """See :meth:`Profile.top`."""
        return self.profile.top(n)

    def save(self, path: Any, format: str | None = None) -> str:
        """See :meth:`Profile.save`."""
        return self.profile.save(path, format)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.profile, name)


@contextmanager
def profile(hz: float = DEFAULT_HZ, mode: str = "cpu", **options: Any) -> Iterator[Profiling]:
    """Profile the ``with`` block; the bound object gives the Profile after.

    Args:
        hz: sampling rate, as for :func:`start`.
        mode: ``"cpu"`` or ``"wall"``, as for :func:`start`.
        **options: further keyword arguments of :func:`start`.
    """
    result = Profiling()
    start(hz, mode, **options)
    try:
        yield result
    finally:
        result._profile = stop()


#: the child this module was last reset in (see _after_fork_in_child)
_reset_in = 0


def _after_fork_in_child() -> None:
    # The child has no timer thread; the lock may have been held by a
    # thread that does not exist here. Once per child: a process group's
    # member calls this before its thread may start a session, since its
    # own at-fork handler may run first (pysampler.group.member).
    global _session, _state, _reset_in
    if _reset_in == os.getpid():
        return
    _reset_in = os.getpid()
    _state = _new_state()
    _session = None
    _sampler.after_fork_child()


def _stop_at_exit() -> None:
    # Interpreter exit while profiling: end the timer thread before the
    # runtime finalises (a native thread must not wait for the GIL, or read
    # thread states, then), and refuse every later start(): a daemon thread
    # or a later atexit handler must not leave a timer running into
    # Py_FinalizeEx (in an embedding program, into the next Py_Initialize).
    # (a start() already past the check is ended by the cancel() below)
    # Registered by the package's __init__ at `import pysampler`, so it runs
    # after the atexit handlers a program registers later (which may still
    # stop a session and save its profile), however late this module loads.
    _sampler.close()
    with contextlib.suppress(Exception):
        cancel()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
if sys.modules["pysampler"]._exited:
    # first loaded after the exit hook ran (a daemon thread starting a
    # profile late): no session may start any more
    _sampler.close()
