"""The endpoint's routes: the request handler and :data:`ROUTES`, the table
of every path it answers (docs/http-endpoint.md describes them)."""

from __future__ import annotations

import contextlib
import hmac
import html
import io
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pysampler import _control, formats
from pysampler import heap as _heap
from pysampler._log import logger
from pysampler.errors import ProfilerNotRunning, SnapshotInProgress
from pysampler.heap_profile import HeapProfile
from pysampler.profile import Profile
from pysampler.server import grouped, guard, limits, query, sessions
from pysampler.server.query import HttpError

if TYPE_CHECKING:
    from pysampler.server import _HTTPServer

#: ``/debug/pprof/profile`` without ``seconds``, as in Go's net/http/pprof
DEFAULT_PPROF_SECONDS = 30.0
#: how often a waiting request looks for a client that hung up, a cancel
#: or a closing server; only while a profile is being taken
POLL_INTERVAL = 0.1

_log = logger("pysampler.server")

_CONTENT_TYPES = {
    "pprof": "application/octet-stream",
    "cpuprofile": "application/json",
    "collapsed": "text/plain; charset=utf-8",
    "heapprofile": "application/json",
}


@dataclass(frozen=True)
class Route:
    """A path the endpoint answers, and what it does."""

    path: str
    handler: Callable[[_Handler, dict[str, str]], None]
    summary: str
    #: parameters taken; None = any (Go's handlers ignore unknown ones and
    #: scrapers may add their own)
    params: tuple[str, ...] | None
    #: starts, stops or cancels a session (or may: the heap paths with
    #: ?seconds): refused to browsers' cross-origin requests (see guard)
    changes_state: bool = True


class _Handler(BaseHTTPRequestHandler):
    """Answers one request whose head the listener has read already."""

    server: _HTTPServer  # type: ignore[assignment]
    server_version = "pysampler"
    protocol_version = "HTTP/1.0"  # one request per connection: no idle threads
    # Buffered: the status line, headers and a small body leave in one
    # send, so the answer waits for the GIL once, not once per write.
    wbufsize = 1 << 16

    _responded = False
    #: the processes named by ``?pid=`` (repeatable); empty: all of them
    pids: list[int] = []  # noqa: RUF012 (read-only default)

    def __init__(self, request: Any, client_address: Any, server: Any, head: bytes) -> None:
        self._head = head
        super().__init__(request, client_address, server)

    # -- plumbing --------------------------------------------------------

    def setup(self) -> None:
        super().setup()  # the listener gave the socket its send timeout
        # The request line and headers, read by the listener; the endpoint
        # reads no body, and the socket is watched for EOF directly.
        self.rfile.close()
        self.rfile = io.BytesIO(self._head)

    def log_message(self, format: str, *args: Any) -> None:
        # No access log: the program's stderr is its own.
        pass

    def do_GET(self) -> None:
        self._responded = False
        try:
            if self.server.token is None:
                # with a token, a rebinding page cannot get in anyway, and
                # the endpoint is reached by whatever name its users use
                refused = guard.host_refusal(self.headers.get("Host"), self.server.allowed_hosts)
                if refused is not None:
                    raise HttpError(403, refused)
            self._check_token()
            url = urlsplit(self.path)
            route = ROUTES.get(url.path)
            if route is None:
                raise HttpError(404, f"no such path: {url.path[:200]}", paths=sorted(ROUTES))
            if route.changes_state:
                cross = guard.cross_origin_refusal(self.headers, self.headers.get("Host"))
                if cross is not None:
                    raise HttpError(
                        403,
                        f"a browser request from another site ({cross}) may not start, stop "
                        "or cancel a profile; open the URL directly or use curl",
                    )
            self.pids, query_text = grouped.split_pids(url.query)
            route.handler(self, query.parse(query_text, route.params))
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
        self,
        profile: Profile | HeapProfile,
        fmt: formats.Format,
        filename: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = profile.to_bytes(fmt.name)
        self._send(
            200,
            body,
            _CONTENT_TYPES.get(fmt.name, "application/octet-stream"),
            {"Content-Disposition": f'attachment; filename="{filename}"', **(headers or {})},
        )

    # -- waiting while a profile is taken ----------------------------------

    def _wait(self, session: sessions.Session, seconds: float) -> str:
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

    def _take(self, session: sessions.Session, seconds: float) -> Profile | HeapProfile | None:
        """Wait ``seconds`` while ``session`` records, then stop it; the
        profile, or None when the client hung up (nothing to answer)."""
        try:
            outcome = self._wait(session, seconds)
        except BaseException:
            sessions.abort(session)  # the profiler is free when this request ends
            raise
        return sessions.conclude(session, outcome)

    def _timed_profile(
        self,
        seconds: float,
        hz: float,
        mode: str,
        fmt: formats.Format,
        filename: str | None,
        asyncio: bool = False,
    ) -> None:
        pids = grouped.targets(self)
        if pids is not None:
            fields = {"hz": hz, "mode": mode, "asyncio": asyncio}
            grouped.timed_cpu(self, pids, seconds, fields, fmt, filename)
            return
        session = sessions.begin(self.server, "cpu", hz=hz, mode=mode, asyncio=asyncio)
        profile = self._take(session, seconds)
        if profile is None:
            return
        if filename is None:
            filename = query.profile_filename("cpu", session.started_unix, seconds, fmt)
        self._send_profile(profile, fmt, filename)

    def _timed_heap(
        self,
        seconds: float,
        sample_bytes: float,
        view: str,
        fmt: formats.Format,
        filename: str | None,
    ) -> None:
        pids = grouped.targets(self)
        if pids is not None:
            grouped.timed_heap(self, pids, seconds, sample_bytes, view, fmt, filename)
            return
        session = sessions.begin(self.server, "heap", sample_bytes=sample_bytes)
        profile = self._take(session, seconds)
        if profile is None:
            return
        assert isinstance(profile, HeapProfile)
        if filename is None:
            filename = query.profile_filename("heap", session.started_unix, seconds, fmt)
        self._send_profile(profile.with_view(view), fmt, filename)

    def _heap_now(self, view: str, filename: str) -> None:
        """Answer from the heap session already running (the endpoint's own
        with ``serve(heap=True)``, or the application's): a snapshot, which
        leaves the session running."""
        pids = grouped.targets(self)
        if pids is not None:
            grouped.heap_now(self, pids, view, filename)
            return
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
        seconds = query.duration(params, "duration", self.server.max_duration, None)
        hz, mode = query.rate(params)
        limits.sampling_budget(hz, seconds, "duration")
        tasks = query.asyncio_flag(params, mode)
        self._timed_profile(
            seconds, hz, mode, query.output_format(params, "cpuprofile"), None, tasks
        )

    def profile_cpu_start(self, params: dict[str, str]) -> None:
        hz, mode = query.rate(params)
        tasks = query.asyncio_flag(params, mode)
        pids = grouped.targets(self)
        if pids is not None:
            grouped.start(self, pids, {"hz": hz, "mode": mode, "asyncio": tasks})
            return
        session = sessions.begin(self.server, "cpu", hz=hz, mode=mode, asyncio=tasks, manual=True)
        # A forgotten session must not sample forever, nor past the samples
        # one request may hold.
        limit = limits.started_session_limit(hz, self.server.max_duration)
        session.expiry = threading.Timer(limit, sessions.abort, args=(session,))
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
        fmt = query.output_format(params, "cpuprofile")
        if grouped.stop(self, fmt):
            return
        session = sessions.current()
        if session is None:
            raise HttpError(409, "no profile started with /profile/cpu/start is running")
        if not session.manual:
            raise HttpError(
                409, "the running profile is a timed one; it ends by itself (or /profile/cancel)"
            )
        profile = sessions.finish(session)
        if profile is None:
            raise HttpError(409, "the session had already ended")
        elapsed = time.monotonic() - session.started_mono
        filename = query.profile_filename("cpu", session.started_unix, elapsed, fmt)
        self._send_profile(profile, fmt, filename)

    def profile_cancel(self, params: dict[str, str]) -> None:
        cancelled = [
            session.kind
            for session in (
                sessions.current("cpu"),
                sessions.current("heap", resident=False),
            )
            if session is not None and sessions.abort(session)
        ]
        if grouped.cancel(self):
            cancelled.append("group")
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
            f"<table>\n{rows}</table>\n{grouped.index_html(self)}</body></html>\n"
        )
        self._send(200, page.encode(), "text/html; charset=utf-8", {})

    def pprof_profile(self, params: dict[str, str]) -> None:
        seconds = query.duration(params, "seconds", self.server.max_duration, DEFAULT_PPROF_SECONDS)
        hz, _ = query.rate({k: v for k, v in params.items() if k == "hz"})
        limits.sampling_budget(hz, seconds, "seconds")
        self._timed_profile(seconds, hz, "cpu", formats.get("pprof"), "profile")

    def fgprof(self, params: dict[str, str]) -> None:
        seconds = query.duration(params, "seconds", self.server.max_duration, DEFAULT_PPROF_SECONDS)
        hz, _ = query.rate({k: v for k, v in params.items() if k == "hz"})
        limits.sampling_budget(hz, seconds, "seconds")
        fmt = query.output_format({"format": params.get("format", "pprof")}, "pprof")
        tasks = query.asyncio_flag(params, "wall")
        filename = "profile" if fmt.name == "pprof" else None
        self._timed_profile(seconds, hz, "wall", fmt, filename, tasks)

    def profile_heap(self, params: dict[str, str]) -> None:
        seconds = query.duration(params, "duration", self.server.max_duration, None)
        sample_bytes = query.sample_bytes(params)
        fmt = query.heap_format(params)
        self._timed_heap(seconds, sample_bytes, "inuse", fmt, None)

    def pprof_heap(self, params: dict[str, str]) -> None:
        if "seconds" not in params:
            self._heap_now("inuse", "heap")
            return
        seconds = query.duration(params, "seconds", self.server.max_duration, None)
        self._timed_heap(seconds, query.sample_bytes(params), "inuse", formats.get("pprof"), "heap")

    def profile_heap_snapshot(self, params: dict[str, str]) -> None:
        collect = query.flag(params, "collect")
        if grouped.heap_snapshot(self, collect):
            return  # another process's, named by ?pid=N
        # Imported on use: an idle endpoint does not load the walker.
        from pysampler import heapsnapshot

        if not heapsnapshot.supported():
            raise HttpError(
                501, "heap snapshots need the GIL: not supported on free-threaded CPython"
            )

        started = int(time.time())
        try:
            with heapsnapshot.taking(collect=collect) as parts:
                self._responded = True
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(parts.size))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header(
                    "Content-Disposition",
                    f'attachment; filename="heap_{started}{heapsnapshot.SUFFIX}"',
                )
                # the program was paused this long while the graph was read
                self.send_header("X-Pysampler-Pause-Ms", f"{parts.pause_seconds * 1000:.1f}")
                info = parts.info()
                self.send_header("X-Pysampler-Nodes", str(info.nodes))
                self.send_header("X-Pysampler-Edges", str(info.edges))
                self.end_headers()
                parts.write_to(self.wfile)
        except SnapshotInProgress:
            raise HttpError(409, "a heap snapshot is already being taken") from None

    def pprof_allocs(self, params: dict[str, str]) -> None:
        if "seconds" not in params:
            self._heap_now("alloc", "allocs")
            return
        seconds = query.duration(params, "seconds", self.server.max_duration, None)
        self._timed_heap(
            seconds, query.sample_bytes(params), "alloc", formats.get("pprof"), "allocs"
        )


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
        Route("/debug/pprof/", _Handler.pprof_index, "this index", None, changes_state=False),
        Route("/debug/pprof", _Handler.pprof_index, "this index", None, changes_state=False),
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
            "/profile/heap_snapshot",
            _Handler.profile_heap_snapshot,
            "heap snapshot of the object graph for Chrome DevTools' Memory panel "
            "(.heapsnapshot); the program is paused while the graph is read "
            "(&collect=1 runs the garbage collector first; in a group, &pid=N for another "
            "process than this one)",
            ("collect",),
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
