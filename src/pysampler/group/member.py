"""This process's membership of a group: founding or joining it at start-up,
re-joining after fork, its control thread, the leader lock, and what a
member does when the leader asks for a profile.

One :class:`Group` per process (``_group``). A member's only thread,
``pysampler-group``, waits on the member's control socket and, once a
:data:`TICK`, tries the leader lock; each control connection is served by
a short-lived ``pysampler-group-request`` thread. The leader has no control
socket: it answers its own part of a request in-process, over a socket
pair, with the same code (:meth:`Group.serve_connection`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import socket
import sys
import threading
import time

# first, so that its at-fork handler runs before any other of the package's
from pysampler import _fork_imports  # noqa: F401
from pysampler.group import ENV, channel, rundir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pysampler.group.leader import Endpoint
    from pysampler.heapsnapshot import SnapshotParts
    from pysampler.server import Server
    from pysampler.server.sessions import Session

#: seconds between a member's tries of the leader lock; a group whose
#: leader exits has an endpoint again within about this long
TICK = 1.0
#: a connection has this long to send its request
HEADER_TIMEOUT = 5.0
#: a reply (a profile) has this long to be written to the leader
SEND_TIMEOUT = 30.0
#: how often a waiting member looks for a leader that hung up or a cancel
POLL_INTERVAL = 0.1
#: control connections a member answers at once (each on a thread of its
#: own); more are closed unanswered, as the HTTP endpoint's 503
MAX_ACTIVE = 8


def _debug(message: str) -> None:
    # the logging package is loaded only when there is something to log
    from pysampler._log import logger

    logger("pysampler.group").debug(message, exc_info=True)


class Refused(Exception):
    """A request a member will not serve, with an HTTP-like status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Settings:
    """The endpoint's settings, as the start-up hook read them from the
    environment; every member keeps them to serve the port if it leads.
    (A plain class: dataclasses imports inspect, and typing's NamedTuple
    typing, neither of which an idle member needs otherwise.)"""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        token: str | None = None,
        max_duration: float = 600.0,
        heap: bool = False,
        heap_sample_bytes: int = 512 * 1024,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.port = port
        self.host = host
        self.token = token
        self.max_duration = max_duration
        self.heap = heap
        self.heap_sample_bytes = heap_sample_bytes
        self.allowed_hosts = allowed_hosts


def _command() -> str:
    """This process's command line as ``ps`` shows it (a title set with
    setproctitle, as gunicorn's and Celery's workers do, included)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            raw = f.read(4096)
        text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        text = " ".join(getattr(sys, "orig_argv", None) or sys.argv)
    return text[:300]


class Group:
    """This process's place in a group."""

    def __init__(
        self, path: str, settings: Settings, role: str, lock_fd: int | None = None
    ) -> None:
        self.path = path
        self.settings = settings
        self.role = role
        self.pid = os.getpid()
        self.joined = time.time()
        self.lock_fd = rundir.open_lock(path) if lock_fd is None else lock_fd
        #: the HTTP endpoint, while this process leads
        self.server: Server | None = None
        self.listener: socket.socket | None = None
        self._inode = 0
        self.closing = threading.Event()
        self._active = threading.BoundedSemaphore(MAX_ACTIVE)
        self._endpoint: Endpoint | None = None

    # -- who we are ----------------------------------------------------------

    def info(self) -> dict[str, Any]:
        role = self.role
        mp = sys.modules.get("multiprocessing")
        if mp is not None:
            with contextlib.suppress(Exception):
                name = mp.current_process().name
                if name != "MainProcess":
                    role = f"{role} ({name})"
        return {
            "pid": self.pid,
            "start_time": self.joined,
            "role": role,
            "command": _command(),
            "leader": self.server is not None,
        }

    # -- leading -------------------------------------------------------------

    def lead(self, founding: bool = False) -> Server:
        """Serve the group's port from this process (the leader lock is held)."""
        from pysampler.server import serve

        s = self.settings
        port = s.port or rundir.read_port(self.path)
        # the founder keeps the heap session for /debug/pprof/heap in the
        # server, as a lone process does; members run their own (see _run)
        heap = founding and s.heap
        args = (s.host, s.token, s.max_duration, heap, s.heap_sample_bytes, s.allowed_hosts)
        try:
            server = serve(port, *args)
        except OSError:
            if s.port or not port:
                raise
            server = serve(0, *args)
        # what answers for the group is made by its first request (it
        # imports the profile and merge code an idle endpoint does without)
        server._httpd.group = self
        self.server = server
        with contextlib.suppress(OSError):
            rundir.write_port(self.path, server.port)
        if not founding and s.port == 0:
            # as the hook does for PYSAMPLER_PORT=0: the only way to learn it
            sys.stderr.write(f"pysampler: profiling endpoint on {server.url}\n")
        return server

    def endpoint(self) -> Endpoint:
        """The leader's side of group requests (made on first use)."""
        if self._endpoint is None:
            from pysampler.group.leader import Endpoint

            self._endpoint = Endpoint(self)
        return self._endpoint

    # -- being a member ------------------------------------------------------

    def listen(self) -> None:
        """Open this member's control socket and start its thread."""
        self._bind()
        thread = threading.Thread(target=self._run, name="pysampler-group", daemon=True)
        thread.start()

    def _bind(self) -> None:
        path = rundir.socket_path(self.path, self.pid)
        self.listener = channel.listen(path)
        self._inode = os.stat(path).st_ino

    def _run(self) -> None:
        if self.settings.heap:
            self._start_resident_heap()
        # members started together (a pool) try the lock at different times
        # (os.urandom rather than the random module: nothing more to import)
        next_tick = time.monotonic() + TICK * int.from_bytes(os.urandom(2), "little") / 65536
        # poll(2) rather than epoll: no descriptor of its own while idle
        poll = getattr(selectors, "PollSelector", selectors.DefaultSelector)
        with poll() as selector:
            listener = self.listener
            assert listener is not None
            selector.register(listener, selectors.EVENT_READ)
            while not self.closing.is_set():
                try:
                    ready = selector.select(max(0.0, next_tick - time.monotonic()))
                    if ready:
                        self._accept(listener)
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + TICK
                        self._tick()
                        if self.listener is not listener and self.listener is not None:
                            selector.unregister(listener)
                            listener.close()
                            listener = self.listener
                            selector.register(listener, selectors.EVENT_READ)
                except Exception:
                    # never end the thread: the member would leave the group
                    _debug("pysampler: group thread error")
                    time.sleep(TICK)

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            time.sleep(0.1)  # out of descriptors: try again later
            return
        if not channel.same_user(conn) or not self._active.acquire(blocking=False):
            conn.close()  # another user's, or more than a member answers at once
            return
        try:
            threading.Thread(
                target=self._serve_counted,
                args=(conn,),
                name="pysampler-group-request",
                daemon=True,
            ).start()
        except Exception:
            self._active.release()
            conn.close()

    def _serve_counted(self, conn: socket.socket) -> None:
        try:
            self.serve_connection(conn)
        finally:
            self._active.release()

    def _tick(self) -> None:
        if self.server is None and rundir.try_lock(self.lock_fd):
            try:
                self.lead()
            except OSError:
                # the port is still taken: keep the lock and try again
                _debug("pysampler: cannot take the group's port yet")
        # the socket file removed (a temp cleaner, a leader that took it for
        # a dead process's): put it back
        path = rundir.socket_path(self.path, self.pid)
        try:
            gone = os.stat(path).st_ino != self._inode
        except FileNotFoundError:
            gone = True
        if gone and self.listener is not None:
            with contextlib.suppress(OSError):
                rundir.make_private(self.path)
                self._bind()

    def _start_resident_heap(self) -> None:
        from pysampler.server import sessions
        from pysampler.server.query import HttpError

        with contextlib.suppress(HttpError):
            sessions.begin(
                self, "heap", resident=True, sample_bytes=self.settings.heap_sample_bytes
            )

    # -- answering the leader ------------------------------------------------

    def serve_connection(self, conn: socket.socket) -> None:
        """Answer one request of the leader on ``conn``, then close it.
        (Nothing heavy is imported for "info": a member may be answering
        while its program still starts.)"""
        with conn:
            try:
                message = channel.read_message(conn, HEADER_TIMEOUT)
                if message is None:
                    return
                header = message[0]
                op = header.get("op")
                try:
                    if op == "info":
                        reply: tuple[dict[str, Any], bytes] | None = (
                            {"ok": True, "member": self.info()},
                            b"",
                        )
                    elif op in ("cpu", "heap"):
                        reply = self._profile(conn, header)
                    elif op == "heap_now":
                        reply = self._heap_now()
                    elif op == "heap_snapshot":
                        self._heap_snapshot(conn, header)
                        reply = None  # sent as it was taken
                    else:
                        raise Refused(400, f"unknown request {op!r}")
                except Refused as exc:
                    reply = ({"ok": False, "status": exc.status, "error": str(exc)}, b"")
                except (ValueError, TypeError, KeyError) as exc:
                    reply = ({"ok": False, "status": 400, "error": f"bad request: {exc}"}, b"")
                if reply is not None:
                    conn.settimeout(SEND_TIMEOUT)
                    conn.sendall(channel.encode(*reply))
            except OSError:
                pass  # the leader went away
            except Exception:
                from pysampler._log import logger

                logger("pysampler.group").exception("pysampler: error answering the group's leader")

    def _profile(
        self, conn: socket.socket, header: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes] | None:
        end = header.get("end")
        if isinstance(end, (int, float)) and end <= time.monotonic():
            # read after its window (this process was stopped, or swapped
            # out): the leader has answered without it; start nothing that
            # would hold the profiler when the next request comes
            raise Refused(409, "the request's window had ended when it was read")
        from pysampler import _control
        from pysampler.group import wire
        from pysampler.server import limits, sessions
        from pysampler.server.query import HttpError

        kind = header["op"]
        try:
            if kind == "cpu":
                hz, mode = _control.validate(header["hz"], header["mode"])
                # this process's share of the request's samples
                rows = header.get("max_samples", limits.MAX_REQUEST_SAMPLES)
                if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
                    raise ValueError(f"max_samples must be a positive integer, not {rows!r}")
                session = sessions.begin(
                    self,
                    "cpu",
                    hz=hz,
                    mode=mode,
                    asyncio=bool(header.get("asyncio", False)),
                    max_samples=rows,
                )
            else:
                rate = float(header["sample_bytes"])
                session = sessions.begin(self, "heap", sample_bytes=rate)
        except HttpError as exc:
            raise Refused(exc.status, str(exc)) from None
        try:
            conn.sendall(channel.encode({"started": True}))
            longest = time.monotonic() + self.settings.max_duration
            # a manual session (no end) runs until "stop", or the maximum
            end = longest if not isinstance(end, (int, float)) else min(float(end), longest)
            outcome = self._wait(conn, session, end)
        except BaseException:
            sessions.abort(session)
            raise
        try:
            profile = sessions.conclude(session, outcome)
        except HttpError as exc:
            raise Refused(exc.status, str(exc)) from None
        if profile is None:
            return None  # the leader hung up
        return {"ok": True, "member": self.info()}, wire.encode(profile)

    def _wait(self, conn: socket.socket, session: Session, end: float) -> str:
        """Until ``end`` or a "stop" from the leader: "done"; "disconnected"
        when the leader hung up, "cancelled" when the session was cancelled
        (the outcomes of sessions.conclude)."""
        with selectors.DefaultSelector() as selector:
            selector.register(conn, selectors.EVENT_READ)
            while True:
                if session.cancelled.is_set():
                    return "cancelled"
                left = end - time.monotonic()
                if left <= 0:
                    return "done"
                if not selector.select(min(left, POLL_INTERVAL)):
                    continue
                try:
                    data = conn.recv(64)
                except (BlockingIOError, InterruptedError, socket.timeout):
                    continue
                except OSError:
                    return "disconnected"
                if not data:
                    return "disconnected"
                if b"stop" in data:
                    return "done"

    def _heap_now(self) -> tuple[dict[str, Any], bytes]:
        from pysampler import heap as _heap
        from pysampler.errors import ProfilerNotRunning
        from pysampler.group import wire

        try:
            snap = _heap.snapshot()
        except ProfilerNotRunning:
            raise Refused(409, "no heap profiling session is running") from None
        return {"ok": True, "member": self.info()}, wire.encode(snap)

    def _heap_snapshot(self, conn: socket.socket, header: dict[str, Any]) -> None:
        """Take a heap snapshot and stream it to the leader: a header with
        its ``length`` and what it cost, then the ``.heapsnapshot`` bytes,
        sent from the snapshot's temporary files (never whole in memory)."""
        from pysampler import heapsnapshot
        from pysampler.errors import SnapshotInProgress

        if not heapsnapshot.supported():
            raise Refused(
                501, "heap snapshots need the GIL: not supported on free-threaded CPython"
            )
        try:
            with heapsnapshot.taking(collect=bool(header.get("collect"))) as parts:
                conn.settimeout(SEND_TIMEOUT)
                conn.sendall(channel.encode(_snapshot_header(self.info(), parts)))
                with conn.makefile("wb") as out:
                    parts.write_to(out)
        except SnapshotInProgress:
            raise Refused(409, "a heap snapshot is already being taken") from None

    # -- leaving -------------------------------------------------------------

    def leave(self) -> None:
        """At exit: remove this member's socket. The group's directory
        stays: a child forked just before may not have joined yet; the
        next group this user founds removes directories no one uses
        (rundir.sweep)."""
        self.closing.set()
        if self.listener is not None:
            path = rundir.socket_path(self.path, self.pid)
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == self._inode:
                    os.unlink(path)
            self.listener.close()
            self.listener = None


def _snapshot_header(member: dict[str, Any], parts: SnapshotParts) -> dict[str, Any]:
    info = parts.info()
    return {
        "ok": True,
        "member": member,
        "length": parts.size,
        "pause_ms": round(parts.pause_seconds * 1000, 1),
        "nodes": info.nodes,
        "edges": info.edges,
    }


#: this process's group, if it has one
_group: Group | None = None


def current() -> Group | None:
    return _group


def found(settings: Settings) -> Server:
    """Start a new group with this process as its leader (the start-up
    hook, in the first process with ``PYSAMPLER_PORT``); children inherit
    its directory through ``PYSAMPLER_GROUP``.

    Raises:
        OSError: the port is taken (the group is given up).
    """
    global _group
    path = rundir.new_group()
    group = Group(path, settings, "founder")
    try:
        if not rundir.try_lock(group.lock_fd):
            raise OSError(f"the new group {path} is locked by another process")
        server = group.lead(founding=True)
    except BaseException:
        import shutil

        os.close(group.lock_fd)
        shutil.rmtree(path, ignore_errors=True)
        raise
    os.environ[ENV] = path
    _group = group
    return server


def join(path: str, settings: Settings) -> Server | None:
    """Join the group at ``path`` (the start-up hook, in a process that
    inherited ``PYSAMPLER_GROUP``); the Server if this process took the
    port at once (the group had no leader).

    Raises:
        PermissionError: the directory is not this user's alone.
        OSError: the control socket cannot be made.
    """
    global _group
    rundir.open_group(path)
    group = Group(path, settings, f"child of {os.getppid()}")
    try:
        group.listen()
    except BaseException:
        os.close(group.lock_fd)
        raise
    _group = group
    if rundir.try_lock(group.lock_fd):
        with contextlib.suppress(OSError):
            return group.lead()
    return None


def _after_fork_in_child() -> None:
    # A forked child is a new member: it lets go of the parent's control
    # socket (without removing the parent's file) and of the leader's port
    # (pysampler.server closes it), and listens on its own. The leader lock
    # is not inherited (fcntl locks are per process); its descriptor is.
    global _group
    parent = _group
    if parent is None:
        return
    _group = None
    # The profiler's own at-fork handlers reset it in the child, and may
    # run after this one (handlers run in the order their modules were
    # imported): run them first, before the new member's thread may begin
    # a session they would then discard. Each runs once per child.
    for name, reset in (
        ("pysampler._control", "_after_fork_in_child"),
        ("pysampler.heap", "_after_fork_in_child"),
        ("pysampler.server.sessions", "reset_after_fork"),
    ):
        module = sys.modules.get(name)
        if module is not None:
            getattr(module, reset)()
    if parent.listener is not None:
        with contextlib.suppress(OSError):
            parent.listener.close()
    try:
        child = Group(
            parent.path, parent.settings, f"forked from {parent.pid}", lock_fd=parent.lock_fd
        )
        child.listen()
    except Exception:
        _debug("pysampler: a forked child could not join its group")
        return
    _group = child


def _at_exit() -> None:
    if _group is not None and _group.pid == os.getpid():
        with contextlib.suppress(Exception):
            _group.leave()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
