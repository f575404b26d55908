"""A small client for the profiling endpoint (docs/http-endpoint.md), shared
by ``pysampler top URL`` and ``pysampler record URL``.

It runs in the command-line process, never in the profiled one. Each
profile is one timed GET (``/profile/cpu?duration=S``, ``/profile/heap``):
the service profiles for S seconds and answers with the file. Cancelling a
request closes its socket; the endpoint notices the hang-up within 0.1 s
and discards the session, so an interrupted client leaves no session open
in the service.

Failures become :class:`EndpointError`: one line of text, and whether
trying again later can help (a refused connection, a timeout, 409 busy)
or not (401, 400, 404).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

#: seconds to wait for a TCP connection
CONNECT_TIMEOUT = 5.0
#: seconds an answer may take beyond the profile's own duration (stopping
#: the session and writing the file in a busy service)
ANSWER_GRACE = 15.0
#: environment variable holding the endpoint's bearer token (the same one
#: the service reads)
TOKEN_VARIABLE = "PYSAMPLER_TOKEN"

# host:port, [v6]:port; a bare name with a port and nothing else
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})(/.*)?$")


class EndpointError(Exception):
    """A request to the endpoint failed; ``str()`` is one line for the user.

    Attributes:
        retry: whether the same request may succeed later (the service is
            restarting, busy with another session, or slow).
        status: the HTTP status, when an answer came.
        parameter: the query parameter a 400 answer names, if any.
    """

    def __init__(
        self, message: str, retry: bool, status: int | None = None, parameter: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status
        self.parameter = parameter


class Cancelled(Exception):
    """The request was cancelled by :meth:`Request.cancel`."""


@dataclass(frozen=True)
class Endpoint:
    """Where a service's profiling endpoint listens.

    Attributes:
        scheme: ``http`` or ``https``.
        host: host name or address (IPv6 without brackets).
        port: TCP port.
        prefix: path the endpoint's routes hang under ("" normally; set
            when a reverse proxy serves it under a path).
        token: bearer token, or None.
    """

    scheme: str
    host: str
    port: int
    prefix: str = ""
    token: str | None = None

    @property
    def display(self) -> str:
        """``host:port`` as the user would type it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}{self.prefix}"

    def path(self, route: str, params: Sequence[tuple[str, str]] = ()) -> str:
        """The request path of ``route`` with its query string."""
        query = f"?{urlencode(list(params))}" if params else ""
        return f"{quote(self.prefix)}{route}{query}"


def is_url(text: str) -> bool:
    """Whether a command-line argument names an endpoint rather than a file:
    ``http://`` or ``https://``, or ``host:port`` that is not an existing file."""
    if text.startswith(("http://", "https://")):
        return True
    return not os.path.exists(text) and _HOST_PORT.match(text) is not None


def parse(text: str, token: str | None = None) -> Endpoint:
    """An :class:`Endpoint` from ``http://host:port[/prefix]``, ``https://...``
    or ``host:port``; the token from ``token`` or ``$PYSAMPLER_TOKEN``.

    Raises:
        ValueError: not such an address.
    """
    raw = text if "://" in text else f"http://{text}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: only http:// and https:// endpoints are supported")
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host in the address")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number from 0 to 65535") from None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r}: give the endpoint's address only (scheme, host, port)")
    prefix = parts.path.rstrip("/")
    if token is None:
        token = os.environ.get(TOKEN_VARIABLE) or None
    return Endpoint(parts.scheme, parts.hostname, port, prefix, token)


def plain_number(value: float) -> str:
    """A number as the endpoint's query parser takes it: plain decimals, no
    exponent (``0.5``, ``30``)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


class Request:
    """One GET to the endpoint; :meth:`cancel` from another thread ends it.

    Args:
        endpoint: where to send it.
        route: the route, e.g. ``/profile/cpu``.
        params: query parameters, in order (a name may repeat).
        seconds: how long the service profiles before it answers; the
            answer is awaited that long plus :data:`ANSWER_GRACE`.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        route: str,
        params: Sequence[tuple[str, str]] = (),
        seconds: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        self.route = route
        self.target = endpoint.path(route, params)
        self.read_timeout = seconds + ANSWER_GRACE
        self._lock = threading.Lock()
        self._cancelled = False
        self._sock: socket.socket | None = None

    def cancel(self) -> None:
        """End the request: its socket is shut down, which the endpoint
        takes as the client hanging up (it discards the session)."""
        with self._lock:
            self._cancelled = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def send(self) -> bytes:
        """Send the request and return the answer's body (status 200).

        Raises:
            EndpointError: no connection, a timeout, or an error status.
            Cancelled: :meth:`cancel` was called.
        """
        ep = self.endpoint
        conn: http.client.HTTPConnection
        if ep.scheme == "https":
            conn = http.client.HTTPSConnection(
                ep.host, ep.port, timeout=CONNECT_TIMEOUT, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(ep.host, ep.port, timeout=CONNECT_TIMEOUT)
        try:
            if self._cancelled:
                raise Cancelled
            try:
                conn.connect()
            except OSError as exc:
                raise self._connect_error(exc) from None
            assert conn.sock is not None
            with self._lock:
                if self._cancelled:
                    raise Cancelled
                self._sock = conn.sock
            conn.sock.settimeout(self.read_timeout)
            headers = {"User-Agent": "pysampler-cli", "Accept": "*/*"}
            if ep.token:
                headers["Authorization"] = f"Bearer {ep.token}"
            try:
                conn.request("GET", self.target, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (socket.timeout, TimeoutError):
                if self._cancelled:
                    raise Cancelled from None
                raise EndpointError(
                    f"{ep.display}: no answer within {self.read_timeout:.3g} s", retry=True
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                if self._cancelled:
                    raise Cancelled from None
                raise EndpointError(
                    f"{ep.display}: the connection broke ({_reason(exc)})", retry=True
                ) from None
        finally:
            with self._lock:
                self._sock = None
            conn.close()
        if self._cancelled:
            raise Cancelled
        if response.status != 200:
            raise self._status_error(response.status, body)
        return body

    def _connect_error(self, exc: OSError) -> EndpointError:
        where = self.endpoint.display
        if isinstance(exc, ConnectionRefusedError):
            return EndpointError(
                f"{where}: connection refused (is the service running with PYSAMPLER_PORT set?)",
                retry=True,
            )
        if isinstance(exc, socket.gaierror):
            return EndpointError(
                f"cannot resolve {self.endpoint.host!r}: {_reason(exc)}", retry=False
            )
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return EndpointError(f"{where}: no connection within {CONNECT_TIMEOUT:.0f} s", True)
        if isinstance(exc, ssl.SSLError):
            return EndpointError(f"{where}: TLS failed ({_reason(exc)})", retry=False)
        return EndpointError(f"{where}: cannot connect ({_reason(exc)})", retry=True)

    def _status_error(self, status: int, body: bytes) -> EndpointError:
        where = self.endpoint.display
        message, parameter = _error_text(body)
        if status == 401:
            if self.endpoint.token:
                text = f"{where}: the token was refused (401)"
            else:
                text = f"{where} needs a token (401): pass --token or set {TOKEN_VARIABLE}"
            return EndpointError(text, retry=False, status=status)
        if status == 409:
            return EndpointError(f"{where}: busy (409): {message}", retry=True, status=status)
        if status == 404 and parameter is None:  # with one: e.g. no such pid here
            return EndpointError(
                f"{where}{self.route}: not found (404); is this a pysampler endpoint?",
                retry=False,
                status=status,
            )
        retry = status >= 500  # a server error or a server shutting down may pass
        return EndpointError(f"{where}: {message} ({status})", retry, status, parameter)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _error_text(body: bytes) -> tuple[str, str | None]:
    """The endpoint's JSON error message (or the start of the body) and the
    parameter it names."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            parameter = doc.get("parameter")
            return str(doc["error"]), parameter if isinstance(parameter, str) else None
    except ValueError:
        pass
    text = body[:200].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "no message", None
