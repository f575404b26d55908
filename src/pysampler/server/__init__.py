"""On-demand HTTP profiling endpoint: ``pysampler.serve(port)``.

A daemon thread accepts connections and reads request headers
(:mod:`pysampler.server.listener`); each complete request is answered on a
thread of its own by :mod:`pysampler.server.routes`, after the checks of
:mod:`pysampler.server.guard` (Host, cross-origin browser requests). Every
resource a client can make it hold is bounded in
:mod:`pysampler.server.limits`. It costs nothing but an idle thread until a
request asks for a profile, and it only uses the public API (start, stop,
cancel, Profile.to_bytes), so one session at a time holds for the
program's own profiling and for HTTP alike.

Footprint: an idle endpoint (``PYSAMPLER_PORT`` set, nobody profiling) is
one thread and a socket. Only what listening needs is imported with this
module (socket, selectors, threading); the routes, the HTTP machinery
(``http.server`` pulls in email, http.client and ssl), logging and the
profiler itself are imported by the first request.

Routes are listed in :data:`ROUTES`; see docs/http-endpoint.md for the
user-facing description and examples with curl and ``go tool pprof``.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

# first, so that its at-fork handler runs before any other of the package's
from pysampler import _fork_imports  # noqa: F401
from pysampler.server.limits import Limits
from pysampler.server.listener import Listener

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from pysampler.server.routes import Route

__all__ = ["DEFAULT_MAX_DURATION", "ROUTES", "Limits", "Route", "Server", "serve"]

DEFAULT_MAX_DURATION = 600.0
#: mean bytes between heap samples for serve(heap=True): Go's default
#: (pysampler.heap.DEFAULT_SAMPLE_BYTES)
DEFAULT_HEAP_SAMPLE_BYTES = 512 * 1024
#: heap sampling rates a request may ask for (mean bytes between samples):
#: below 4 KiB the sampling itself would slow an allocation-heavy program
#: down noticeably, above 1 GiB a profile would hold almost no samples
MIN_SAMPLE_BYTES = 4096
MAX_SAMPLE_BYTES = 1 << 30


def __getattr__(name: str) -> object:
    # ROUTES and Route live with the request handler, imported on first use
    if name in ("ROUTES", "Route"):
        from pysampler.server import routes

        return getattr(routes, name)
    raise AttributeError(f"module 'pysampler.server' has no attribute {name!r}")


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a second process take a bound port on Windows
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class _HTTPServer:
    """What the request handlers see as ``self.server``: the endpoint's
    settings and its listening socket."""

    def __init__(
        self,
        address: tuple[str, int],
        token: str | None,
        max_duration: float,
        allowed_hosts: frozenset[str] = frozenset(),
        limits: Limits | None = None,
    ) -> None:
        self.token = token
        self.max_duration = max_duration
        self.allowed_hosts = allowed_hosts
        self.limits = limits or Limits()
        self.closing = threading.Event()
        #: the process group this endpoint serves (pysampler.group.member.Group)
        self.group: Any = None
        self.socket = _bind(address[0], address[1], self.limits.backlog)
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        self.listener = Listener(self.socket, self._answer, self.limits)

    def _answer(self, sock: socket.socket, address: Any, head: bytes) -> None:
        # the handler (and http.server) is imported by the first request
        from pysampler.server.routes import _Handler

        _Handler(sock, address, self, head)

    def serve_forever(self) -> None:
        self.listener.serve_forever()

    def shutdown(self) -> None:
        self.listener.shutdown()


#: the servers listening in this process (a server leaves when closed)
_servers: set[_HTTPServer] = set()


def _after_fork_in_child() -> None:
    # The child has no server thread, and no session (see _control). Its
    # copy of a listening socket would keep the port bound, unanswered,
    # after the parent exits: close it. The lock may have been held by a
    # thread that does not exist here.
    sessions = sys.modules.get("pysampler.server.sessions")
    if sessions is not None:  # not imported: no session was ever begun
        sessions.reset_after_fork()
    for httpd in list(_servers):
        httpd.closing.set()
        try:
            httpd.listener.close_in_child()
        except OSError:
            continue


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
        sessions = sys.modules.get("pysampler.server.sessions")
        if sessions is not None:  # not imported: no session was ever begun
            for kind in ("cpu", "heap"):
                session = sessions.current(kind, owner=self._httpd)
                if session is not None:
                    sessions.abort(session)
        self._httpd.shutdown()
        self._thread.join()
        _servers.discard(self._httpd)

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
    allowed_hosts: Iterable[str] = (),
) -> Server:
    """Serve profiles of this process over HTTP from a daemon thread.

    Args:
        port: TCP port; 0 picks a free one (read it from ``.port``).
        host: address to bind; loopback unless you say otherwise. Binding
            another address without a token warns (EndpointExposedWarning).
        token: when given, every request needs ``Authorization: Bearer <token>``.
        max_duration: longest profile a request may ask for, in seconds; also
            how long a session from ``/profile/cpu/start`` may run.
        heap: keep a heap profiling session running from now until
            ``close()``, so ``/debug/pprof/heap`` and ``/debug/pprof/allocs``
            answer at once with everything since, as a Go program's do.
        heap_sample_bytes: mean bytes between heap samples for that session.
        allowed_hosts: host names requests may address besides IP literals
            and ``localhost`` (the name in their Host header; others are
            refused, against DNS rebinding); ``"*"`` allows any. A name
            given as ``host`` is allowed too.

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
        or not 0 < max_duration < float("inf")  # false for NaN too
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
    if isinstance(allowed_hosts, str) or not all(isinstance(h, str) for h in allowed_hosts):
        raise ValueError(f"allowed_hosts must be a list of host names, not {allowed_hosts!r}")
    from pysampler.server import guard

    names = guard.allowed_names([*allowed_hosts, host])
    try:
        httpd = _HTTPServer((host, port), token, float(max_duration), names)
    except OSError as exc:
        # name the address: a bare "Address already in use" names none
        # (str(): "[Errno 98] Address already in use: '127.0.0.1:9119'")
        raise OSError(exc.errno, exc.strerror or str(exc), f"{host}:{port}") from None
    bound = str(httpd.server_address[0])
    if token is None and not guard.is_loopback(bound):
        import warnings

        from pysampler.errors import EndpointExposedWarning

        warnings.warn(
            f"pysampler: the profiling endpoint listens on {bound} port "
            f"{httpd.server_address[1]}, beyond this machine, without a token: anyone who "
            "can reach it can profile this process and read its code paths. Pass "
            "token=... (PYSAMPLER_TOKEN) or bind 127.0.0.1",
            EndpointExposedWarning,
            stacklevel=2,
        )
    if heap:
        from pysampler.errors import ProfilerAlreadyRunning
        from pysampler.server import sessions
        from pysampler.server.query import HttpError

        try:
            sessions.begin(httpd, "heap", resident=True, sample_bytes=heap_sample_bytes)
        except HttpError as exc:
            httpd.listener.close()
            raise ProfilerAlreadyRunning(str(exc.body["error"])) from None
    thread = threading.Thread(
        target=httpd.serve_forever,
        name="pysampler-http",
        daemon=True,
    )
    thread.start()
    _servers.add(httpd)
    return Server(httpd, thread)
