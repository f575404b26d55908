"""Sessions started over HTTP. The profiler is process-wide, so this state
is too: whichever server started the running session owns it. One session
of each kind (CPU, heap) may run at a time."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pysampler import heap as _heap
from pysampler._control import cancel, start, stop_recording
from pysampler.errors import ProfilerAlreadyRunning, ProfilerNotRunning
from pysampler.heap_profile import HeapProfile
from pysampler.profile import Profile
from pysampler.server.limits import MAX_REQUEST_SAMPLES
from pysampler.server.query import HttpError


@dataclass(eq=False)
class Session:
    owner: object
    kind: str  # "cpu" or "heap": one session of each kind may run at a time
    manual: bool  # started by /profile/cpu/start, ended by /profile/cpu/stop
    started_unix: float
    started_mono: float
    hz: float = 0.0
    mode: str = ""
    asyncio: bool = False
    sample_bytes: float = 0.0
    #: a heap session kept running by serve(heap=True) for /debug/pprof/heap
    resident: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    expiry: threading.Timer | None = None


_sessions_lock = threading.Lock()
#: the running HTTP session of each kind
_current: dict[str, Session] = {}


def begin(
    owner: object,
    kind: str,
    *,
    manual: bool = False,
    resident: bool = False,
    hz: float = 0.0,
    mode: str = "",
    asyncio: bool = False,
    sample_bytes: float = 0.0,
    max_samples: int = MAX_REQUEST_SAMPLES,
) -> Session:
    """Start a session of ``kind``, owned by ``owner``; CPU sessions keep
    at most ``max_samples`` sample rows (a request's share of the budget).

    Raises:
        HttpError: 409 while a session of the kind runs.
    """
    with _sessions_lock:
        running = _current.get(kind)
        if running is not None:
            if running.resident:
                what = "kept running by the endpoint for /debug/pprof/heap"
            elif running.manual:
                what = "started with /profile/cpu/start"
            else:
                what = "timed"
            raise HttpError(
                409, f"a {kind} profile requested over HTTP ({what}) is already running"
            )
        started_unix = time.time()
        try:
            if kind == "heap":
                _heap.start(int(sample_bytes))
            else:
                start(hz, mode, asyncio=asyncio, max_samples=min(max_samples, MAX_REQUEST_SAMPLES))
        except ProfilerAlreadyRunning:
            raise HttpError(
                409, f"the {kind} profiler is busy: the application is running its own session"
            ) from None
        session = Session(
            owner,
            kind,
            manual,
            started_unix,
            time.monotonic(),
            hz=hz,
            mode=mode,
            asyncio=asyncio,
            sample_bytes=sample_bytes,
            resident=resident,
        )
        _current[kind] = session
        return session


def finish(session: Session) -> Profile | HeapProfile | None:
    """Stop ``session`` and return its profile; None if it had ended.

    The lock is held while the sampler stops and its tables are copied,
    not while the profile is built (seconds, for a long one): other
    requests and ``Server.close()`` wait for the copy only.
    """
    build: Callable[[], Profile | HeapProfile]
    with _sessions_lock:
        if _current.get(session.kind) is not session:
            return None
        del _current[session.kind]
        if session.expiry is not None:
            session.expiry.cancel()
        try:
            build = _heap.stop_recording() if session.kind == "heap" else stop_recording()
        except ProfilerNotRunning:
            # The program called stop() or cancel() itself.
            return None
    return build()


def conclude(session: Session, outcome: str) -> Profile | HeapProfile | None:
    """End ``session`` once the wait for it is over: its profile when the
    wait ran its course (``outcome`` "done"); None when whoever asked hung
    up ("disconnected": nothing to answer). Whatever happens, the profiler
    is free when this returns.

    Raises:
        HttpError: 503 when the endpoint closes ("closing"), 409 when the
            session was cancelled ("cancelled") or ended by the application.
    """
    try:
        if outcome == "done":
            profile = finish(session)
            if profile is None:
                raise HttpError(409, f"the {session.kind} session was ended by the application")
            return profile
        if outcome == "disconnected":
            return None
        if outcome == "closing":
            raise HttpError(503, "the profiling endpoint is shutting down")
        raise HttpError(409, "the session was cancelled (/profile/cancel)")
    finally:
        abort(session)


def abort(session: Session) -> bool:
    """Discard ``session`` if it still runs; whether it did."""
    with _sessions_lock:
        if _current.get(session.kind) is not session:
            return False
        del _current[session.kind]
        session.cancelled.set()
        if session.expiry is not None:
            session.expiry.cancel()
        if session.kind == "heap":
            _heap.cancel()
        else:
            cancel()
        return True


def current(
    kind: str = "cpu", owner: object | None = None, resident: bool | None = None
) -> Session | None:
    with _sessions_lock:
        session = _current.get(kind)
        if session is None or (owner is not None and session.owner is not owner):
            return None
        if resident is not None and session.resident != resident:
            return None
        return session


_reset_in = 0


def reset_after_fork() -> None:
    """In a forked child: no session runs there, and the lock may have been
    held by a thread that does not exist. Once per child (pysampler.group
    calls it before a new member's thread may begin a session)."""
    global _sessions_lock, _reset_in
    if _reset_in == os.getpid():
        return
    _reset_in = os.getpid()
    _sessions_lock = threading.Lock()
    _current.clear()
