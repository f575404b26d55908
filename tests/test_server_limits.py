"""The endpoint bounds what clients can make it hold: half-sent requests
hold no thread and expire, connections and handler threads are capped, a
request's head and its sampling (rate x duration -> memory) are capped
with a clear error, and a profile being built holds no lock others need.
Its errors stay out of the program's output."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pysampler
from helpers import run_python
from pysampler import _control
from pysampler import server as server_mod
from pysampler.server import ROUTES, Route, limits, sessions


def http_get(server: server_mod.Server, path: str, timeout: float = 10) -> tuple[int, bytes]:
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = sock.makefile("rb").read()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def half_sent(server: server_mod.Server) -> socket.socket:
    """A connection that has sent part of its headers and stalls."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(b"GET /debug/pprof/ HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return sock


def request_threads() -> int:
    return sum(t.name == "pysampler-http-request" for t in threading.enumerate())


@pytest.fixture
def serve_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., server_mod.Server]]:
    """serve() with some limits changed."""
    servers: list[server_mod.Server] = []

    def start(**changes: Any) -> server_mod.Server:
        monkeypatch.setattr(server_mod, "Limits", functools.partial(limits.Limits, **changes))
        srv = pysampler.serve(0)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


def test_slowloris_holds_no_threads_and_others_are_served(
    serve_with: Callable[..., server_mod.Server],
) -> None:
    srv = serve_with(header_deadline=1.0)
    before = threading.active_count()
    slow = [half_sent(srv) for _ in range(60)]
    try:
        deadline = time.monotonic() + 5
        while srv._httpd.listener.pending < 60:
            assert time.monotonic() < deadline, srv._httpd.listener.pending
            time.sleep(0.01)
        # 60 half-sent requests: no thread each (before: one thread each, for ever)
        assert threading.active_count() - before <= 1
        assert request_threads() == 0
        # a normal request is answered meanwhile
        status, body = http_get(srv, "/debug/pprof/", timeout=5)
        assert status == 200 and b"pysampler" in body
        # and each slow one gets a 408 at its deadline, then is closed
        for sock in slow:
            sock.settimeout(5)
            data = sock.makefile("rb").read()
            assert data.startswith(b"HTTP/1.0 408"), data[:80]
            assert b"did not arrive within 1 s" in data
    finally:
        for sock in slow:
            sock.close()
    assert srv._httpd.listener.pending == 0


def test_default_header_deadline_is_bounded() -> None:
    assert 0 < limits.Limits().header_deadline <= 30


def test_waiting_connections_are_capped_oldest_dropped(
    serve_with: Callable[..., server_mod.Server],
) -> None:
    srv = serve_with(max_pending=8)
    slow = [half_sent(srv) for _ in range(8)]
    try:
        deadline = time.monotonic() + 5
        while srv._httpd.listener.pending < 8:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # one more connection: the one waiting longest makes room
        assert http_get(srv, "/debug/pprof/")[0] == 200
        first = slow[0].makefile("rb").read()
        assert first.startswith(b"HTTP/1.0 408") and b"too many connections" in first
        assert srv._httpd.listener.pending <= 8
    finally:
        for sock in slow:
            sock.close()


def test_handler_threads_are_capped_with_503(
    serve_with: Callable[..., server_mod.Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def blocked(handler: Any, params: dict[str, str]) -> None:
        entered.release()
        release.wait(30)
        handler._send_json(200, {"status": "released"})

    monkeypatch.setitem(ROUTES, "/blocked", Route("/blocked", blocked, "test", None, False))
    srv = serve_with(max_active=4)
    results: list[int] = []
    clients = [
        threading.Thread(target=lambda: results.append(http_get(srv, "/blocked", 30)[0]))
        for _ in range(4)
    ]
    for c in clients:
        c.start()
    try:
        for _ in range(4):
            assert entered.acquire(timeout=10)
        assert request_threads() == 4
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            sock.sendall(b"GET /debug/pprof/ HTTP/1.0\r\n\r\n")
            data = sock.makefile("rb").read()
        assert data.startswith(b"HTTP/1.0 503")
        assert b"Retry-After: 1" in data
    finally:
        release.set()
        for c in clients:
            c.join(30)
    assert results == [200] * 4
    assert http_get(srv, "/debug/pprof/")[0] == 200


def test_oversized_request_head_gets_431(serve_with: Callable[..., server_mod.Server]) -> None:
    srv = serve_with()
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        # 20 KiB of headers, not yet ended
        filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        sock.sendall(b"GET /debug/pprof/ HTTP/1.0\r\n" + filler * 20)
        data = sock.makefile("rb").read()
    assert data.startswith(b"HTTP/1.0 431"), data[:80]
    assert b"exceed 16384 bytes" in data


@pytest.mark.parametrize(
    "path",
    [
        "/profile/cpu?duration=600&hz=10000",
        "/debug/pprof/profile?seconds=500&hz=9000",
        "/debug/fgprof?seconds=600&hz=10000",
    ],
)
def test_request_asking_for_too_many_samples_gets_400(path: str) -> None:
    with pysampler.serve(0) as srv:
        status, body = http_get(srv, path)
    assert status == 400
    error = json.loads(body)
    assert error["parameter"] == "hz"
    assert error["max_samples"] == limits.MAX_REQUEST_SAMPLES
    assert "lower hz or the duration" in error["error"] and "MiB" in error["error"]
    assert not pysampler.is_running()


def test_started_session_expires_before_it_outgrows_a_request() -> None:
    with pysampler.serve(0) as srv:
        status, body = http_get(srv, "/profile/cpu/start?hz=10000")
        assert status == 200
        assert json.loads(body)["expires_in"] == limits.MAX_REQUEST_SAMPLES / 10_000
        assert http_get(srv, "/profile/cancel")[0] == 200


def test_request_sessions_are_bounded_in_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    real = sessions.start

    def recording(*args: Any, **kwargs: Any) -> None:
        seen.append(kwargs)
        real(*args, **kwargs)

    monkeypatch.setattr(sessions, "start", recording)
    with pysampler.serve(0) as srv:
        assert http_get(srv, "/profile/cpu?duration=0.05")[0] == 200
    assert seen and seen[0]["max_samples"] == limits.MAX_REQUEST_SAMPLES


def test_sample_table_is_bounded_in_bytes() -> None:
    with pytest.raises(ValueError, match="MiB of samples"):
        pysampler.start(max_samples=_control.MAX_SAMPLES + 1)
    assert _control.MAX_SAMPLES * pysampler._sampler.SAMPLE_ROW_BYTES <= (
        _control.MAX_SAMPLE_TABLE_BYTES
    )
    assert _control.DEFAULT_MAX_SAMPLES <= _control.MAX_SAMPLES


def test_building_a_profile_holds_no_lock_other_requests_need(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    building = threading.Event()
    release = threading.Event()
    from pysampler import _build

    real = _build.build_profile

    def slow_build(*args: Any) -> pysampler.Profile:
        building.set()
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(_build, "build_profile", slow_build)
    srv = pysampler.serve(0)
    results: list[int] = []
    client = threading.Thread(
        target=lambda: results.append(http_get(srv, "/profile/cpu?duration=0.05", 30)[0])
    )
    client.start()
    try:
        assert building.wait(10)
        # the sampler is free and the session table too: answered at once
        started = time.monotonic()
        assert http_get(srv, "/profile/cancel", 5)[0] == 409
        assert http_get(srv, "/profile/cpu/start", 5)[0] == 200
        assert http_get(srv, "/profile/cancel", 5)[0] == 200
        srv.close()  # does not wait for the build
        assert time.monotonic() - started < 5
    finally:
        release.set()
        client.join(30)
        srv.close()
    assert results == [200]


BROKEN_HANDLER = """
import logging, socket, sys
import pysampler
if CONFIGURE:
    logging.basicConfig(level=logging.WARNING)

def broken(self, format):
    raise RuntimeError("writer bug")

pysampler.Profile.to_bytes = broken
with pysampler.serve(0) as srv:
    with socket.create_connection((srv.host, srv.port), timeout=30) as s:
        s.sendall(b"GET /profile/cpu?duration=0.05 HTTP/1.0\\r\\n\\r\\n")
        print(s.makefile("rb").readline().decode().strip())
"""


def test_handler_errors_stay_out_of_the_programs_stderr() -> None:
    quiet = run_python("CONFIGURE = False\n" + BROKEN_HANDLER)
    assert quiet.stdout.startswith("HTTP/1.0 500")
    assert quiet.stderr == ""
    # once the program configures logging, the error and its traceback show
    logged = run_python("CONFIGURE = True\n" + BROKEN_HANDLER)
    assert logged.stdout.startswith("HTTP/1.0 500")
    assert "pysampler: error answering" in logged.stderr
    assert "RuntimeError: writer bug" in logged.stderr
