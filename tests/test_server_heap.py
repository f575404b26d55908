"""Heap profiles over the HTTP endpoint: /profile/heap, /debug/pprof/heap and
/debug/pprof/allocs, fetched over loopback and read with go tool pprof."""

from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import helpers
import pysampler
from pysampler import server as server_mod
from test_server import Reply, get, wait_for

MIB = 1 << 20
#: a fine rate keeps a few MiB well sampled in a short test
RATE = 64 * 1024


def keep_in_window(kept: list[bytes], total: int) -> None:
    """Allocate ``total`` bytes in blocks of mixed sizes and keep them."""
    size = 1024
    while total > 0:
        kept.append(bytes(size))
        total -= size
        size = size * 3 % 65521 + 512  # 512 B .. 64 KiB, mixed


def churn_in_window(total: int) -> None:
    """Allocate ``total`` bytes and drop each block at once."""
    while total > 0:
        block = bytes(32 * 1024)
        total -= len(block)
        del block


class Allocator:
    """Runs ``work`` in a helper thread once heap profiling is on, and holds
    what it allocated until the test is done."""

    def __init__(self, work: Callable[[list[bytes]], None]) -> None:
        self.kept: list[bytes] = []
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work,), name="allocator")
        self._thread.start()

    def _run(self, work: Callable[[list[bytes]], None]) -> None:
        deadline = time.monotonic() + 30
        while not pysampler.heap.is_running() and time.monotonic() < deadline:
            time.sleep(0.005)
        work(self.kept)
        self.done.set()

    def join(self) -> None:
        self._thread.join(30)
        self.kept.clear()


@pytest.fixture
def server() -> Iterator[server_mod.Server]:
    srv = pysampler.serve(0)
    try:
        yield srv
    finally:
        srv.close()


def while_allocating(url: str, work: Callable[[list[bytes]], None]) -> Reply:
    """GET ``url`` (which profiles) while a helper thread runs ``work``."""
    allocator = Allocator(work)
    try:
        return get(url)
    finally:
        allocator.join()


def keep_8_mib(kept: list[bytes]) -> None:
    keep_in_window(kept, 8 * MIB)


def churn_16_mib(kept: list[bytes]) -> None:
    churn_in_window(16 * MIB)


def pprof_top(target: str, tmp_path: Path, *flags: str) -> tuple[str, list[list[str]]]:
    """go tool pprof -top on a file or URL: (its output, the table's rows)."""
    return helpers.go_pprof_top(target, tmp_path, *flags)


def top_function(body: bytes, tmp_path: Path, sample_index: str) -> str:
    path = tmp_path / "heap.pb.gz"
    path.write_bytes(body)
    out, rows = pprof_top(str(path), tmp_path, f"-sample_index={sample_index}")
    assert f"Type: {sample_index}" in out, out
    assert rows, out
    return rows[0][-1]


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node["children"]:
        yield from walk(child)


# -- the three paths ----------------------------------------------------------


def test_profile_heap_returns_heapprofile_of_what_is_kept(server: server_mod.Server) -> None:
    before = int(time.time())
    reply = while_allocating(
        f"{server.url}/profile/heap?duration=0.5&sample_bytes={RATE}", keep_8_mib
    )
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Cache-Control"] == "no-store"
    match = re.fullmatch(
        r'attachment; filename="heap_(\d+)_0\.5-seconds\.heapprofile"',
        reply.headers["Content-Disposition"],
    )
    assert match, reply.headers["Content-Disposition"]
    assert before <= int(match.group(1)) <= time.time()
    doc = json.loads(reply.body)
    assert set(doc) == {"head", "samples"}
    nodes = list(walk(doc["head"]))
    assert doc["head"]["callFrame"]["functionName"] == "(root)"
    by_function: dict[str, int] = {}
    for n in nodes:
        assert set(n) == {"callFrame", "selfSize", "id", "children"}
        name = n["callFrame"]["functionName"]
        by_function[name] = by_function.get(name, 0) + n["selfSize"]
    ids = {n["id"] for n in nodes}
    assert all(s["nodeId"] in ids and s["size"] > 0 for s in doc["samples"])
    assert max(by_function, key=lambda k: by_function[k]) == "keep_in_window", by_function
    # in use at the end: about the 8 MiB kept (sampled estimate)
    assert 4 * MIB < by_function["keep_in_window"] < 16 * MIB


def test_profile_heap_as_pprof_shows_the_allocating_function(
    server: server_mod.Server, tmp_path: Path
) -> None:
    reply = while_allocating(
        f"{server.url}/profile/heap?duration=0.5&sample_bytes={RATE}&format=pprof", keep_8_mib
    )
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert re.fullmatch(
        r'attachment; filename="heap_\d+_0\.5-seconds\.pprof"',
        reply.headers["Content-Disposition"],
    )
    assert top_function(reply.body, tmp_path, "inuse_space") == "keep_in_window"


def test_debug_pprof_heap_with_seconds_is_in_use_at_the_end(
    server: server_mod.Server, tmp_path: Path
) -> None:
    reply = while_allocating(
        f"{server.url}/debug/pprof/heap?seconds=0.5&sample_bytes={RATE}", keep_8_mib
    )
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["Content-Disposition"] == 'attachment; filename="heap"'
    gzip.decompress(reply.body)
    assert top_function(reply.body, tmp_path, "inuse_space") == "keep_in_window"


def test_debug_pprof_allocs_with_seconds_shows_what_was_allocated(
    server: server_mod.Server, tmp_path: Path
) -> None:
    reply = while_allocating(
        f"{server.url}/debug/pprof/allocs?seconds=0.5&sample_bytes={RATE}", churn_16_mib
    )
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["Content-Disposition"] == 'attachment; filename="allocs"'
    path = tmp_path / "allocs.pb.gz"
    path.write_bytes(reply.body)
    # alloc_space is the default sample type here, as in Go's allocs profile
    out, rows = pprof_top(str(path), tmp_path)
    assert "Type: alloc_space" in out, out
    assert rows[0][-1] == "churn_in_window", out
    # freed at once: nothing of it is in use at the end
    out, rows = pprof_top(str(path), tmp_path, "-sample_index=inuse_space")
    assert "churn_in_window" not in {r[-1] for r in rows}, out


def test_go_tool_pprof_fetches_heap_over_http(server: server_mod.Server, tmp_path: Path) -> None:
    allocator = Allocator(keep_8_mib)
    try:
        out, rows = pprof_top(
            f"{server.url}/debug/pprof/heap?seconds=1&sample_bytes={RATE}",
            tmp_path,
            "-sample_index=inuse_space",
        )
    finally:
        allocator.join()
    assert "Type: inuse_space" in out
    assert rows and rows[0][-1] == "keep_in_window", out


# -- a heap session kept running: serve(heap=True) -----------------------------


def keep_after_start(kept: list[bytes]) -> None:
    keep_in_window(kept, 8 * MIB)


def test_resident_heap_session_answers_at_once_as_go_does(tmp_path: Path) -> None:
    with pysampler.serve(0, heap=True, heap_sample_bytes=RATE) as srv:
        assert pysampler.heap.is_running()
        kept: list[bytes] = []
        keep_after_start(kept)
        started = time.monotonic()
        out, rows = pprof_top(f"{srv.url}/debug/pprof/heap", tmp_path, "-sample_index=inuse_space")
        assert rows and rows[0][-1] == "keep_in_window", out
        assert re.search(r"\skeep_after_start$", out, re.M), out
        assert time.monotonic() - started < 20  # no window: it answered from the session
        assert pysampler.heap.is_running(), "a snapshot leaves the session running"
        kept.clear()
        # freed: gone from in use, still in the allocations since start
        allocs = get(f"{srv.url}/debug/pprof/allocs")
        assert allocs.status == 200
        out, rows = pprof_top(str(_save(allocs.body, tmp_path)), tmp_path)
        assert "Type: alloc_space" in out and rows[0][-1] == "keep_in_window", out
        heap = get(f"{srv.url}/debug/pprof/heap")
        out, rows = pprof_top(str(_save(heap.body, tmp_path)), tmp_path)
        assert not {"keep_in_window", "keep_after_start"} & {r[-1] for r in rows}, out
        # the session is the endpoint's: a window cannot start, cancel leaves it
        busy = get(f"{srv.url}/debug/pprof/heap?seconds=1")
        assert busy.status == 409
        assert "/debug/pprof/heap" in busy.json()["error"]
        assert get(f"{srv.url}/profile/cancel").status == 409
        assert pysampler.heap.is_running()
    assert not pysampler.heap.is_running(), "close() ends the endpoint's heap session"


def _save(body: bytes, tmp_path: Path) -> Path:
    path = tmp_path / f"fetched-{time.monotonic_ns()}.pb.gz"
    path.write_bytes(body)
    return path


def test_serve_with_heap_refuses_a_running_heap_session() -> None:
    pysampler.heap.start()
    try:
        with pytest.raises(pysampler.ProfilerAlreadyRunning):
            pysampler.serve(0, heap=True)
    finally:
        pysampler.heap.stop()


@pytest.mark.parametrize("rate", [0, 100, 1 << 31, 1.5, True, "64k"])
def test_serve_rejects_a_bad_heap_rate(rate: Any) -> None:
    with pytest.raises(ValueError, match="heap_sample_bytes"):
        pysampler.serve(0, heap=True, heap_sample_bytes=rate)
    assert not pysampler.heap.is_running()


# -- no session, busy, cancel, disconnect ---------------------------------------


@pytest.mark.parametrize("path", ["/debug/pprof/heap", "/debug/pprof/allocs"])
def test_without_a_heap_session_or_seconds_409_says_what_to_do(
    server: server_mod.Server, path: str
) -> None:
    reply = get(server.url + path)
    assert reply.status == 409
    error = reply.json()["error"]
    assert "seconds" in error and "PYSAMPLER_HEAP=1" in error
    assert not pysampler.heap.is_running()


def test_409_while_the_application_profiles_its_heap(
    server: server_mod.Server, tmp_path: Path
) -> None:
    pysampler.heap.start(sample_bytes=RATE)
    try:
        for path in (
            "/profile/heap?duration=1",
            "/debug/pprof/heap?seconds=1",
            "/debug/pprof/allocs?seconds=1",
        ):
            reply = get(server.url + path)
            assert reply.status == 409, path
            assert "application" in reply.json()["error"]
        # without seconds: a snapshot of the application's session, left running
        kept: list[bytes] = []
        keep_in_window(kept, 8 * MIB)
        reply = get(f"{server.url}/debug/pprof/heap")
        assert reply.status == 200
        assert top_function(reply.body, tmp_path, "inuse_space") == "keep_in_window"
        assert pysampler.heap.is_running()
        assert get(f"{server.url}/profile/cancel").status == 409
        assert pysampler.heap.is_running()
    finally:
        pysampler.heap.stop()


def test_second_heap_request_gets_409_but_cpu_may_run_alongside(
    server: server_mod.Server,
) -> None:
    first: list[Reply] = []
    client = threading.Thread(
        target=lambda: first.append(get(f"{server.url}/profile/heap?duration=2"))
    )
    client.start()
    try:
        wait_for(pysampler.heap.is_running)
        busy = get(f"{server.url}/debug/pprof/allocs?seconds=1")
        assert busy.status == 409
        assert "already running" in busy.json()["error"]
        # heap and CPU sessions are independent
        cpu = get(f"{server.url}/profile/cpu?duration=0.2")
        assert cpu.status == 200
        assert pysampler.heap.is_running()
    finally:
        client.join(10)
    assert first and first[0].status == 200


def test_cancel_ends_a_timed_heap_request(server: server_mod.Server) -> None:
    replies: list[Reply] = []
    client = threading.Thread(
        target=lambda: replies.append(get(f"{server.url}/profile/heap?duration=30"))
    )
    client.start()
    try:
        wait_for(pysampler.heap.is_running)
        cancelled = get(f"{server.url}/profile/cancel")
        assert cancelled.status == 200
        assert cancelled.json() == {"status": "cancelled"}
    finally:
        client.join(10)
    assert replies[0].status == 409
    assert "cancelled" in replies[0].json()["error"]
    assert not pysampler.heap.is_running()


@pytest.mark.parametrize(
    "path",
    ["/profile/heap?duration=60", "/debug/pprof/allocs?seconds=60", "/debug/pprof/heap?seconds=60"],
)
def test_client_disconnect_cancels_the_heap_session(server: server_mod.Server, path: str) -> None:
    sock = socket.create_connection((server.host, server.port))
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
    wait_for(pysampler.heap.is_running)
    sock.close()
    wait_for(lambda: not pysampler.heap.is_running(), timeout=3)


def test_close_discards_a_heap_request_session() -> None:
    srv = pysampler.serve(0)
    client = threading.Thread(target=get, args=(f"{srv.url}/profile/heap?duration=60",))
    client.start()
    wait_for(pysampler.heap.is_running)
    srv.close()
    client.join(10)
    assert not pysampler.heap.is_running()


# -- parameters -------------------------------------------------------------------

BAD = [
    ("/profile/heap", "duration"),
    ("/profile/heap?duration=-1", "duration"),
    ("/profile/heap?duration=0", "duration"),
    ("/profile/heap?duration=nan", "duration"),
    ("/profile/heap?duration=NaN", "duration"),
    ("/profile/heap?duration=inf", "duration"),
    ("/profile/heap?duration=ten", "duration"),
    ("/profile/heap?duration=601", "duration"),
    ("/profile/heap?duration=99999999999999999999", "duration"),
    ("/profile/heap?duration=1&sample_bytes=-1", "sample_bytes"),
    ("/profile/heap?duration=1&sample_bytes=0", "sample_bytes"),
    ("/profile/heap?duration=1&sample_bytes=100", "sample_bytes"),
    ("/profile/heap?duration=1&sample_bytes=nan", "sample_bytes"),
    ("/profile/heap?duration=1&sample_bytes=lots", "sample_bytes"),
    ("/profile/heap?duration=1&sample_bytes=1e6", "sample_bytes"),
    ("/profile/heap?duration=1&sample_bytes=99999999999", "sample_bytes"),
    ("/profile/heap?duration=1&format=cpuprofile", "format"),
    ("/profile/heap?duration=1&format=exe", "format"),
    ("/profile/heap?duration=1&hz=100", "hz"),
    ("/debug/pprof/heap?seconds=-1", "seconds"),
    ("/debug/pprof/heap?seconds=0", "seconds"),
    ("/debug/pprof/heap?seconds=nan", "seconds"),
    ("/debug/pprof/heap?seconds=ten", "seconds"),
    ("/debug/pprof/heap?seconds=100000", "seconds"),
    ("/debug/pprof/heap?seconds=1&sample_bytes=NaN", "sample_bytes"),
    ("/debug/pprof/allocs?seconds=-5", "seconds"),
    ("/debug/pprof/allocs?seconds=", "seconds"),
    ("/debug/pprof/allocs?seconds=99999999999999999999", "seconds"),
    ("/debug/pprof/allocs?seconds=1&sample_bytes=-4096", "sample_bytes"),
]


@pytest.mark.parametrize(("path", "parameter"), BAD)
def test_bad_parameter_gets_400_naming_it(
    server: server_mod.Server, path: str, parameter: str
) -> None:
    reply = get(server.url + path)
    assert reply.status == 400
    body = reply.json()
    assert body["parameter"] == parameter
    assert parameter in body["error"]
    assert not pysampler.heap.is_running()


def test_index_links_the_heap_paths(server: server_mod.Server) -> None:
    page = get(f"{server.url}/debug/pprof/").body.decode()
    for link in ("/debug/pprof/heap", "/debug/pprof/allocs", "/profile/heap"):
        assert f'href="{link}"' in page


# -- the start-up hook ---------------------------------------------------------------

HEAP_APP = """
import sys, time

def hold_buffers(kept):
    size = 1024
    for _ in range(3000):
        kept.append(bytes(size))
        size = size * 3 % 65521 + 512

kept = []
hold_buffers(kept)
print("ready", flush=True)
time.sleep(float(sys.argv[1]))
"""


def test_hook_with_pysampler_heap_serves_heap_in_use_at_once(tmp_path: Path) -> None:
    from test_server_hook import App, _env

    script = tmp_path / "heap_app.py"
    script.write_text(HEAP_APP)
    app = App.__new__(App)  # App's waiting and cleanup, with this script
    app.url = ""
    app.proc = subprocess.Popen(
        [sys.executable, str(script), "60"],
        cwd=tmp_path,
        env=_env(PYSAMPLER_PORT="0", PYSAMPLER_HEAP="1", PYSAMPLER_HEAP_SAMPLE_BYTES=str(RATE)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = app.wait_for_url()
        assert app.proc.stdout is not None
        assert app.proc.stdout.readline().strip() == "ready"
        out, rows = pprof_top(f"{url}/debug/pprof/heap", tmp_path, "-sample_index=inuse_space")
        assert rows and rows[0][-1] == "hold_buffers", out
    finally:
        app.kill()
