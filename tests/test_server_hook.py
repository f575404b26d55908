"""PYSAMPLER_PORT: the start-up hook serves an unchanged script, fetched
with curl and go tool pprof from another process."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import site
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import helpers
from test_server import get

CURL = shutil.which("curl")

#: The program under test: it knows nothing of pysampler.
APP = textwrap.dedent(
    """
    import sys, time

    def crunch_numbers():
        n = 0
        for i in range(20000):
            n += i * i
        return n

    def main():
        end = time.monotonic() + float(sys.argv[1])
        while time.monotonic() < end:
            crunch_numbers()
        print("app finished", flush=True)

    main()
    """
)


_env = helpers.clean_env


class App:
    """The script above in a subprocess, with the hook's endpoint on ``url``."""

    def __init__(self, tmp_path: Path, seconds: float, source: str = APP, **env: str) -> None:
        script = tmp_path / "app.py"
        script.write_text(source)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(seconds)],
            cwd=tmp_path,
            env=_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = ""

    def wait_for_url(self, timeout: float = 30) -> str:
        """The address the hook printed (it does so for PYSAMPLER_PORT=0)."""
        self.url = helpers.endpoint_url(self.proc, timeout)
        return self.url

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    running = App(tmp_path, 60, PYSAMPLER_PORT="0")
    try:
        running.wait_for_url()
        yield running
    finally:
        running.kill()


def curl(*args: str, cwd: Path | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one curl run."""
    if CURL is None:
        if os.environ.get("CI"):
            raise RuntimeError("curl is required (scripts/system-deps.sh installs it)")
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [CURL, "-sS", "--noproxy", "*", "--max-time", "60", "-D", "-", *args],
        capture_output=True,
        timeout=90,
        check=False,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def go_pprof_top(target: str, tmp_path: Path) -> list[list[str]]:
    return helpers.go_pprof_top(target, tmp_path)[1]


def top_self(cpuprofile: bytes) -> str:
    hits: collections.Counter[str] = collections.Counter()
    for node in json.loads(cpuprofile)["nodes"]:
        name = node["callFrame"]["functionName"]
        if not name.startswith("("):
            hits[name] += node["hitCount"]
    return hits.most_common(1)[0][0]


# -- the hook itself ------------------------------------------------------------


def test_hook_is_installed_in_site_packages() -> None:
    found = [
        Path(d, "pysampler-hook.pth")
        for d in site.getsitepackages()
        if Path(d, "pysampler-hook.pth").exists()
    ]
    assert found, site.getsitepackages()
    line = found[0].read_text()
    assert "PYSAMPLER_PORT" in line
    assert "pysampler" not in line.replace("PYSAMPLER_PORT", "").replace("_pysampler_hook", "")


def test_hook_imports_nothing_when_the_variable_is_unset() -> None:
    probe = "import sys; print(sorted(m for m in sys.modules if 'pysampler' in m))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), check=True
    )
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""


def test_hook_loads_the_package_when_the_variable_is_set(tmp_path: Path) -> None:
    probe = "import sys; print('pysampler.server' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=_env(PYSAMPLER_PORT="0"),
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "True"
    assert "profiling endpoint on http://127.0.0.1:" in out.stderr


#: A process that founds a group and starts a member (itself again, with
#: PEEK_MEMBER set). The member reads typing from sys.modules the way
#: dataclasses does, without importing it, while the group's profile
#: request makes its request thread import the profiler; it counts the
#: reads that found typing in the middle of its import.
PEEK_TYPING = textwrap.dedent(
    """
    import os, subprocess, sys, time

    if not os.environ.get("PEEK_MEMBER"):
        env = dict(os.environ, PEEK_MEMBER="1")
        child = subprocess.run(
            [sys.executable, __file__, sys.argv[1]], env=env, capture_output=True, text=True
        )
        print(child.stdout, child.stderr[-3000:], flush=True)
        sys.exit(child.returncode)
    half = whole = 0
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        typing = sys.modules.get("typing")
        if typing is not None:
            if hasattr(typing, "ClassVar"):
                whole += 1
            else:
                half += 1
    print("half", half, "whole", whole, flush=True)
    """
)


def test_a_request_never_shows_a_member_a_half_imported_typing(tmp_path: Path) -> None:
    # A spawned uvicorn worker died in @dataclass ("partially initialized
    # module 'typing'") when a group profile reached it while it was still
    # importing: its request thread was importing typing, and dataclasses
    # reads typing from sys.modules. The hook imports typing first.
    running = App(tmp_path, 6, PEEK_TYPING, PYSAMPLER_PORT="0")
    try:
        url = running.wait_for_url()
        deadline = time.monotonic() + 30
        while len(re.findall(r"<tr><td>\d+</td>", get(f"{url}/debug/pprof/").body.decode())) < 2:
            assert time.monotonic() < deadline, "the member did not join"
            time.sleep(0.1)
        reply = get(f"{url}/debug/pprof/profile?seconds=0.5", timeout=60)
        assert reply.status == 200, reply.body[:300]
        code, out, err = running.finish()
    finally:
        running.kill()
    assert code == 0, (out, err)
    half, whole = (int(x) for x in re.findall(r"half (\d+) whole (\d+)", out)[0])
    assert whole > 0, out
    assert half == 0, out


# -- an unchanged script, profiled from outside ---------------------------------


def test_curl_saves_the_seed_file_name_with_the_hot_function_on_top(
    app: App, tmp_path: Path
) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    status, headers, _ = curl("-OJ", f"{app.url}/profile/cpu?duration=1", cwd=downloads)
    assert status == 200
    assert headers["cache-control"] == "no-store"
    (saved,) = downloads.iterdir()
    assert re.fullmatch(r"cpu_\d+_1-seconds\.cpuprofile", saved.name), saved.name
    assert top_self(saved.read_bytes()) == "crunch_numbers"


def test_go_tool_pprof_top_over_http_shows_the_hot_function(app: App, tmp_path: Path) -> None:
    rows = go_pprof_top(f"{app.url}/debug/pprof/profile?seconds=1", tmp_path)
    assert rows[0][-1] == "crunch_numbers", rows[:5]


def test_curl_fetches_every_route(app: App, tmp_path: Path) -> None:
    status, headers, body = curl(f"{app.url}/debug/pprof/")
    assert status == 200
    assert b"/debug/pprof/profile" in body

    status, _, body = curl(f"{app.url}/profile/cpu/start?sampling_interval=2000")
    assert (status, json.loads(body)["hz"]) == (200, 500)
    status, _, body = curl(f"{app.url}/profile/cpu/start")
    assert status == 409
    time.sleep(0.5)
    status, headers, body = curl(f"{app.url}/profile/cpu/stop")
    assert status == 200
    assert re.fullmatch(
        r'attachment; filename="cpu_\d+_[\d.]+-seconds\.cpuprofile"',
        headers["content-disposition"],
    )
    assert top_self(body) == "crunch_numbers"

    assert curl(f"{app.url}/profile/cpu/start")[0] == 200
    status, _, body = curl(f"{app.url}/profile/cancel")
    assert (status, json.loads(body)) == (200, {"status": "cancelled"})
    assert curl(f"{app.url}/profile/cpu/stop")[0] == 409

    path = tmp_path / "wall.pb.gz"
    status, _, body = curl(f"{app.url}/debug/fgprof?seconds=0.5")
    assert status == 200
    path.write_bytes(body)
    rows = go_pprof_top(str(path), tmp_path)
    assert "crunch_numbers" in {r[-1] for r in rows}

    status, _, body = curl(f"{app.url}/profile/cpu?duration=0.5&format=collapsed&mode=wall")
    assert status == 200
    assert b"crunch_numbers" in body

    status, _, body = curl(f"{app.url}/profile/cpu?duration=NaN")
    assert status == 400
    assert json.loads(body)["parameter"] == "duration"
    assert curl(f"{app.url}/no/such/path")[0] == 404


def test_token_from_the_environment(tmp_path: Path) -> None:
    running = App(tmp_path, 60, PYSAMPLER_PORT="0", PYSAMPLER_TOKEN="t0ken")
    try:
        url = running.wait_for_url()
        status, headers, _ = curl(f"{url}/debug/pprof/")
        assert status == 401
        assert headers["www-authenticate"].startswith("Bearer")
        assert curl("-H", "Authorization: Bearer t0ken", f"{url}/debug/pprof/")[0] == 200
    finally:
        running.kill()


def test_allowed_hosts_from_the_environment(tmp_path: Path) -> None:
    running = App(tmp_path, 60, PYSAMPLER_PORT="0", PYSAMPLER_ALLOWED_HOSTS="profiler.test")
    try:
        url = running.wait_for_url()
        port = url.rsplit(":", 1)[1]
        for host, status in (("profiler.test", 200), ("other.test", 403), ("127.0.0.1", 200)):
            got = curl("-H", f"Host: {host}:{port}", f"{url}/debug/pprof/")[0]
            assert got == status, host
    finally:
        running.kill()


# -- the program comes first --------------------------------------------------------


def test_taken_port_warns_and_the_app_still_runs(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        running = App(tmp_path, 0.2, PYSAMPLER_PORT=str(port))
        code, out, err = running.finish()
    assert code == 0
    assert out == "app finished\n"
    assert "pysampler" in err
    assert f"port {port}" in err
    assert "Warning" in err


def test_bad_port_value_warns_and_the_app_still_runs(tmp_path: Path) -> None:
    code, out, err = App(tmp_path, 0.1, PYSAMPLER_PORT="ninety").finish()
    assert (code, out) == (0, "app finished\n")
    assert "PYSAMPLER_PORT='ninety'" in err


def test_exit_is_not_held_up_by_a_request_in_progress(tmp_path: Path) -> None:
    running = App(tmp_path, 1.5, PYSAMPLER_PORT="0")
    host, port = running.wait_for_url().removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(b"GET /profile/cpu?duration=60 HTTP/1.0\r\n\r\n")
        t0 = time.monotonic()
        code, out, _ = running.finish(timeout=30)
        assert (code, out) == (0, "app finished\n")
        assert time.monotonic() - t0 < 20
        # the app exited mid-profile: the connection closes without a reply
        client.settimeout(10)
        assert client.recv(100) == b""


FORK = textwrap.dedent(
    """
    import os, socket, sys, time
    import pysampler

    server = pysampler.serve(0)
    pid = os.fork()
    if pid == 0:
        # the child holds no copy of the listening socket
        alive = [fd for fd in os.listdir("/proc/self/fd")
                 if os.path.realpath(f"/proc/self/fd/{fd}").startswith("socket:")
                 and int(fd) == server._httpd.socket.fileno()]
        os._exit(0 if server.closed and not alive else 1)
    _, status = os.waitpid(pid, 0)
    # the parent still serves
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"GET /debug/pprof/ HTTP/1.0\\r\\n\\r\\n")
        reply = s.makefile("rb").readline()
    print(os.waitstatus_to_exitcode(status), reply.split()[1].decode())
    """
)


#: A program forks while a connection to its endpoint is waiting to send its
#: headers; the connection must still be answered in the parent.
FORK_PENDING = textwrap.dedent(
    """
    import os, socket, time
    import pysampler

    server = pysampler.serve(0)
    waiting = socket.create_connection((server.host, server.port), timeout=5)
    deadline = time.monotonic() + 10
    while server._httpd.listener.pending == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    waiting.sendall(b"GET /debug/pprof/ HTTP/1.0\\r\\n\\r\\n")
    try:
        print(waiting.makefile("rb").readline().split()[1].decode())
    except socket.timeout:
        print("no answer")
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_fork_leaves_the_parents_waiting_connections_alone(tmp_path: Path) -> None:
    # The child's copy of the epoll descriptor is the parent's epoll
    # instance: the child unregistered the connection that was waiting
    # for its headers, the parent never saw them, and answered 408 after
    # 10 s (a group test's first request, about one run in twelve).
    out = subprocess.run(
        [sys.executable, "-c", FORK_PENDING], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["200"], (out.stdout, out.stderr)


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/fd").exists(), reason="Linux")
def test_forked_child_lets_go_of_the_port(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORK], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "200"]
