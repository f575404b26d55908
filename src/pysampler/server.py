"""On-demand HTTP profiling endpoint: ``pysampler.serve(port)``.

A stdlib ``ThreadingHTTPServer`` in a daemon thread. It costs nothing but
an idle thread until a request asks for a profile, and it only uses the
public API (start, stop, cancel, Profile.to_bytes), so one session at a
time holds for the program's own profiling and for HTTP alike.

Routes are listed in :data:`ROUTES`; see docs/http-endpoint.md for the
user-facing description and examples with curl and ``go tool pprof``.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import logging
import math
import os
import re
import selectors
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pysampler import _asyncio, _control, formats
from pysampler import heap as _heap
from pysampler._control import cancel, start, stop
from pysampler.errors import ProfilerAlreadyRunning, ProfilerNotRunning
from pysampler.heap_profile import HeapProfile
from pysampler.profile import Profile

__all__ = ["DEFAULT_MAX_DURATION", "ROUTES", "Route", "Server", "serve"]

DEFAULT_MAX_DURATION = 600.0
#: mean bytes between heap samples for serve(heap=True): Go's default
DEFAULT_HEAP_SAMPLE_BYTES = _heap.DEFAULT_SAMPLE_BYTES
#: ``/debug/pprof/profile`` without ``seconds``, as in Go's net/http/pprof
DEFAULT_PPROF_SECONDS = 30.0
#: heap sampling rates a request may ask for (mean bytes between samples):
#: below 4 KiB the sampling itself would slow an allocation-heavy program
#: down noticeably, above 1 GiB a profile would hold almost no samples
MIN_SAMPLE_BYTES = 4096
MAX_SAMPLE_BYTES = 1 << 30
#: formats a heap profile can be written in
HEAP_FORMATS = ("heapprofile", "pprof")
#: how often a waiting request looks for a client that hung up, a cancel
#: or a closing server; only while a profile is being taken
POLL_INTERVAL = 0.1
#: a client has this long to send its request line and headers
REQUEST_TIMEOUT = 30.0

_log = logging.getLogger("pysampler.server")

_CONTENT_TYPES = {
    "pprof": "application/octet-stream",
    "cpuprofile": "application/json",
    "collapsed": "text/plain; charset=utf-8",
    "heapprofile": "application/json",
}
# digits only, bounded: rejects "nan", "inf", "1e999", "0x10", "-1", " 5"
_NUMBER = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?\Z")


class HttpError(Exception):
    """An error answered as ``{"error": message[, "parameter": name]}``."""

    def __init__(
        self,
        status: int,
        message: str,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": message}
        if parameter is not None:
            self.body["parameter"] = parameter
        self.body.update(extra)
        self.headers = headers or {}


# --------------------------------------------------------------------------
# Sessions started over HTTP. The profiler is process-wide, so this state is
# too: whichever server started the running session owns it.


@dataclass(eq=False)
class _Session:
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
_current: dict[str, _Session] = {}


def _begin(
    owner: object,
    kind: str,
    *,
    manual: bool = False,
    resident: bool = False,
    hz: float = 0.0,
    mode: str = "",
    asyncio: bool = False,
    sample_bytes: float = 0.0,
) -> _Session:
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
                start(hz, mode, asyncio=asyncio)
        except ProfilerAlreadyRunning:
            raise HttpError(
                409, f"the {kind} profiler is busy: the application is running its own session"
            ) from None
        session = _Session(
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


def _finish(session: _Session) -> Profile | HeapProfile | None:
    """Stop ``session`` and return its profile; None if it had ended."""
    with _sessions_lock:
        if _current.get(session.kind) is not session:
            return None
        del _current[session.kind]
        if session.expiry is not None:
            session.expiry.cancel()
        try:
            return _heap.stop() if session.kind == "heap" else stop()
        except ProfilerNotRunning:
            # The program called stop() or cancel() itself.
            return None


def _abort(session: _Session) -> bool:
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


def _current_session(
    kind: str = "cpu", owner: object | None = None, resident: bool | None = None
) -> _Session | None:
    with _sessions_lock:
        session = _current.get(kind)
        if session is None or (owner is not None and session.owner is not owner):
            return None
        if resident is not None and session.resident != resident:
            return None
        return session


# --------------------------------------------------------------------------
# Query parameters


def _params(query: str, allowed: tuple[str, ...] | None) -> dict[str, str]:
    """Parse a query string; 400 on repeats, and on unknown names when
    ``allowed`` is given (a typo must not silently change a profile)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the query string is not valid UTF-8 form data") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise HttpError(400, f"{name} is given more than once", name)
        if allowed is not None and name not in allowed:
            raise HttpError(
                400,
                f"unknown parameter {name!r}; this path takes: {', '.join(allowed) or 'none'}",
                name,
            )
        out[name] = value
    return out


def _number(params: dict[str, str], name: str, low: float, high: float, unit: str) -> float | None:
    """The parameter ``name`` as a number in [low, high]; None if absent."""
    text = params.get(name)
    if text is None:
        return None
    if not _NUMBER.match(text):
        raise HttpError(
            400, f"{name} must be a plain decimal number of {unit}, not {text[:40]!r}", name
        )
    value = float(text)
    if not (math.isfinite(value) and low <= value <= high):
        raise HttpError(400, f"{name} must be from {low:g} to {high:g} {unit}, not {text}", name)
    return value


def _duration(
    params: dict[str, str], name: str, max_duration: float, default: float | None
) -> float:
    value = _number(params, name, 0.0, max_duration, "seconds")
    if value is None:
        if default is None:
            raise HttpError(400, f"{name} is required (seconds to profile)", name)
        value = min(default, max_duration)
    if value <= 0:
        raise HttpError(400, f"{name} must be more than 0 seconds", name)
    return value


def _rate(params: dict[str, str]) -> tuple[float, str]:
    """(hz, mode) from ``hz``, ``sampling_interval`` (microseconds) and ``mode``."""
    hz = _number(params, "hz", _control.MIN_HZ, _control.MAX_HZ, "samples per second")
    interval = _number(
        params, "sampling_interval", 1e6 / _control.MAX_HZ, 1e6 / _control.MIN_HZ, "microseconds"
    )
    if hz is not None and interval is not None and not math.isclose(hz, 1e6 / interval):
        raise HttpError(
            400,
            f"hz={params['hz']} and sampling_interval={params['sampling_interval']} disagree; "
            "give one of them",
            "sampling_interval",
        )
    if hz is None:
        hz = 1e6 / interval if interval is not None else float(_control.DEFAULT_HZ)
    mode = params.get("mode", "cpu")
    if mode not in _control.MODES:
        raise HttpError(
            400, f"mode must be one of {', '.join(_control.MODES)}, not {mode!r}", "mode"
        )
    return hz, mode


def _asyncio_flag(params: dict[str, str], mode: str) -> bool:
    """``asyncio=1``: also record where waiting asyncio tasks wait (wall mode)."""
    value = params.get("asyncio", "0")
    if value not in ("0", "1"):
        raise HttpError(400, f"asyncio must be 0 or 1, not {value[:50]!r}", "asyncio")
    if value == "0":
        return False
    if mode != "wall":
        raise HttpError(400, "asyncio=1 needs mode=wall (a waiting task uses no CPU)", "asyncio")
    if not _asyncio.supported():
        raise HttpError(400, "asyncio=1 is not supported on this Python version", "asyncio")
    return True


def _format(params: dict[str, str], default: str) -> formats.Format:
    name = params.get("format", default)
    try:
        return formats.get(name)
    except ValueError as exc:
        raise HttpError(400, str(exc), "format") from None


def _sample_bytes(params: dict[str, str]) -> float:
    """Mean bytes between heap samples from ``sample_bytes``; Go's default if absent."""
    value = _number(params, "sample_bytes", MIN_SAMPLE_BYTES, MAX_SAMPLE_BYTES, "bytes")
    return float(_heap.DEFAULT_SAMPLE_BYTES) if value is None else float(int(value))


def _heap_format(params: dict[str, str]) -> formats.Format:
    fmt = _format(params, "heapprofile")
    if fmt.name not in HEAP_FORMATS:
        raise HttpError(
            400,
            f"format must be one of {', '.join(HEAP_FORMATS)} for a heap profile, not {fmt.name!r}",
            "format",
        )
    return fmt


def _seconds_label(seconds: float) -> str:
    # 5 -> "5", 0.25 -> "0.25", 12.3456 -> "12.3"
    return f"{seconds:.3g}" if seconds < 100 else str(round(seconds))


# --------------------------------------------------------------------------
# Routes


@dataclass(frozen=True)
class Route:
    """A path the endpoint answers, and what it does."""

    path: str
    handler: Callable[[_Handler, dict[str, str]], None]
    summary: str
    #: parameters taken; None = any (Go's handlers ignore unknown ones and
    #: scrapers may add their own)
    params: tuple[str, ...] | None


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "pysampler"
    protocol_version = "HTTP/1.0"  # one request per connection: no idle threads
    timeout = REQUEST_TIMEOUT
    # Buffered: the status line, headers and a small body leave in one
    # send, so the answer waits for the GIL once, not once per write.
    wbufsize = 1 << 16

    _responded = False

    # -- plumbing --------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        # No access log: the program's stderr is its own.
        pass

    def do_GET(self) -> None:
        self._responded = False
        try:
            self._check_token()
            url = urlsplit(self.path)
            route = ROUTES.get(url.path)
            if route is None:
                raise HttpError(404, f"no such path: {url.path[:200]}", paths=sorted(ROUTES))
            route.handler(self, _params(url.query, route.params))
        except HttpError as exc:
            self._send_error_json(exc)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to answer
        except Exception:
            _log.exception("pysampler: error answering %s", self.path[:200])
            if not self._responded:
                self._send_error_json(HttpError(500, "internal error; see the program's log"))

    def _not_allowed(self) -> None:
        self._send_error_json(
            HttpError(405, f"{self.command} is not supported; use GET", headers={"Allow": "GET"})
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests (bad request line, long headers) get JSON too.
        self._send_error_json(HttpError(code, message or self.responses.get(code, ("",))[0]))

    def _check_token(self) -> None:
        token = self.server.token
        if token is None:
            return
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
        )
        if not ok:
            raise HttpError(
                401,
                "a valid 'Authorization: Bearer <token>' header is required",
                headers={"WWW-Authenticate": 'Bearer realm="pysampler"'},
            )

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = (json.dumps(payload) + "\n").encode()
        self._send(status, body, "application/json", headers or {})

    def _send_error_json(self, exc: HttpError) -> None:
        with contextlib.suppress(OSError):
            self._send_json(exc.status, exc.body, exc.headers)

    def _send_profile(
        self, profile: Profile | HeapProfile, fmt: formats.Format, filename: str
    ) -> None:
        body = profile.to_bytes(fmt.name)
        self._send(
            200,
            body,
            _CONTENT_TYPES.get(fmt.name, "application/octet-stream"),
            {"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    # -- waiting while a profile is taken ----------------------------------

    def _wait(self, session: _Session, seconds: float) -> str:
        """Wait ``seconds``; return "done", or why not: "cancelled",
        "disconnected" (the client hung up) or "closing" (server closed)."""
        deadline = time.monotonic() + seconds
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(self.connection, selectors.EVENT_READ)
                watching = True
            except (OSError, ValueError):
                watching = False
            while True:
                if session.cancelled.is_set():
                    return "cancelled"
                if self.server.closing.is_set():
                    return "closing"
                left = deadline - time.monotonic()
                if left <= 0:
                    return "done"
                step = min(left, POLL_INTERVAL)
                if not watching:
                    session.cancelled.wait(step)
                    continue
                if not selector.select(step):
                    continue
                # Readable: either EOF (the client hung up: curl ^C, a
                # scraper's timeout) or bytes sent after the request, which
                # say nothing about EOF; then only the clock is watched.
                try:
                    data = self.connection.recv(1, socket.MSG_PEEK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return "disconnected"
                if not data:
                    return "disconnected"
                watching = False

    def _take(self, session: _Session, seconds: float) -> Profile | HeapProfile | None:
        """Wait ``seconds`` while ``session`` records, then stop it; the
        profile, or None when the client hung up (nothing to answer)."""
        try:
            outcome = self._wait(session, seconds)
            if outcome != "done":
                _abort(session)
                if outcome == "disconnected":
                    return None
                if outcome == "closing":
                    raise HttpError(503, "the profiling endpoint is shutting down")
                raise HttpError(409, "the session was cancelled (/profile/cancel)")
            profile = _finish(session)
        finally:
            # Whatever happened above (an exception included), the
            # profiler is free when this request ends.
            _abort(session)
        if profile is None:
            raise HttpError(409, f"the {session.kind} session was ended by the application")
        return profile

    def _timed_profile(
        self,
        seconds: float,
        hz: float,
        mode: str,
        fmt: formats.Format,
        filename: str | None,
        asyncio: bool = False,
    ) -> None:
        session = _begin(self.server, "cpu", hz=hz, mode=mode, asyncio=asyncio)
        profile = self._take(session, seconds)
        if profile is None:
            return
        if filename is None:
            filename = (
                f"cpu_{int(session.started_unix)}_{_seconds_label(seconds)}-seconds"
                f"{fmt.suffixes[0]}"
            )
        self._send_profile(profile, fmt, filename)

    def _timed_heap(
        self,
        seconds: float,
        sample_bytes: float,
        view: str,
        fmt: formats.Format,
        filename: str | None,
    ) -> None:
        session = _begin(self.server, "heap", sample_bytes=sample_bytes)
        profile = self._take(session, seconds)
        if profile is None:
            return
        assert isinstance(profile, HeapProfile)
        if filename is None:
            filename = (
                f"heap_{int(session.started_unix)}_{_seconds_label(seconds)}-seconds"
                f"{fmt.suffixes[0]}"
            )
        self._send_profile(profile.with_view(view), fmt, filename)

    def _heap_now(self, view: str, filename: str) -> None:
        """Answer from the heap session already running (the endpoint's own
        with ``serve(heap=True)``, or the application's): a snapshot, which
        leaves the session running."""
        try:
            snap = _heap.snapshot()
        except ProfilerNotRunning:
            raise HttpError(
                409,
                "no heap profiling session is running, so memory in use is unknown: "
                "ask for a window with ?seconds=S, or start the endpoint with "
                "serve(heap=True) or PYSAMPLER_HEAP=1 to keep one running",
            ) from None
        self._send_profile(snap.with_view(view), formats.get("pprof"), filename)

    # -- route handlers ----------------------------------------------------

    def profile_cpu(self, params: dict[str, str]) -> None:
        seconds = _duration(params, "duration", self.server.max_duration, None)
        hz, mode = _rate(params)
        tasks = _asyncio_flag(params, mode)
        self._timed_profile(seconds, hz, mode, _format(params, "cpuprofile"), None, tasks)

    def profile_cpu_start(self, params: dict[str, str]) -> None:
        hz, mode = _rate(params)
        tasks = _asyncio_flag(params, mode)
        session = _begin(self.server, "cpu", hz=hz, mode=mode, asyncio=tasks, manual=True)
        # A forgotten session must not sample forever.
        limit = self.server.max_duration
        session.expiry = threading.Timer(limit, _abort, args=(session,))
        session.expiry.name = "pysampler-http-expiry"
        session.expiry.daemon = True
        session.expiry.start()
        self._send_json(
            200,
            {
                "status": "started",
                "hz": hz,
                "mode": mode,
                "asyncio": tasks,
                "started_at": session.started_unix,
                "expires_in": limit,
                "stop": "/profile/cpu/stop",
                "cancel": "/profile/cancel",
            },
        )

    def profile_cpu_stop(self, params: dict[str, str]) -> None:
        fmt = _format(params, "cpuprofile")
        session = _current_session()
        if session is None:
            raise HttpError(409, "no profile started with /profile/cpu/start is running")
        if not session.manual:
            raise HttpError(
                409, "the running profile is a timed one; it ends by itself (or /profile/cancel)"
            )
        profile = _finish(session)
        if profile is None:
            raise HttpError(409, "the session had already ended")
        elapsed = time.monotonic() - session.started_mono
        filename = (
            f"cpu_{int(session.started_unix)}_{_seconds_label(elapsed)}-seconds{fmt.suffixes[0]}"
        )
        self._send_profile(profile, fmt, filename)

    def profile_cancel(self, params: dict[str, str]) -> None:
        cancelled = [
            session.kind
            for session in (
                _current_session("cpu"),
                _current_session("heap", resident=False),
            )
            if session is not None and _abort(session)
        ]
        if not cancelled:
            if _control.is_running() or _heap.is_running():
                raise HttpError(
                    409,
                    "the running session is not one a request started; it is not ours to cancel",
                )
            raise HttpError(409, "no profiling session is running")
        self._send_json(200, {"status": "cancelled"})

    def pprof_index(self, params: dict[str, str]) -> None:
        rows = "".join(
            f'<tr><td><a href="{html.escape(r.path)}">{html.escape(r.path)}</a></td>'
            f"<td>{html.escape(r.summary)}</td></tr>\n"
            for r in sorted(ROUTES.values(), key=lambda r: r.path)
        )
        page = (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>pysampler</title></head>"
            "<body><h1>pysampler profiling endpoint</h1>\n"
            "<p>Profiles of this Python process, on demand. For example:<br>"
            "<code>go tool pprof -top 'http://HOST:PORT/debug/pprof/profile?seconds=5'</code><br>"
            "<code>curl -OJ 'http://HOST:PORT/profile/cpu?duration=5'</code><br>"
            "<code>go tool pprof -top 'http://HOST:PORT/debug/pprof/heap'</code></p>\n"
            f"<table>\n{rows}</table></body></html>\n"
        )
        self._send(200, page.encode(), "text/html; charset=utf-8", {})

    def pprof_profile(self, params: dict[str, str]) -> None:
        seconds = _duration(params, "seconds", self.server.max_duration, DEFAULT_PPROF_SECONDS)
        hz, _ = _rate({k: v for k, v in params.items() if k == "hz"})
        self._timed_profile(seconds, hz, "cpu", formats.get("pprof"), "profile")

    def fgprof(self, params: dict[str, str]) -> None:
        seconds = _duration(params, "seconds", self.server.max_duration, DEFAULT_PPROF_SECONDS)
        hz, _ = _rate({k: v for k, v in params.items() if k == "hz"})
        fmt = _format({"format": params.get("format", "pprof")}, "pprof")
        tasks = _asyncio_flag(params, "wall")
        filename = "profile" if fmt.name == "pprof" else None
        self._timed_profile(seconds, hz, "wall", fmt, filename, tasks)

    def profile_heap(self, params: dict[str, str]) -> None:
        seconds = _duration(params, "duration", self.server.max_duration, None)
        sample_bytes = _sample_bytes(params)
        fmt = _heap_format(params)
        self._timed_heap(seconds, sample_bytes, "inuse", fmt, None)

    def pprof_heap(self, params: dict[str, str]) -> None:
        if "seconds" not in params:
            self._heap_now("inuse", "heap")
            return
        seconds = _duration(params, "seconds", self.server.max_duration, None)
        self._timed_heap(seconds, _sample_bytes(params), "inuse", formats.get("pprof"), "heap")

    def pprof_allocs(self, params: dict[str, str]) -> None:
        if "seconds" not in params:
            self._heap_now("alloc", "allocs")
            return
        seconds = _duration(params, "seconds", self.server.max_duration, None)
        self._timed_heap(seconds, _sample_bytes(params), "alloc", formats.get("pprof"), "allocs")


_PROFILE_PARAMS = ("duration", "sampling_interval", "hz", "mode", "format", "asyncio")

#: Every path the endpoint answers. Unknown paths get a 404 listing these.
ROUTES: dict[str, Route] = {
    r.path: r
    for r in (
        Route(
            "/profile/cpu",
            _Handler.profile_cpu,
            "profile for ?duration=S seconds and return the file "
            "(&hz=N or &sampling_interval=US, &mode=cpu|wall, &format=cpuprofile|pprof|collapsed, "
            "&asyncio=1 with mode=wall)",
            _PROFILE_PARAMS,
        ),
        Route(
            "/profile/cpu/start",
            _Handler.profile_cpu_start,
            "start a session (&hz, &sampling_interval, &mode, &asyncio); "
            "end it with /profile/cpu/stop",
            ("sampling_interval", "hz", "mode", "asyncio"),
        ),
        Route(
            "/profile/cpu/stop",
            _Handler.profile_cpu_stop,
            "stop the session started by /profile/cpu/start and return the file (&format)",
            ("format",),
        ),
        Route(
            "/profile/cancel",
            _Handler.profile_cancel,
            "discard the session started over HTTP",
            (),
        ),
        Route("/debug/pprof/", _Handler.pprof_index, "this index", None),
        Route("/debug/pprof", _Handler.pprof_index, "this index", None),
        Route(
            "/debug/pprof/profile",
            _Handler.pprof_profile,
            "CPU profile, gzip pprof, for ?seconds=S (default 30), as Go's net/http/pprof",
            None,
        ),
        Route(
            "/debug/fgprof",
            _Handler.fgprof,
            "wall-clock profile (every thread, waiting or not), gzip pprof, for ?seconds=S "
            "(default 30), as Go's fgprof",
            None,
        ),
        Route(
            "/profile/heap",
            _Handler.profile_heap,
            "sample allocations for ?duration=S seconds and return what is still in use "
            "(&sample_bytes=N, &format=heapprofile|pprof)",
            ("duration", "sample_bytes", "format"),
        ),
        Route(
            "/debug/pprof/heap",
            _Handler.pprof_heap,
            "memory in use, gzip pprof: now, from the running heap session "
            "(serve(heap=True)); or, with ?seconds=S, what was allocated in S seconds "
            "and is still in use at the end",
            None,
        ),
        Route(
            "/debug/pprof/allocs",
            _Handler.pprof_allocs,
            "memory allocated, gzip pprof: since the running heap session started; "
            "or, with ?seconds=S, in the next S seconds",
            None,
        ),
    )
}


# --------------------------------------------------------------------------
# Server


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # request threads never hold up interpreter exit
    block_on_close = False
    # SO_REUSEADDR lets a second process take a bound port on Windows
    allow_reuse_address = sys.platform != "win32"

    def __init__(self, address: tuple[str, int], token: str | None, max_duration: float) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.token = token
        self.max_duration = max_duration
        self.closing = threading.Event()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # As ThreadingMixIn does, with a name the profile makes sense of.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="pysampler-http-request",
            daemon=True,
        )
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Errors outside a handler (a reset during the request line):
        # logged, never printed over the program's output by default.
        _log.debug("pysampler: error on a connection from %s", client_address, exc_info=True)


_servers: weakref.WeakSet[_HTTPServer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child has no server thread, and no session (see _control). Its
    # copy of a listening socket would keep the port bound, unanswered,
    # after the parent exits: close it. The lock may have been held by a
    # thread that does not exist here.
    global _sessions_lock
    _sessions_lock = threading.Lock()
    _current.clear()
    for httpd in list(_servers):
        httpd.closing.set()
        with contextlib.suppress(OSError):
            httpd.socket.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Server:
    """A running profiling endpoint (what :func:`serve` returns).

    Attributes:
        host: the address it listens on.
        port: the TCP port it listens on (the one chosen, when 0 was asked).
    """

    def __init__(self, httpd: _HTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        address = httpd.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9119``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def closed(self) -> bool:
        return self._httpd.closing.is_set()

    def close(self) -> None:
        """Stop listening, end requests waiting on a profile, and discard a
        session this server started. Safe to call more than once."""
        if self._httpd.closing.is_set():
            return
        self._httpd.closing.set()
        for kind in ("cpu", "heap"):
            session = _current_session(kind, owner=self._httpd)
            if session is not None:
                _abort(session)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "serving"
        return f"<pysampler.server.Server {self.url} {state}>"


def serve(
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    max_duration: float = DEFAULT_MAX_DURATION,
    heap: bool = False,
    heap_sample_bytes: int = DEFAULT_HEAP_SAMPLE_BYTES,
) -> Server:
    """Serve profiles of this process over HTTP from a daemon thread.

    Args:
        port: TCP port; 0 picks a free one (read it from ``.port``).
        host: address to bind; loopback unless you say otherwise.
        token: when given, every request needs ``Authorization: Bearer <token>``.
        max_duration: longest profile a request may ask for, in seconds; also
            how long a session from ``/profile/cpu/start`` may run.
        heap: keep a heap profiling session running from now until
            ``close()``, so ``/debug/pprof/heap`` and ``/debug/pprof/allocs``
            answer at once with everything since, as a Go program's do.
        heap_sample_bytes: mean bytes between heap samples for that session.

    Returns:
        The running :class:`Server`; ``.close()`` stops it.

    Raises:
        OSError: the port is taken or the address cannot be bound.
        ValueError: an argument is out of range.
        ProfilerAlreadyRunning: ``heap=True`` while heap profiling already runs.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, not {host!r}")
    if token is not None and (not isinstance(token, str) or not token):
        raise ValueError("token must be a non-empty string or None")
    if (
        isinstance(max_duration, bool)
        or not isinstance(max_duration, (int, float))
        or not (math.isfinite(max_duration) and max_duration > 0)
    ):
        raise ValueError(f"max_duration must be a positive number of seconds, not {max_duration!r}")
    if (
        isinstance(heap_sample_bytes, bool)
        or not isinstance(heap_sample_bytes, int)
        or not MIN_SAMPLE_BYTES <= heap_sample_bytes <= MAX_SAMPLE_BYTES
    ):
        raise ValueError(
            f"heap_sample_bytes must be an integer from {MIN_SAMPLE_BYTES} to "
            f"{MAX_SAMPLE_BYTES}, not {heap_sample_bytes!r}"
        )
    httpd = _HTTPServer((host, port), token, float(max_duration))
    if heap:
        try:
            _begin(httpd, "heap", resident=True, sample_bytes=heap_sample_bytes)
        except HttpError as exc:
            httpd.server_close()
            raise ProfilerAlreadyRunning(str(exc.body["error"])) from None
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.5},
        name="pysampler-http",
        daemon=True,
    )
    thread.start()
    _servers.add(httpd)
    return Server(httpd, thread)
