"""The endpoint's accept loop: one thread accepts connections and reads
their request headers on a selector; a request gets a thread of its own
only once its headers are complete.

Why not socketserver's ThreadingMixIn: it starts a thread per connection
at accept, and a read timeout is per read, so a client that sends its
headers a byte at a time, or never, holds a thread for as long as it
likes; 60 such connections held 60 threads, with no cap. Here a half-sent
request costs a socket and a buffer, for at most ``header_deadline``
seconds; connections waiting for their headers are capped (a new one
drops the one waiting longest, which under a flood is the flood's own)
and so are handler threads (one over gets a 503 at once). The loop itself
never blocks on a client: sockets are non-blocking until handed to a
handler, so a flood cannot stall accepting.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pysampler.server.limits import Limits

#: connections accepted per wake-up of the loop before it looks at others
_ACCEPT_BURST = 64
_WAKE = object()


class _Pending:
    """A connection whose request headers have not all arrived."""

    __slots__ = ("address", "buffer", "deadline", "sock")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.buffer = bytearray()
        self.deadline = deadline


def _debug(message: str, *args: object) -> None:
    # the logging package is loaded only when there is something to log
    from pysampler._log import logger

    logger("pysampler.server").debug(message, *args, exc_info=True)


def _headers_end(buffer: bytearray, start: int) -> int:
    """Offset just past the blank line that ends the headers, or -1."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = buffer.find(sep, max(0, start - len(sep)))
        if at >= 0:
            return at + len(sep)
    return -1


def _answer_and_close(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """Best effort, never blocking: a short JSON error, then close."""
    import json

    body = (json.dumps({"error": message}) + "\n").encode()
    head = (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(head.encode() + b"\r\n" + body)
        # Read what has arrived unread: closing over unread bytes sends a
        # reset, which can destroy the answer before the client reads it.
        for _ in range(16):
            if not sock.recv(65536):
                break
    with contextlib.suppress(OSError):
        sock.close()


class Listener:
    """Accepts connections on ``sock`` and hands each complete request head
    to ``handle(sock, address, head)`` on a thread of its own.

    ``head`` is everything read before the handler takes over: the request
    line, the headers and the blank line (any bytes after are dropped; the
    endpoint takes no request bodies).
    """

    def __init__(
        self,
        sock: socket.socket,
        handle: Callable[[socket.socket, Any, bytes], None],
        limits: Limits,
        thread_name: str = "pysampler-http-request",
    ) -> None:
        self.socket = sock
        self.limits = limits
        self._handle = handle
        self._thread_name = thread_name
        self._selector = selectors.DefaultSelector()
        self._pending: collections.OrderedDict[int, _Pending] = collections.OrderedDict()
        self._active = 0
        self._active_lock = threading.Lock()
        self._closing = False
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)

    @property
    def active(self) -> int:
        """Requests being answered now (handler threads)."""
        return self._active

    @property
    def pending(self) -> int:
        """Connections still sending their headers."""
        return len(self._pending)

    # -- the loop ------------------------------------------------------------

    def serve_forever(self) -> None:
        """Run the loop until :meth:`shutdown`; on the server's own thread."""
        try:
            while not self._closing:
                timeout = 0.5
                if self._pending:
                    first = next(iter(self._pending.values()))
                    timeout = min(timeout, max(0.0, first.deadline - time.monotonic()))
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        self._accept()
                    elif key.data is _WAKE:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._read(key.data)
                self._expire()
        finally:
            self._drop_pending()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the loop and wait for it (from another thread); requests
        being answered go on. Then close the listening socket."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()
        self.close()

    def close(self) -> None:
        """Close every socket of the loop (from the process that runs it)."""
        self._drop_pending()
        self.close_in_child()

    def close_in_child(self) -> None:
        """Close this process's copies of the loop's sockets and of its
        selector, and unregister nothing: what a forked child does, where
        the loop's thread does not exist. The child's epoll descriptor
        (Linux) is the parent's epoll instance: taking a connection out of
        it there took it out of the parent's loop too, and a request that
        was waiting for its headers when the program forked timed out in
        the parent (408 after 10 s)."""
        self._closing = True
        pending = [p.sock for p in self._pending.values()]
        self._pending.clear()
        for s in (self.socket, self._wake_r, self._wake_w, *pending):
            with contextlib.suppress(OSError):
                s.close()
        with contextlib.suppress(Exception):
            self._selector.close()  # closes the descriptor; no epoll_ctl

    # -- connections ---------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BURST):
            try:
                conn, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # out of descriptors, a connection reset before accept: the
                # loop goes on; the backlog keeps the rest for later
                _debug("pysampler: accept failed")
                return
            conn.setblocking(False)
            if len(self._pending) >= self.limits.max_pending:
                _, oldest = self._pending.popitem(last=False)
                self._forget(oldest)
                _answer_and_close(
                    oldest.sock, 408, "Request Timeout", "too many connections are waiting"
                )
            pending = _Pending(conn, address, time.monotonic() + self.limits.header_deadline)
            try:
                self._selector.register(conn, selectors.EVENT_READ, pending)
            except (OSError, ValueError):
                conn.close()
                continue
            self._pending[id(pending)] = pending

    def _read(self, pending: _Pending) -> None:
        try:
            data = pending.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was complete
            self._pending.pop(id(pending), None)
            self._forget(pending)
            with contextlib.suppress(OSError):
                pending.sock.close()
            return
        start = len(pending.buffer)
        pending.buffer += data
        end = _headers_end(pending.buffer, start)
        if end < 0:
            if len(pending.buffer) > self.limits.max_header_bytes:
                self._pending.pop(id(pending), None)
                self._forget(pending)
                _answer_and_close(
                    pending.sock,
                    431,
                    "Request Header Fields Too Large",
                    f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
                )
            return
        self._pending.pop(id(pending), None)
        self._forget(pending)
        self._dispatch(pending.sock, pending.address, bytes(pending.buffer[:end]))

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            key, first = next(iter(self._pending.items()))
            if first.deadline > now:
                return
            del self._pending[key]
            self._forget(first)
            _answer_and_close(
                first.sock,
                408,
                "Request Timeout",
                f"the request headers did not arrive within {self.limits.header_deadline:g} s",
            )

    def _forget(self, pending: _Pending) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(pending.sock)

    def _drop_pending(self) -> None:
        while self._pending:
            _, pending = self._pending.popitem(last=False)
            self._forget(pending)
            with contextlib.suppress(OSError):
                pending.sock.close()

    # -- handler threads -----------------------------------------------------

    def _dispatch(self, sock: socket.socket, address: Any, head: bytes) -> None:
        with self._active_lock:
            full = self._active >= self.limits.max_active
            if not full:
                self._active += 1
        if full:
            _answer_and_close(
                sock, 503, "Service Unavailable", "the profiling endpoint is busy; retry shortly"
            )
            return
        try:
            sock.setblocking(True)
            sock.settimeout(self.limits.send_timeout)
            thread = threading.Thread(
                target=self._run, args=(sock, address, head), name=self._thread_name, daemon=True
            )
            thread.start()
        except Exception:
            self._release()
            _answer_and_close(sock, 503, "Service Unavailable", "cannot start a thread")

    def _run(self, sock: socket.socket, address: Any, head: bytes) -> None:
        try:
            self._handle(sock, address, head)
        except Exception:
            _debug("pysampler: error on a connection from %s", address)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                sock.close()
            self._release()

    def _release(self) -> None:
        with self._active_lock:
            self._active -= 1
