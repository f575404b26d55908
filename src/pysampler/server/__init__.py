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
import logging
import math
import os
import socket
import sys
import threading
import weakref
from http.server import ThreadingHTTPServer
from typing import Any

from pysampler import heap as _heap
from pysampler.errors import ProfilerAlreadyRunning
from pysampler.server import sessions
from pysampler.server.query import MAX_SAMPLE_BYTES, MIN_SAMPLE_BYTES, HttpError
from pysampler.server.routes import ROUTES, Route, _Handler

__all__ = ["DEFAULT_MAX_DURATION", "ROUTES", "Route", "Server", "serve"]

DEFAULT_MAX_DURATION = 600.0
#: mean bytes between heap samples for serve(heap=True): Go's default
DEFAULT_HEAP_SAMPLE_BYTES = _heap.DEFAULT_SAMPLE_BYTES

_log = logging.getLogger("pysampler.server")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # request threads never hold up interpreter exit
    block_on_close = False
    # SO_REUSEADDR lets a second process take a bound port on Windows
    allow_reuse_address = sys.platform != "win32"
    #: the process group this endpoint serves (pysampler.group.leader.Endpoint)
    group: Any = None

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
    sessions.reset_after_fork()
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
            session = sessions.current(kind, owner=self._httpd)
            if session is not None:
                sessions.abort(session)
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
            sessions.begin(httpd, "heap", resident=True, sample_bytes=heap_sample_bytes)
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
