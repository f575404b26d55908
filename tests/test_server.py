"""pysampler.serve(): the HTTP endpoint, fetched by real clients over loopback."""

from __future__ import annotations

import collections
import gzip
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import helpers
import pysampler
from pysampler import server as server_mod
from workloads import busy_until, running_threads, sleep_until

# urllib must not send loopback requests to a proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json", self.headers
        return json.loads(self.body)


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=timeout) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, err.headers, err.read())


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def server() -> Iterator[server_mod.Server]:
    srv = pysampler.serve(0)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def busy() -> Iterator[None]:
    """A thread burning CPU in workloads.spin_cpu for the whole test."""
    with running_threads({"busy": busy_until}):
        yield


def cpuprofile_self_hits(body: bytes) -> collections.Counter[str]:
    doc = json.loads(body)
    assert {"nodes", "startTime", "endTime", "samples", "timeDeltas"} <= doc.keys()
    hits: collections.Counter[str] = collections.Counter()
    for node in doc["nodes"]:
        name = node["callFrame"]["functionName"]
        if not name.startswith("("):  # (root), (idle), thread nodes
            hits[name] += node["hitCount"]
    return hits


def _function(frame: str) -> str:
    # a collapsed frame reads "qualname (file:line)"
    return frame.split(" (")[0]


def collapsed_self(body: bytes) -> collections.Counter[str]:
    leaf: collections.Counter[str] = collections.Counter()
    for line in body.decode().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf[_function(stack.split(";")[-1])] += int(count)
    return leaf


def go_pprof_top(target: str, tmp_path: Path) -> list[list[str]]:
    return helpers.go_pprof_top(target, tmp_path)[1]


# -- profiles -------------------------------------------------------------


def test_profile_cpu_returns_cpuprofile_named_like_the_seed(
    server: server_mod.Server, busy: None
) -> None:
    before = int(time.time())
    reply = get(f"{server.url}/profile/cpu?duration=0.5")
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Content-Type"] == "application/json"
    match = re.fullmatch(
        r'attachment; filename="cpu_(\d+)_0\.5-seconds\.cpuprofile"',
        reply.headers["Content-Disposition"],
    )
    assert match, reply.headers["Content-Disposition"]
    assert before <= int(match.group(1)) <= time.time()
    hits = cpuprofile_self_hits(reply.body)
    assert hits.most_common(1)[0][0] == "spin_cpu", hits.most_common(5)
    assert not pysampler.is_running()


def test_profile_cpu_as_pprof_opens_in_go_tool_pprof(
    server: server_mod.Server, busy: None, tmp_path: Path
) -> None:
    reply = get(f"{server.url}/profile/cpu?duration=0.5&format=pprof&hz=200")
    assert reply.status == 200
    assert reply.headers["Content-Disposition"].endswith('_0.5-seconds.pprof"')
    assert reply.body[:2] == b"\x1f\x8b"  # gzip
    path = tmp_path / "cpu.pprof"
    path.write_bytes(reply.body)
    rows = go_pprof_top(str(path), tmp_path)
    assert rows[0][-1] == "spin_cpu", rows[:5]


def test_profile_cpu_as_collapsed_with_sampling_interval(
    server: server_mod.Server, busy: None
) -> None:
    reply = get(f"{server.url}/profile/cpu?duration=0.5&format=collapsed&sampling_interval=5000")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.headers["Content-Disposition"].endswith('_0.5-seconds.collapsed"')
    assert collapsed_self(reply.body).most_common(1)[0][0] == "spin_cpu"


def test_wall_mode_counts_a_sleeping_thread(server: server_mod.Server) -> None:
    with running_threads({"sleeper": sleep_until}):
        cpu = get(f"{server.url}/profile/cpu?duration=0.4&format=collapsed&mode=cpu")
        wall = get(f"{server.url}/profile/cpu?duration=0.4&format=collapsed&mode=wall")
    assert cpu.status == wall.status == 200
    # the sleeper wakes every 10 ms, so it may use a sample's worth of CPU
    slept_wall = collapsed_self(wall.body)["sleep_until"]
    slept_cpu = collapsed_self(cpu.body)["sleep_until"]
    assert slept_wall > 4 * max(slept_cpu, 1), (slept_wall, slept_cpu)


def test_start_then_stop_returns_the_elapsed_profile(server: server_mod.Server, busy: None) -> None:
    started = get(f"{server.url}/profile/cpu/start?hz=200")
    assert started.status == 200
    assert started.json()["status"] == "started"
    assert pysampler.is_running()
    again = get(f"{server.url}/profile/cpu/start")
    assert again.status == 409
    assert "already running" in again.json()["error"]
    time.sleep(0.4)
    stopped = get(f"{server.url}/profile/cpu/stop?format=collapsed")
    assert stopped.status == 200
    assert re.fullmatch(
        r'attachment; filename="cpu_\d+_0\.\d+-seconds\.collapsed"',
        stopped.headers["Content-Disposition"],
    )
    assert collapsed_self(stopped.body).most_common(1)[0][0] == "spin_cpu"
    assert not pysampler.is_running()
    assert get(f"{server.url}/profile/cpu/stop").status == 409


def test_cancel_discards_a_started_session(server: server_mod.Server) -> None:
    assert get(f"{server.url}/profile/cpu/start").status == 200
    reply = get(f"{server.url}/profile/cancel")
    assert reply.status == 200
    assert reply.json() == {"status": "cancelled"}
    assert not pysampler.is_running()
    again = get(f"{server.url}/profile/cancel")
    assert again.status == 409
    assert "no profiling session" in again.json()["error"]


def test_cancel_ends_a_timed_request_early(server: server_mod.Server) -> None:
    results: list[Reply] = []
    client = threading.Thread(
        target=lambda: results.append(get(f"{server.url}/profile/cpu?duration=30"))
    )
    t0 = time.monotonic()
    client.start()
    wait_for(pysampler.is_running)
    assert get(f"{server.url}/profile/cancel").status == 200
    client.join(10)
    assert time.monotonic() - t0 < 10
    assert results[0].status == 409
    assert "cancelled" in results[0].json()["error"]
    assert not pysampler.is_running()


def test_stop_refuses_a_timed_session(server: server_mod.Server) -> None:
    client = threading.Thread(target=get, args=(f"{server.url}/profile/cpu?duration=30",))
    client.start()
    try:
        wait_for(pysampler.is_running)
        reply = get(f"{server.url}/profile/cpu/stop")
        assert reply.status == 409
        assert "timed" in reply.json()["error"]
    finally:
        get(f"{server.url}/profile/cancel")
        client.join(10)


# -- one session at a time ----------------------------------------------------


def test_409_while_the_application_profiles_itself(server: server_mod.Server) -> None:
    pysampler.start()
    try:
        for path in ("/profile/cpu?duration=0.2", "/profile/cpu/start", "/debug/pprof/profile"):
            reply = get(server.url + path)
            assert reply.status == 409, path
            assert "application" in reply.json()["error"]
        # The application's session is not the endpoint's to cancel.
        assert get(f"{server.url}/profile/cancel").status == 409
        assert pysampler.is_running()
    finally:
        profile = pysampler.stop()
    assert profile.metadata.duration > 0


def test_application_cannot_start_while_a_request_profiles(server: server_mod.Server) -> None:
    assert get(f"{server.url}/profile/cpu/start").status == 200
    try:
        with pytest.raises(pysampler.ProfilerAlreadyRunning):
            pysampler.start()
    finally:
        assert get(f"{server.url}/profile/cancel").status == 200


def test_two_concurrent_clients_one_gets_409(server: server_mod.Server, busy: None) -> None:
    replies: list[Reply] = []
    barrier = threading.Barrier(2)

    def client() -> None:
        barrier.wait()
        replies.append(get(f"{server.url}/profile/cpu?duration=1&format=collapsed"))

    clients = [threading.Thread(target=client) for _ in range(2)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(30)
    assert sorted(r.status for r in replies) == [200, 409]
    ok = next(r for r in replies if r.status == 200)
    assert collapsed_self(ok.body).most_common(1)[0][0] == "spin_cpu"
    busy_reply = next(r for r in replies if r.status == 409)
    assert "already running" in busy_reply.json()["error"]


def test_index_is_served_while_a_profile_is_taken(server: server_mod.Server) -> None:
    client = threading.Thread(target=get, args=(f"{server.url}/profile/cpu?duration=30",))
    client.start()
    try:
        wait_for(pysampler.is_running)
        for _ in range(5):
            assert get(f"{server.url}/debug/pprof/").status == 200
    finally:
        get(f"{server.url}/profile/cancel")
        client.join(10)


def test_client_disconnect_cancels_the_session(server: server_mod.Server) -> None:
    sock = socket.create_connection((server.host, server.port))
    sock.sendall(b"GET /profile/cpu?duration=60 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    wait_for(pysampler.is_running)
    sock.close()
    wait_for(lambda: not pysampler.is_running(), timeout=3)
    # and the profiler is free for the next client
    assert get(f"{server.url}/profile/cpu/start").status == 200
    assert get(f"{server.url}/profile/cancel").status == 200


def test_client_timeout_cancels_the_session(server: server_mod.Server) -> None:
    # socket.timeout: an alias of TimeoutError from 3.10, its own class in 3.9
    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
        _OPENER.open(f"{server.url}/profile/cpu?duration=60", timeout=0.3)
    wait_for(lambda: not pysampler.is_running(), timeout=3)


# -- parameters ---------------------------------------------------------------

BAD = [
    ("/profile/cpu", "duration"),
    ("/profile/cpu?duration=", "duration"),
    ("/profile/cpu?duration=-1", "duration"),
    ("/profile/cpu?duration=0", "duration"),
    ("/profile/cpu?duration=0.0", "duration"),
    ("/profile/cpu?duration=nan", "duration"),
    ("/profile/cpu?duration=NaN", "duration"),
    ("/profile/cpu?duration=inf", "duration"),
    ("/profile/cpu?duration=1e3", "duration"),
    ("/profile/cpu?duration=five", "duration"),
    ("/profile/cpu?duration=%205", "duration"),
    ("/profile/cpu?duration=601", "duration"),
    ("/profile/cpu?duration=99999999999999999999", "duration"),
    ("/profile/cpu?duration=1&duration=2", "duration"),
    ("/profile/cpu?duration=1&hz=0", "hz"),
    ("/profile/cpu?duration=1&hz=-5", "hz"),
    ("/profile/cpu?duration=1&hz=nan", "hz"),
    ("/profile/cpu?duration=1&hz=fast", "hz"),
    ("/profile/cpu?duration=1&hz=10001", "hz"),
    ("/profile/cpu?duration=1&hz=1e9", "hz"),
    ("/profile/cpu?duration=1&sampling_interval=0", "sampling_interval"),
    ("/profile/cpu?duration=1&sampling_interval=-100", "sampling_interval"),
    ("/profile/cpu?duration=1&sampling_interval=10", "sampling_interval"),
    ("/profile/cpu?duration=1&sampling_interval=inf", "sampling_interval"),
    ("/profile/cpu?duration=1&sampling_interval=99999999", "sampling_interval"),
    ("/profile/cpu?duration=1&hz=100&sampling_interval=1000", "sampling_interval"),
    ("/profile/cpu?duration=1&mode=gpu", "mode"),
    ("/profile/cpu?duration=1&mode=", "mode"),
    ("/profile/cpu?duration=1&format=exe", "format"),
    ("/profile/cpu?duration=1&format=../../etc/passwd", "format"),
    ("/profile/cpu?duration=1&durtion=2", "durtion"),
    ("/profile/cpu/start?hz=0", "hz"),
    ("/profile/cpu/start?duration=5", "duration"),
    ("/profile/cpu/stop?format=exe", "format"),
    ("/debug/pprof/profile?seconds=-1", "seconds"),
    ("/debug/pprof/profile?seconds=nan", "seconds"),
    ("/debug/pprof/profile?seconds=ten", "seconds"),
    ("/debug/pprof/profile?seconds=100000", "seconds"),
    ("/debug/pprof/profile?seconds=0", "seconds"),
    ("/debug/fgprof?seconds=-3", "seconds"),
    ("/debug/fgprof?seconds=1&format=exe", "format"),
    ("/profile/cpu?duration=1&mode=wall&asyncio=yes", "asyncio"),
    ("/profile/cpu?duration=1&mode=wall&asyncio=2", "asyncio"),
    ("/profile/cpu?duration=1&asyncio=1", "asyncio"),
    ("/profile/cpu/start?mode=cpu&asyncio=1", "asyncio"),
    ("/debug/fgprof?seconds=1&asyncio=true", "asyncio"),
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
    assert not pysampler.is_running()


def test_max_duration_is_configurable(busy: None) -> None:
    with pysampler.serve(0, max_duration=0.5) as srv:
        reply = get(f"{srv.url}/profile/cpu?duration=0.6")
        assert reply.status == 400
        assert reply.json()["error"] == (
            "duration must be at most 0.5 seconds, this endpoint's maximum "
            "(PYSAMPLER_MAX_DURATION, or serve(max_duration=...)), not 0.6"
        )
        assert get(f"{srv.url}/profile/cpu?duration=0.5&format=collapsed").status == 200
        # /debug/pprof/profile's default of 30 s is capped by the maximum
        t0 = time.monotonic()
        assert get(f"{srv.url}/debug/pprof/profile").status == 200
        assert time.monotonic() - t0 < 20


def test_started_session_expires_after_max_duration() -> None:
    with pysampler.serve(0, max_duration=0.3) as srv:
        assert get(f"{srv.url}/profile/cpu/start").status == 200
        wait_for(lambda: not pysampler.is_running(), timeout=5)
        assert get(f"{srv.url}/profile/cpu/stop").status == 409


def test_unknown_path_gets_404_json(server: server_mod.Server) -> None:
    for path in ("/", "/etc/passwd", "/profile/mutex", "/debug/pprof/block", "/../setup.py"):
        reply = get(server.url + path)
        assert reply.status == 404, path
        body = reply.json()
        assert "no such path" in body["error"]
        assert "/profile/cpu" in body["paths"]


def test_other_methods_get_405(server: server_mod.Server) -> None:
    request = urllib.request.Request(f"{server.url}/profile/cpu/start", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as err:
        _OPENER.open(request, timeout=10)
    assert err.value.code == 405
    assert err.value.headers["Allow"] == "GET"
    assert not pysampler.is_running()


def test_malformed_request_gets_json_error(server: server_mod.Server) -> None:
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"GET /a b HTTP/1.0\r\n\r\n")
        data = sock.makefile("rb").read()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400")
    assert "error" in json.loads(body)


# -- token --------------------------------------------------------------------


def test_token_is_required_as_bearer() -> None:
    with pysampler.serve(0, token="s3cret") as srv:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer s3cret-and-more"},
            {"Authorization": "Basic s3cret"},
            {"Authorization": "s3cret"},
        ):
            reply = get(f"{srv.url}/profile/cpu/start", headers)
            assert reply.status == 401, headers
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            assert "Bearer" in reply.json()["error"]
            assert not pysampler.is_running()
        # unknown paths too: no route list without the token
        assert get(f"{srv.url}/nope").status == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert get(f"{srv.url}/profile/cpu/start", ok).status == 200
        assert get(f"{srv.url}/profile/cancel", ok).status == 200


# -- Go-compatible paths ------------------------------------------------------


def test_pprof_index_lists_the_profiles(server: server_mod.Server) -> None:
    for path in ("/debug/pprof/", "/debug/pprof"):
        reply = get(server.url + path)
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/html")
        page = reply.body.decode()
        for link in ("/debug/pprof/profile", "/debug/fgprof", "/profile/cpu"):
            assert f'href="{link}"' in page


def test_debug_pprof_profile_is_gzip_pprof_cpu(
    server: server_mod.Server, busy: None, tmp_path: Path
) -> None:
    reply = get(f"{server.url}/debug/pprof/profile?seconds=1")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.headers["Content-Disposition"] == 'attachment; filename="profile"'
    gzip.decompress(reply.body)
    path = tmp_path / "profile.pb.gz"
    path.write_bytes(reply.body)
    rows = go_pprof_top(str(path), tmp_path)
    assert rows[0][-1] == "spin_cpu", rows[:5]


def test_go_tool_pprof_fetches_over_http(
    server: server_mod.Server, busy: None, tmp_path: Path
) -> None:
    rows = go_pprof_top(f"{server.url}/debug/pprof/profile?seconds=1", tmp_path)
    assert rows[0][-1] == "spin_cpu", rows[:5]


def test_fgprof_path_is_wall_time(server: server_mod.Server, tmp_path: Path) -> None:
    with running_threads({"sleeper": sleep_until}):
        rows = go_pprof_top(f"{server.url}/debug/fgprof?seconds=0.5", tmp_path)
    names = {r[-1] for r in rows}
    assert "sleep_until" in names or "sleep" in names, rows


# -- failures -----------------------------------------------------------------


def test_exception_in_a_handler_gets_500_and_the_server_keeps_serving(
    server: server_mod.Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_writer(self: pysampler.Profile, format: str) -> bytes:
        raise RuntimeError("writer bug")

    monkeypatch.setattr(pysampler.Profile, "to_bytes", broken_writer)
    reply = get(f"{server.url}/profile/cpu?duration=0.1")
    assert reply.status == 500
    assert reply.json()["error"].startswith("internal error")
    assert "writer bug" in caplog.text
    assert not pysampler.is_running()
    monkeypatch.undo()
    assert get(f"{server.url}/profile/cpu?duration=0.1").status == 200


def test_serve_raises_when_the_port_is_taken(server: server_mod.Server) -> None:
    with pytest.raises(OSError, match=f"in use: '127.0.0.1:{server.port}'"):
        pysampler.serve(server.port)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": -1},
        {"port": 70000},
        {"port": "9119"},
        {"host": ""},
        {"token": ""},
        {"max_duration": 0},
        {"max_duration": float("nan")},
        {"max_duration": float("inf")},
    ],
)
def test_serve_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        pysampler.serve(**kwargs)


def test_server_binds_loopback_by_default(server: server_mod.Server) -> None:
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_close_discards_a_session_and_stops_listening() -> None:
    srv = pysampler.serve(0)
    assert get(f"{srv.url}/profile/cpu/start").status == 200
    srv.close()
    assert not pysampler.is_running()
    with pytest.raises(OSError):
        socket.create_connection((srv.host, srv.port), timeout=2).close()
    srv.close()  # twice is fine


def test_close_ends_a_waiting_request(busy: None) -> None:
    srv = pysampler.serve(0)
    results: list[Reply] = []
    client = threading.Thread(
        target=lambda: results.append(get(f"{srv.url}/profile/cpu?duration=30"))
    )
    client.start()
    wait_for(pysampler.is_running)
    srv.close()
    assert not pysampler.is_running()
    client.join(10)
    assert results and results[0].status in (409, 503)


def test_open_endpoint_does_not_hold_up_exit() -> None:
    # The program ends with the endpoint never closed, a profile being
    # taken for a client and another client stalled mid-headers: it exits
    # at once (exit code 0: run_python checks), printing nothing of ours.
    t0 = time.monotonic()
    out = helpers.run_python(
        """
        import socket, sys, time
        import pysampler
        srv = pysampler.serve(0)
        waiting = socket.create_connection((srv.host, srv.port))
        waiting.sendall(b"GET /profile/cpu?duration=60 HTTP/1.0\\r\\n\\r\\n")
        stalled = socket.create_connection((srv.host, srv.port))
        stalled.sendall(b"GET /debug/pprof/ HTTP/1.0\\r\\nX-Slow: ")
        while not pysampler.is_running():
            time.sleep(0.01)
        print("profiling; exiting")
        """,
        timeout=30,
    )
    assert time.monotonic() - t0 < 20
    assert out.stdout == "profiling; exiting\n"
    assert out.stderr == ""


# -- the application keeps working ------------------------------------------


class _AppHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = str(sum(range(20_000))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_application_keeps_serving_its_own_traffic_while_profiled(
    server: server_mod.Server,
) -> None:
    app = ThreadingHTTPServer(("127.0.0.1", 0), _AppHandler)
    app.daemon_threads = True
    app_thread = threading.Thread(target=app.serve_forever, kwargs={"poll_interval": 0.05})
    app_thread.start()
    app_url = f"http://127.0.0.1:{app.server_address[1]}/"
    profile: list[Reply] = []
    try:
        client = threading.Thread(
            target=lambda: profile.append(
                get(f"{server.url}/profile/cpu?duration=1&format=collapsed&hz=500")
            )
        )
        client.start()
        wait_for(pysampler.is_running)
        answered = 0
        while pysampler.is_running():
            reply = get(app_url)
            assert reply.status == 200
            assert reply.body == str(sum(range(20_000))).encode()
            answered += 1
        client.join(30)
    finally:
        app.shutdown()
        app.server_close()
        app_thread.join()
    assert answered >= 3
    assert profile[0].status == 200
    lines = profile[0].body.decode().splitlines()
    frames = {_function(f) for line in lines for f in line.split(";")}
    assert "_AppHandler.do_GET" in frames


def test_wall_profile_with_asyncio_shows_waiting_tasks(server: server_mod.Server) -> None:
    import asyncio

    stop = threading.Event()

    async def query_database() -> None:
        await asyncio.sleep(0.3)

    async def handle(i: int) -> None:
        while not stop.is_set():
            await query_database()

    async def main() -> None:
        tasks = [asyncio.create_task(handle(i), name=f"handler-{i}") for i in range(2)]
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)

    loop_thread = threading.Thread(target=asyncio.run, args=(main(),), name="loop")
    loop_thread.start()
    try:
        reply = get(f"{server.url}/profile/cpu?duration=1&mode=wall&asyncio=1&format=collapsed")
    finally:
        stop.set()
        loop_thread.join()
    assert reply.status == 200, reply.body[:300]
    lines = reply.body.decode().splitlines()
    waits = [ln for ln in lines if ";Task: handler-" in ln and "query_database" in ln]
    assert {ln.split(";Task: ")[1].split(";")[0] for ln in waits} == {"handler-0", "handler-1"}
