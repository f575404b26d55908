"""`pysampler top URL`: the live view of a service, driven in a real
terminal (tmux) against a live endpoint, in plain mode against fake ones
(a fleet with pid labels, errors), and the endpoint client's error lines."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import helpers
import pysampler
from browser import artifact
from pysampler import Frame, Metadata, Profile, ThreadInfo, cli_top, formats, remote
from pysampler.profile import OTHER_CPU_THREAD
from test_cli import pysampler as run_cli
from test_server import get
from test_server_hook import App, _env

TMUX = shutil.which("tmux")

#: A service whose hot function changes when the test says so (a file appears).
PHASES = textwrap.dedent(
    """
    import os, sys

    def first_phase():
        n = 0
        for i in range(20000):
            n += i * i
        return n

    def second_phase():
        n = 0
        for i in range(20000):
            n += i ^ 7
        return n

    def main():
        switch = os.path.join(os.path.dirname(os.path.abspath(__file__)), "switch")
        while True:
            while not os.path.exists(switch):
                for _ in range(20):
                    first_phase()
            for _ in range(20):
                second_phase()

    main()
    """
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[App]:
    running = App(tmp_path, 0, source=PHASES, PYSAMPLER_PORT="0")
    try:
        running.wait_for_url()
        yield running
    finally:
        running.kill()


def timed_session_runs(url: str) -> bool:
    """Whether a timed profile runs in the service (asked without starting one)."""
    reply = get(f"{url}/profile/cpu/stop")
    assert reply.status == 409
    return "timed one" in reply.json()["error"]


def endpoint_is_free(url: str, timeout: float = 3.0) -> bool:
    """Whether a new session can start at once (then it is cancelled again):
    nothing of a client that left is still running in the service."""
    deadline = time.monotonic() + timeout
    while True:
        reply = get(f"{url}/profile/cpu/start")
        if reply.status == 200:
            assert get(f"{url}/profile/cancel").status == 200
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


class Terminal:
    """A tmux session of 80x24 running one command; its screen as text."""

    def __init__(self, tmp_path: Path, command: str) -> None:
        if TMUX is None:
            if os.environ.get("CI"):
                raise RuntimeError("tmux is required (scripts/system-deps.sh installs it)")
            pytest.skip("tmux is not installed")
        self.socket = str(tmp_path / "tmux.sock")
        self.env = _env(TERM="xterm")
        # the pane outlives the command, so its exit status can be read
        self.run("new-session", "-d", "-x", "80", "-y", "24", "-s", "top",
                 f"{command}; echo EXIT=$?; sleep 600")  # fmt: skip

    def run(self, *args: str) -> str:
        assert TMUX is not None
        out = subprocess.run(
            [TMUX, "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=self.env,
        )
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "top", *keys)

    def wait_for(self, predicate: Any, what: str, timeout: float = 40.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what}:\n{text}")
            time.sleep(0.2)

    def close(self) -> None:
        assert TMUX is not None
        subprocess.run([TMUX, "-S", self.socket, "kill-server"], capture_output=True, check=False)


def top_function(screen: str) -> str | None:
    """The function in the first row of the table, if any."""
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if "FUNCTION" in line and i + 1 < len(lines):
            row = lines[i + 1].split("|")
            return row[2].split()[0] if len(row) > 2 and row[2].split() else None
    return None


def test_top_in_a_terminal_follows_the_hot_function_and_leaves_no_session(
    service: App, tmp_path: Path
) -> None:
    url = service.url
    term = Terminal(tmp_path, f"{sys.executable} -m pysampler top {url}")
    try:
        first = term.wait_for(lambda s: top_function(s) == "first_phase", "first_phase on top")
        assert "pysampler top 127.0.0.1:" in first and " cpu " in first
        assert "q quit" in first.splitlines()[-1]
        assert all(len(line) <= 80 for line in first.splitlines())
        (tmp_path / "switch").touch()  # the service's hot function changes
        second = term.wait_for(lambda s: top_function(s) == "second_phase", "second_phase on top")
        # since start, both functions were hot
        assert "first_phase" in second
        artifact("top-terminal.txt").write_text(second)

        term.keys("m")  # wall time
        term.wait_for(lambda s: " wall " in s.splitlines()[0], "the wall-mode title")
        term.keys("p")  # paused: no request, so no session in the service
        term.wait_for(lambda s: "paused" in s.splitlines()[0], "paused")
        time.sleep(0.5)
        assert endpoint_is_free(url)
        term.keys("p")
        term.wait_for(lambda s: " live" in s.splitlines()[0], "live again")
        time.sleep(1.5)  # a request is in flight now
        term.keys("q")
        term.wait_for(lambda s: "EXIT=0" in s, "top exiting with status 0", timeout=15)
        assert endpoint_is_free(url, timeout=1.0), "top left a session running in the service"
    finally:
        term.close()


def test_ctrl_c_ends_top_and_its_session(service: App, tmp_path: Path) -> None:
    term = Terminal(tmp_path, f"{sys.executable} -m pysampler top {service.url} --interval 5")
    try:
        term.wait_for(lambda s: "waiting for the first profile" in s, "the view")
        time.sleep(1.0)  # inside a 5-second request
        term.keys("C-c")
        term.wait_for(lambda s: "EXIT=130" in s, "top ending on Ctrl-C", timeout=15)
        assert endpoint_is_free(service.url, timeout=1.0)
    finally:
        term.close()


def pysampler_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=Path.cwd(), timeout=timeout, env=_env(**env))


def test_top_prints_a_table_per_interval_when_not_a_terminal(service: App) -> None:
    proc = pysampler_cli("top", service.url, "--count", "2", "-n", "5")
    assert proc.returncode == 0, proc.stderr
    reports = [r for r in proc.stdout.split("\n\n") if r.strip()]
    assert len(reports) == 2
    for report in reports:
        lines = report.splitlines()
        assert "pysampler top 127.0.0.1:" in lines[0]
        assert "Hz (100 asked)" in report and "of a core" in report
        row = lines[lines.index(next(ln for ln in lines if "FUNCTION" in ln)) + 1]
        assert row.split("|")[2].split()[0] == "first_phase", report
    # the endpoint's own request threads are not the service's work
    assert "_Handler" not in proc.stdout
    assert endpoint_is_free(service.url)


def test_top_retries_while_the_endpoint_is_busy(service: App) -> None:
    assert get(f"{service.url}/profile/cpu/start").status == 200
    proc = subprocess.Popen(
        [sys.executable, "-m", "pysampler", "top", service.url, "--count", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # top says why it waits, then keeps trying
        assert "busy (409)" in first and first.endswith("; retrying\n"), first
        time.sleep(2.5)  # a few more tries
        assert proc.poll() is None
        assert get(f"{service.url}/profile/cancel").status == 200
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "busy" not in err  # one line, not one per try
    assert "first_phase" in out


@contextlib.contextmanager
def socketless_port() -> Iterator[int]:
    """A port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


def test_refused_connection_is_retried_with_one_line(tmp_path: Path) -> None:
    with socketless_port() as port:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pysampler", "top", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        # Ctrl-C once top is retrying: sent while the interpreter still
        # starts (seconds under emulation), it would end that start-up with
        # Python's own KeyboardInterrupt (killed by SIGINT), not top's 130
        assert proc.stderr is not None
        first = proc.stderr.readline()
        time.sleep(3.0)  # a few more tries
        assert proc.poll() is None
        proc.send_signal(2)
        out, rest = proc.communicate(timeout=helpers.scaled(10))
    assert proc.returncode == 130
    err = first + rest
    assert err.splitlines() == [
        f"pysampler: 127.0.0.1:{port}: connection refused "
        "(is the service running with PYSAMPLER_PORT set?); retrying"
    ]
    assert out == ""


def test_top_with_a_token(tmp_path: Path) -> None:
    app = App(tmp_path, 0, source=PHASES, PYSAMPLER_PORT="0", PYSAMPLER_TOKEN="s3cret")
    try:
        url = app.wait_for_url()
        refused = pysampler_cli("top", url, "--count", "1")
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            f"pysampler: error: {url[7:]} needs a token (401): pass --token or set PYSAMPLER_TOKEN"
        ]
        wrong = pysampler_cli("top", url, "--count", "1", "--token", "nope")
        assert wrong.stderr.strip().endswith("the token was refused (401)")
        ok = pysampler_cli("top", url, "--count", "1", PYSAMPLER_TOKEN="s3cret")
        assert ok.returncode == 0, ok.stderr
        assert "first_phase" in ok.stdout
    finally:
        app.kill()


# -- a fleet: samples labelled pid, from a fake endpoint ---------------------


def fleet_profile() -> Profile:
    """Two processes: 4242 spends its time in ``handler``, 4343 in ``worker``
    (3:1), each with a MainThread of the same ident."""
    frames = [
        Frame("main", "/srv/app.py", 1, 2),
        Frame("handler", "/srv/app.py", 10, 11),
        Frame("worker", "/srv/jobs.py", 5, 6),
    ]
    n = 400
    stack = [1] * 300 + [2] * 100
    thread = [0] * 300 + [1] * 100
    return Profile(
        frames=frames,
        stack_parent=[-1, 0, 0],
        stack_frame=[0, 1, 2],
        stack=stack,
        thread=thread,
        time_ns=list(range(n)),
        cpu_ns=[10_000_000] * n,
        wall_ns=[10_000_000] * n,
        threads=[ThreadInfo(1, 0, "MainThread", 4242), ThreadInfo(1, 0, "MainThread", 4343)],
        metadata=Metadata("cpu", 100.0, 98.0, time.time(), 2.0, pid=4242, sampling_ns=4_000_000),
    )


@contextlib.contextmanager
def fake_endpoint(body: bytes, takes_pid: bool) -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    """An endpoint answering every profile request with ``body``; yields its
    address and the query of each request."""
    queries: list[dict[str, list[str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            queries.append(query)
            if "pid" in query and not takes_pid:
                self._answer(400, b'{"error": "unknown parameter \'pid\'", "parameter": "pid"}')
                return
            time.sleep(float(query["duration"][0]))
            self._answer(200, body)

        def _answer(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", queries
    finally:
        server.shutdown()
        server.server_close()


def test_pprof_round_trip_keeps_the_pid_of_each_thread() -> None:
    back = formats.read(fleet_profile().to_bytes("pprof"))
    assert isinstance(back, Profile)
    assert sorted((t.name, t.pid) for t in back.threads) == [
        ("MainThread", 4242),
        ("MainThread", 4343),
    ]
    assert back.metadata.sampling_ns == 4_000_000


def test_fleet_gets_a_pid_column() -> None:
    body = fleet_profile().to_bytes("pprof")
    with fake_endpoint(body, takes_pid=True) as (where, queries):
        proc = pysampler_cli("top", where, "--count", "1", "--interval", "0.2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "2 processes" in proc.stdout
    head = next(i for i, ln in enumerate(lines) if "FUNCTION" in ln)
    assert lines[head].split()[0] == "PID"
    rows = [ln.split() for ln in lines[head + 1 : head + 3]]
    assert [(r[0], r[-2]) for r in rows] == [("4242", "handler"), ("4343", "worker")]
    assert float(rows[0][1]) == pytest.approx(75.0)  # shares of the whole fleet
    assert "pid" not in queries[0]


def test_pid_option_is_sent_and_filters_here_too() -> None:
    body = fleet_profile().to_bytes("pprof")
    with fake_endpoint(body, takes_pid=True) as (where, queries):
        proc = pysampler_cli("top", where, "--count", "1", "--interval", "0.2", "--pid", "4343")
    assert proc.returncode == 0, proc.stderr
    assert queries[0]["pid"] == ["4343"]
    assert "worker" in proc.stdout and "handler" not in proc.stdout
    assert " - pid 4343" in proc.stdout.splitlines()[0]
    # an endpoint of one process refuses pid=: the view filters by itself
    with fake_endpoint(body, takes_pid=False) as (where, queries):
        proc = pysampler_cli("top", where, "--count", "1", "--interval", "0.2", "--pid", "4242")
    assert proc.returncode == 0, proc.stderr
    assert "pid" in queries[0] and "pid" not in queries[1]
    assert "handler" in proc.stdout and "worker" not in proc.stdout


def test_the_pseudo_thread_of_other_cpu_is_not_counted_as_a_thread() -> None:
    # its samples are the service's CPU and stay in; it is no thread of the program
    fleet = fleet_profile()
    other = ThreadInfo(0, 0, OTHER_CPU_THREAD, 4242)
    thread = [2] * 10 + fleet.thread.tolist()[10:]
    profile = Profile(
        frames=fleet.frames,
        stack_parent=fleet.stack_parent,
        stack_frame=fleet.stack_frame,
        stack=fleet.stack,
        thread=thread,
        time_ns=fleet.time_ns,
        cpu_ns=fleet.cpu_ns,
        wall_ns=fleet.wall_ns,
        threads=[*fleet.threads, other],
        metadata=fleet.metadata,
    )
    snap = cli_top.Snapshot.of("cpu", profile, 0.01)
    assert snap.threads == 2 and snap.samples == 400


def test_view_keys_sort_group_and_switch() -> None:
    view = cli_top.View("host:1", "cpu")
    snap = cli_top.Snapshot.of("cpu", fleet_profile(), 0.01)
    view.apply(snap)
    assert [(r.pid, r.function) for r in view.rows()][:2] == [(4242, "handler"), (4343, "worker")]
    assert view.key("g") is None  # merged across processes
    merged = view.rows()
    assert [r.pid for r in merged] == [0, 0, 0] and merged[-1].function == "main"
    assert view.key("t") is None  # by total: main (in every stack) first
    assert view.rows()[0].function == "main"
    assert view.key("m") == "mode" and view.mode == "wall"
    assert view.rows() == []  # nothing profiled in wall mode yet
    assert view.key("p") == "pause" and view.paused
    assert view.key("q") == "quit"
    table = view.table(80, 10)
    assert all(len(line) <= 80 for line in table)


def test_endpoint_addresses() -> None:
    assert remote.parse("localhost:9119") == remote.Endpoint("http", "localhost", 9119)
    assert remote.parse("https://h.example/prof/").prefix == "/prof"
    assert remote.parse("http://[::1]:80").display == "[::1]:80"
    assert remote.parse("h:1", token="t").token == "t"
    assert remote.is_url("http://x") and remote.is_url("x:1") and not remote.is_url("x.pprof")
    for bad in ("ftp://h:1", "http://h:99999", "http://h:1/?seconds=3"):
        with pytest.raises(ValueError):
            remote.parse(bad)
    assert remote.plain_number(0.5) == "0.5" and remote.plain_number(30.0) == "30"


def test_request_timeout_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setattr(remote, "ANSWER_GRACE", 0.3)
    with socket.socket() as silent:  # accepts (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        ep = remote.parse(f"127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(remote.EndpointError) as err:
            remote.Request(ep, "/profile/cpu", [("duration", "0.1")], 0.1).send()
    assert err.value.retry
    assert str(err.value) == f"{ep.display}: no answer within 0.4 s"


def test_cancel_ends_a_request_and_the_session(service: App) -> None:
    ep = remote.parse(service.url)
    request = remote.Request(ep, "/profile/cpu", [("duration", "30")], 30)
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            request.send()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    # our session runs (asked without starting one: the request may take a
    # while to arrive on a slow machine, under emulation seconds)
    deadline = time.monotonic() + helpers.scaled(10)
    while not timed_session_runs(service.url):
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.05)
    request.cancel()
    thread.join(helpers.scaled(5))
    assert isinstance(outcome[0], remote.Cancelled)
    assert endpoint_is_free(service.url, timeout=helpers.scaled(1.0))


def test_a_live_option_on_a_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.pprof"
    with pysampler.profile() as p:
        pass
    p.save(path)
    proc = pysampler_cli("top", str(path), "--interval", "2")
    assert proc.returncode == 1
    assert "--interval applies to a live view" in proc.stderr
