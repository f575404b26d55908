"""The leader's side of a group request: ask every member at once, wait for
their answers no longer than the window plus :data:`GRACE`, merge.

:class:`Endpoint` hangs on the leader's HTTP server (``httpd.group``);
the routes call it when a request concerns other processes than this one.
All waiting happens in the request's own thread, on one selector over the
members' connections and the HTTP client's (whose hanging up cancels the
members' sessions, as it cancels a lone process's).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pysampler.group import channel, rundir, wire
from pysampler.heap_profile import HeapProfile
from pysampler.merge import merge_heap_profiles, merge_profiles
from pysampler.profile import ProcessInfo, Profile
from pysampler.server.query import HttpError

if TYPE_CHECKING:
    from pysampler.group.member import Group
    from pysampler.heapsnapshot import Writable

#: seconds a member may take, after the window ends, to stop its session,
#: build its profile and send it; past it the profile is merged without it
GRACE = 3.0
#: members have this long to say who they are (the index page)
INFO_TIMEOUT = 1.0
#: how often a waiting request looks for a client that hung up or a cancel
POLL_INTERVAL = 0.1
#: a member has this long to take a heap snapshot (the program is paused
#: meanwhile: about 1.4 s for a million objects) and start sending it
SNAPSHOT_TIMEOUT = 120.0
#: then each part of the snapshot has this long to arrive
STREAM_TIMEOUT = 30.0


@dataclass(eq=False)
class _Call:
    """One member's part of a request."""

    pid: int
    sock: socket.socket | None
    reader: channel.Reader = field(default_factory=channel.Reader)
    started: bool = False
    header: dict[str, Any] | None = None
    payload: bytes = b""
    why: str = ""  #: why there is no answer
    status: int = 0  #: the member's HTTP-like status when it refused

    @property
    def over(self) -> bool:
        return self.header is not None or bool(self.why)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()

    def copy_to(self, out: Writable, length: int) -> None:
        """Copy the ``length`` bytes that follow the answer's header to
        ``out``, a megabyte at a time.

        Raises:
            OSError: the member's connection closed or stalled first.
        """
        assert self.sock is not None
        self.sock.setblocking(True)
        self.sock.settimeout(STREAM_TIMEOUT)
        data = self.reader.rest()
        left = length
        while left > 0:
            if not data:
                data = self.sock.recv(min(1 << 20, left))
                if not data:
                    raise ConnectionResetError(f"process {self.pid} stopped sending its snapshot")
            chunk = data[:left]
            out.write(chunk)
            left -= len(chunk)
            data = b""


@dataclass(eq=False)
class Merged:
    """What a group request gathered: the merged profile and who answered."""

    profile: Profile | HeapProfile
    answered: list[int]
    missing: dict[int, str]
    started_unix: float

    def headers(self) -> dict[str, str]:
        out = {"X-Pysampler-Pids": " ".join(map(str, self.answered))}
        if self.missing:
            out["X-Pysampler-Missing-Pids"] = " ".join(map(str, self.missing))
        return out


@dataclass(eq=False)
class _Manual:
    """A group session started by /profile/cpu/start."""

    calls: list[_Call]
    missing: dict[int, str]
    started_unix: float
    started_mono: float
    expiry: threading.Timer | None = None


class Endpoint:
    """A group's endpoint, in the process that leads it."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self._busy = {"cpu": threading.Lock(), "heap": threading.Lock()}
        self._lock = threading.Lock()
        self._cancels: set[threading.Event] = set()
        self._manual: _Manual | None = None

    # -- who is in the group -------------------------------------------------

    def pids(self) -> list[int]:
        """This process and every live member (sockets of processes that
        are gone are removed on the way)."""
        own = os.getpid()
        out = [own]
        for pid in rundir.member_pids(self.group.path):
            if pid == own:
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self._forget(pid)
                continue
            except PermissionError:
                self._forget(pid)  # the pid now belongs to someone else
                continue
            out.append(pid)
        return out

    def _forget(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            os.unlink(rundir.socket_path(self.group.path, pid))

    def targets(self, wanted: list[int] | None) -> list[int] | None:
        """The pids a request is for; None when it is for this process
        alone (the lone-process routes answer it, as without a group).

        Raises:
            HttpError: 404 naming a ``pid`` that is not in the group.
        """
        members = self.pids()
        if wanted:
            unknown = [p for p in wanted if p not in members]
            if unknown:
                raise HttpError(
                    404,
                    f"no process {unknown[0]} here; this endpoint profiles processes "
                    + ", ".join(map(str, members)),
                    "pid",
                    pids=members,
                )
            members = [p for p in members if p in wanted]
        return None if members == [os.getpid()] else members

    # -- talking to members --------------------------------------------------

    def _open(self, pids: list[int], header: dict[str, Any], stream: bool = False) -> list[_Call]:
        """Send ``header`` to every pid; this process answers in-process.
        With ``stream``, the answer is a header followed by a stream of
        bytes (read with :meth:`_Call.copy_to`), not messages."""
        data = channel.encode(header)
        calls = []
        for pid in pids:
            if pid == os.getpid():
                sock, theirs = socket.socketpair()
                threading.Thread(
                    target=self.group.serve_connection,
                    args=(theirs,),
                    name="pysampler-group-request",
                    daemon=True,
                ).start()
            else:
                # without waiting: a Unix socket connects at once, unless
                # the member has left its queue full (it is stopped or hung)
                try:
                    sock = channel.connect(rundir.socket_path(self.group.path, pid), 0.0)
                except (FileNotFoundError, ConnectionRefusedError):
                    self._forget(pid)
                    calls.append(_Call(pid, None, why="exited before the request"))
                    continue
                except BlockingIOError:
                    why = "unreachable (its control socket's queue is full: is it stopped?)"
                    calls.append(_Call(pid, None, why=why))
                    continue
                except OSError as exc:
                    calls.append(_Call(pid, None, why=f"unreachable ({exc})"))
                    continue
            call = _Call(pid, sock, channel.Reader(first_only=stream))
            try:
                sock.setblocking(False)
                if sock.send(data) != len(data):  # a few hundred bytes: never cut short
                    call.why = "unreachable (its socket takes no more data)"
            except OSError as exc:
                call.why = f"unreachable ({exc})"
            calls.append(call)
        return calls

    def _collect(
        self,
        calls: list[_Call],
        deadline: float,
        enough: Callable[[_Call], bool],
        client: socket.socket | None = None,
        cancelled: threading.Event | None = None,
        closing: threading.Event | None = None,
    ) -> str:
        """Read replies until every call is ``enough`` or over, or the
        deadline (then the rest did not answer in time). "done", or why
        not: "disconnected" (the HTTP client hung up), "cancelled",
        "closing"."""
        with selectors.DefaultSelector() as selector:
            for call in calls:
                if call.sock is not None and not call.over and not enough(call):
                    selector.register(call.sock, selectors.EVENT_READ, call)
            if client is not None:
                with contextlib.suppress(OSError, ValueError):
                    selector.register(client, selectors.EVENT_READ, None)
            while len(selector.get_map()) > (client is not None):
                if cancelled is not None and cancelled.is_set():
                    return "cancelled"
                if closing is not None and closing.is_set():
                    return "closing"
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in selector.select(min(left, POLL_INTERVAL)):
                    call = key.data
                    if call is None:
                        if _hung_up(key.fileobj):  # type: ignore[arg-type]
                            return "disconnected"
                        selector.unregister(key.fileobj)
                        client = None
                        continue
                    self._read(call)
                    if call.over or enough(call):
                        selector.unregister(key.fileobj)
        for call in calls:
            if not call.over and not enough(call):
                call.why = "did not answer in time"
        return "done"

    @staticmethod
    def _read(call: _Call) -> None:
        assert call.sock is not None
        try:
            data = call.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            call.why = call.why or (
                "lost during the profile (its connection closed: it exited or was killed)"
            )
            return
        try:
            messages = call.reader.feed(data)
        except ValueError as exc:
            call.why = f"sent a malformed answer ({exc})"
            return
        for header, payload in messages:
            if header.get("started"):
                call.started = True
            elif header.get("ok"):
                call.header, call.payload = header, payload
            else:
                call.status = int(header.get("status") or 500)
                call.why = str(header.get("error") or "refused")

    def _merge(self, calls: list[_Call], started_unix: float) -> Merged:
        answered: list[tuple[ProcessInfo, Any]] = []
        for call in calls:
            if call.header is None:
                continue
            try:
                member = call.header["member"]
                info = ProcessInfo(
                    int(member["pid"]),
                    float(member["start_time"]),
                    str(member["role"]),
                    str(member["command"]),
                )
                answered.append((info, wire.decode(call.payload)))
            except (KeyError, TypeError, ValueError) as exc:
                call.why = f"sent an unreadable profile ({exc})"
        missing = {c.pid: c.why for c in calls if c.why}
        notes = [f"pid {pid}: {why}" for pid, why in missing.items()]
        if not answered:
            statuses = {c.status for c in calls}
            raise HttpError(
                409 if statuses == {409} else 503,
                "no process of the group answered: " + "; ".join(notes),
                pids=sorted(missing),
            )
        heaps = [(i, p) for i, p in answered if isinstance(p, HeapProfile)]
        cpus = [(i, p) for i, p in answered if isinstance(p, Profile)]
        if len(heaps) == len(answered):
            merged: Profile | HeapProfile = merge_heap_profiles(heaps, notes)
        elif len(cpus) == len(answered):
            merged = merge_profiles(cpus, notes)
        else:
            raise HttpError(500, "the group's processes answered with different kinds of profile")
        return Merged(merged, [i.pid for i, _ in answered], missing, started_unix)

    # -- requests ------------------------------------------------------------

    def timed(
        self,
        kind: str,
        pids: list[int],
        seconds: float,
        fields: dict[str, Any],
        client: socket.socket | None,
        closing: threading.Event | None,
    ) -> Merged | None:
        """Profile ``pids`` for ``seconds`` (``kind`` "cpu" with hz, mode,
        asyncio in ``fields``, or "heap" with sample_bytes); None when the
        client hung up (nothing to answer).

        Raises:
            HttpError: 409 while another group request of the kind runs or
                when it is cancelled, 503 when the server closes, and when
                no member answered.
        """
        busy = self._busy[kind]
        if not busy.acquire(blocking=False):
            raise HttpError(409, f"a {kind} profile of the group requested over HTTP is running")
        cancelled = threading.Event()
        calls: list[_Call] = []
        try:
            with self._lock:
                self._cancels.add(cancelled)
            started_unix = time.time()
            end = time.monotonic() + seconds
            calls = self._open(pids, {"op": kind, "end": end, **fields})
            outcome = self._collect(calls, end + GRACE, lambda c: False, client, cancelled, closing)
            if outcome == "disconnected":
                return None
            if outcome == "closing":
                raise HttpError(503, "the profiling endpoint is shutting down")
            if outcome == "cancelled":
                raise HttpError(409, "the session was cancelled (/profile/cancel)")
            return self._merge(calls, started_unix)
        finally:
            for call in calls:
                call.close()  # a member still waiting ends its session
            with self._lock:
                self._cancels.discard(cancelled)
            busy.release()

    def heap_now(self, pids: list[int]) -> Merged:
        """Every member's running heap session, now."""
        calls = self._open(pids, {"op": "heap_now"})
        try:
            self._collect(calls, time.monotonic() + GRACE, lambda c: False)
            return self._merge(calls, time.time())
        finally:
            for call in calls:
                call.close()

    def heap_snapshot(
        self, pid: int, collect: bool, client: socket.socket | None
    ) -> tuple[dict[str, Any], _Call] | None:
        """Ask process ``pid`` for a heap snapshot of its object graph: its
        answer (``length``, ``pause_ms``, ``nodes``, ``edges``) and the call
        to copy the snapshot from (then close); None when the client hung
        up. A snapshot of one process: two processes' object graphs do not
        merge.

        Raises:
            HttpError: what the member refused with (409 while it takes
                another, 501 on free-threaded CPython), or 503 when it did
                not answer within :data:`SNAPSHOT_TIMEOUT`.
        """
        calls = self._open([pid], {"op": "heap_snapshot", "collect": collect}, stream=True)
        call = calls[0]
        try:
            deadline = time.monotonic() + SNAPSHOT_TIMEOUT
            outcome = self._collect(calls, deadline, lambda c: False, client)
            if outcome == "disconnected":
                call.close()
                return None
            if call.header is None:
                raise HttpError(
                    call.status or 503, f"process {pid} took no heap snapshot: {call.why}"
                )
            return call.header, call
        except BaseException:
            call.close()
            raise

    def members(self) -> list[dict[str, Any]]:
        """Who is in the group: pid, start time, role, command line."""
        pids = self.pids()
        calls = self._open(pids, {"op": "info"})
        try:
            self._collect(calls, time.monotonic() + INFO_TIMEOUT, lambda c: False)
        finally:
            for call in calls:
                call.close()
        out = []
        for call in calls:
            if call.header is not None and isinstance(call.header.get("member"), dict):
                out.append(call.header["member"])
            else:
                out.append({"pid": call.pid, "role": f"({call.why or 'no answer'})"})
        return out

    # -- /profile/cpu/start, stop, cancel ------------------------------------

    @property
    def manual_running(self) -> bool:
        return self._manual is not None

    def start(self, pids: list[int], fields: dict[str, Any], limit: float) -> _Manual:
        """Start a CPU session in every member, to be ended by :meth:`stop`
        (or :meth:`cancel`, or after ``limit`` seconds).

        Raises:
            HttpError: 409 while a group CPU request runs, or when no
                member could start one.
        """
        busy = self._busy["cpu"]
        if not busy.acquire(blocking=False):
            raise HttpError(409, "a cpu profile of the group requested over HTTP is running")
        try:
            started_unix, started_mono = time.time(), time.monotonic()
            calls = self._open(pids, {"op": "cpu", "end": None, **fields})
            self._collect(calls, time.monotonic() + GRACE, lambda c: c.started)
            running = [c for c in calls if c.started and not c.over]
            missing = {c.pid: c.why for c in calls if c.why}
            if not running:
                for call in calls:
                    call.close()
                raise HttpError(
                    409 if {c.status for c in calls} == {409} else 503,
                    "no process of the group could start a session: "
                    + "; ".join(f"pid {p}: {w}" for p, w in missing.items()),
                )
            manual = _Manual(running, missing, started_unix, started_mono)
            manual.expiry = threading.Timer(limit, self.cancel)
            manual.expiry.name = "pysampler-http-expiry"
            manual.expiry.daemon = True
            with self._lock:
                self._manual = manual
            manual.expiry.start()
            return manual
        except BaseException:
            busy.release()
            raise

    def stop(self) -> tuple[Merged, float]:
        """End the session :meth:`start` began: the merged profile and the
        seconds it ran.

        Raises:
            HttpError: 409 when none runs.
        """
        with self._lock:
            manual, self._manual = self._manual, None
        if manual is None:
            raise HttpError(409, "no profile started with /profile/cpu/start is running")
        try:
            if manual.expiry is not None:
                manual.expiry.cancel()
            elapsed = time.monotonic() - manual.started_mono
            for call in manual.calls:
                try:
                    assert call.sock is not None
                    call.sock.send(b"stop\n")
                except OSError:
                    call.why = "lost during the profile (its connection closed)"
            self._collect(manual.calls, time.monotonic() + GRACE, lambda c: False)
            merged = self._merge(manual.calls, manual.started_unix)
            for pid, why in manual.missing.items():
                merged.missing.setdefault(pid, why)
            return merged, elapsed
        finally:
            for call in manual.calls:
                call.close()
            self._busy["cpu"].release()

    def cancel(self) -> bool:
        """Cancel every group session started over HTTP; whether any ran."""
        with self._lock:
            manual, self._manual = self._manual, None
            timed = list(self._cancels)
        for event in timed:
            event.set()
        if manual is not None:
            if manual.expiry is not None:
                manual.expiry.cancel()
            for call in manual.calls:
                call.close()
            self._busy["cpu"].release()
        return manual is not None or bool(timed)


def _hung_up(client: socket.socket) -> bool:
    """Whether a readable HTTP client socket is at EOF (it hung up)."""
    try:
        return not client.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
