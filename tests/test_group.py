"""Process groups: PYSAMPLER_PORT on real pre-fork and spawn servers
(gunicorn, uvicorn, multiprocessing pools) under load, profiled through
one port, read back with our reader and with go tool pprof."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import helpers
from pysampler import Profile
from pysampler.formats import pprof

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not Path("/proc/self").exists(), reason="Linux process groups"
)

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BIN = Path(sys.executable).parent

#: the handler's hot function, in every app below
HOT = textwrap.dedent(
    """
    def hot_handler():
        n = 0
        for i in range(300000):
            n += i * i
        return n
    """
)

WSGI_APP = HOT + textwrap.dedent(
    """
    def app(environ, start_response):
        hot_handler()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    """
)

ASGI_APP = HOT + textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        hot_handler()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    """
)

#: a pool of workers running hot_handler forever: python pool.py METHOD N
POOL_APP = HOT + textwrap.dedent(
    """
    import multiprocessing, os, sys

    def task(_):
        for _ in range(20):
            hot_handler()
        return os.getpid()

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[1])
        print("group", os.environ.get("PYSAMPLER_GROUP"), flush=True)
        with ctx.Pool(int(sys.argv[2])) as pool:
            while True:
                pool.map(task, range(64))
    """
)

#: a hand-made pre-fork server: python prefork.py N [exit]; the master
#: exits at once with "exit" (its workers live on)
PREFORK_APP = HOT + textwrap.dedent(
    """
    import os, sys, time

    print("group", os.environ.get("PYSAMPLER_GROUP"), flush=True)
    kids = []
    for _ in range(int(sys.argv[1])):
        pid = os.fork()
        if pid == 0:
            end = time.monotonic() + 120
            while time.monotonic() < end:
                hot_handler()
            os._exit(0)
        kids.append(pid)
    if "exit" in sys.argv:
        sys.exit(0)
    for pid in kids:
        os.waitpid(pid, 0)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_env = helpers.clean_env


def get(url: str, timeout: float = 60) -> tuple[int, Any, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


class Fleet:
    """A server started with PYSAMPLER_PORT; its stderr goes to a file."""

    def __init__(self, tmp_path: Path, argv: list[str], name: str = "fleet", **env: str) -> None:
        self.log = tmp_path / f"{name}.err"
        self.out = tmp_path / f"{name}.out"
        self.port = int(env.pop("PYSAMPLER_PORT", "0")) or free_port()
        with open(self.log, "w") as err, open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=tmp_path,
                env=_env(PYSAMPLER_PORT=str(self.port), **env),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def members(self) -> dict[int, str]:
        """pid -> role, from the index page."""
        status, _, body = get(f"{self.url}/debug/pprof/", timeout=10)
        assert status == 200
        rows = re.findall(r"<tr><td>(\d+)</td><td>[^<]*</td><td>([^<]*)</td>", body.decode())
        return {int(pid): role for pid, role in rows}

    def wait_for(self, count: int, timeout: float = 60, master: bool = True) -> dict[int, str]:
        """Wait until the group has ``count`` processes; pid -> role."""
        deadline = time.monotonic() + timeout
        found: dict[int, str] = {}
        while time.monotonic() < deadline:
            assert not master or self.proc.poll() is None, self.stderr()
            with contextlib.suppress(OSError, AssertionError):
                found = self.members()
                # every one has answered (a process still starting may not yet)
                if len(found) >= count and not any(r.startswith("(") for r in found.values()):
                    return found
            time.sleep(0.2)
        raise AssertionError(f"group has {found}, wanted {count} processes\n{self.stderr()}")

    def profile(self, seconds: float = 2, query: str = "") -> tuple[Any, Profile]:
        status, headers, body = get(f"{self.url}/debug/pprof/profile?seconds={seconds}{query}")
        assert status == 200, body[:500]
        prof = pprof.read(body)
        assert isinstance(prof, Profile)
        return headers, prof

    def group_dir(self) -> str:
        match = re.search(r"group (\S+)", self.out.read_text())
        assert match, self.out.read_text()
        return match.group(1)

    def stderr(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.contextmanager
def fleet(tmp_path: Path, argv: list[str], **kw: str) -> Iterator[Fleet]:
    running = Fleet(tmp_path, argv, **kw)
    try:
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def load(url: str, clients: int = 6) -> Iterator[None]:
    """``clients`` threads requesting ``url`` back to back."""
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                get(url, timeout=10)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(15)


def pid_values(prof: Profile) -> dict[int, int]:
    """pid -> value (ns) in a group profile."""
    out: dict[int, int] = {}
    for i, (_, value) in prof.thread_totals().items():
        pid = prof.threads[i].pid
        out[pid] = out.get(pid, 0) + value
    return out


def children(pid: int) -> set[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    out.add(int(entry))
    return out


def assert_every_worker_on_top(fleet: Fleet, workers: set[int], tmp_path: Path) -> Profile:
    """One profile: samples from every worker, hot_handler on top."""
    # a worker still starting (importing its server and the app: seconds
    # under emulation) is busy too, but not yet in hot_handler: ask again
    deadline = time.monotonic() + helpers.scaled(60)
    while True:
        headers, prof = fleet.profile(2)
        values = pid_values(prof)
        busy = {pid for pid, v in values.items() if v > 0}
        answered = set(map(int, headers["X-Pysampler-Pids"].split()))
        top = prof.functions()[:1]
        serving = bool(top) and top[0].function == "hot_handler"
        if (workers <= busy and serving) or time.monotonic() > deadline:
            break
    assert workers <= answered, (workers, answered)
    assert workers <= busy, (workers, values)
    assert {t.pid for t in prof.threads} <= {p.pid for p in prof.processes}
    assert prof.functions()[0].function == "hot_handler", prof.top(5)
    return prof


def _needs(module: str) -> None:
    if shutil.which(module, path=str(BIN)) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")


# -- real servers -----------------------------------------------------------------


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_gunicorn_workers_all_answer_one_request(tmp_path: Path, worker_class: str) -> None:
    _needs("gunicorn")
    (tmp_path / "app.py").write_text(WSGI_APP)
    app_port = free_port()
    argv = [str(BIN / "gunicorn"), "-w", "3", "-k", worker_class, "-b", f"127.0.0.1:{app_port}"]
    with fleet(tmp_path, [*argv, "app:app"]) as running:
        found = running.wait_for(4)
        workers = children(running.proc.pid)
        assert workers <= set(found), (workers, found)
        assert len(workers) == 3
        assert all(found[w].startswith(f"forked from {running.proc.pid}") for w in workers)
        with load(f"http://127.0.0.1:{app_port}/"):
            assert_every_worker_on_top(running, workers, tmp_path)
            if worker_class == "sync":
                # go tool pprof reads the pid label straight from the port
                tags = helpers.go_pprof(
                    f"{running.url}/debug/pprof/profile?seconds=2", tmp_path, "-tags"
                )
                pids = set(map(int, re.findall(r"^\s+\S+ \(\s*[\d.]+%\): (\d+)$", tags, re.M)))
                assert workers <= pids, tags


def _uvicorn_checks_worker_health() -> bool:
    """uvicorn 0.30+: the supervisor pings its workers (--timeout-worker-healthcheck)."""
    import inspect

    import uvicorn

    return "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters


def test_uvicorn_spawned_workers_join(tmp_path: Path) -> None:
    _needs("uvicorn")
    (tmp_path / "app.py").write_text(ASGI_APP)
    app_port = free_port()
    argv = [str(BIN / "uvicorn"), "--workers", "2", "--port", str(app_port), "app:app"]
    if helpers.EMULATED and _uvicorn_checks_worker_health():
        # uvicorn kills and replaces a worker that does not answer its health
        # check within 5 s: under emulation one still starting, or serving
        # the load, sometimes does not, and the workers change under the test
        argv[1:1] = ["--timeout-worker-healthcheck", str(int(helpers.scaled(5)))]
    with fleet(tmp_path, argv) as running:
        found = running.wait_for(3)
        workers = {p for p in children(running.proc.pid) if "child of" in found.get(p, "")}
        assert len(workers) >= 2, (found, children(running.proc.pid))
        # the spawned workers ran the hook and joined instead of failing to bind
        assert "cannot listen" not in running.stderr()
        with load(f"http://127.0.0.1:{app_port}/"):
            assert_every_worker_on_top(running, workers, tmp_path)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_workers_join(tmp_path: Path, method: str) -> None:
    (tmp_path / "pool.py").write_text(POOL_APP)
    with fleet(tmp_path, [sys.executable, "pool.py", method, "3"]) as running:
        deadline = time.monotonic() + 60
        while True:
            found = running.wait_for(4)
            workers = {p for p, role in found.items() if "PoolWorker" in role}
            if len(workers) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(workers) == 3, found
        assert_every_worker_on_top(running, workers, tmp_path)


# -- membership follows the server's life ------------------------------------------


def test_worker_killed_mid_profile_is_named_and_replaced(tmp_path: Path) -> None:
    _needs("gunicorn")
    (tmp_path / "app.py").write_text(WSGI_APP)
    app_port = free_port()
    argv = [str(BIN / "gunicorn"), "-w", "3", "-b", f"127.0.0.1:{app_port}", "app:app"]
    with fleet(tmp_path, argv) as running, load(f"http://127.0.0.1:{app_port}/"):
        running.wait_for(4)
        workers = children(running.proc.pid)
        victim = min(workers)
        result: list[Any] = []
        request = threading.Thread(target=lambda: result.append(running.profile(3)))
        t0 = time.monotonic()
        request.start()
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        request.join(30)
        assert result, "the request did not complete"
        assert time.monotonic() - t0 < 3 + 3 + 2  # the window, the grace, slack
        headers, prof = result[0]
        assert victim in set(map(int, headers["X-Pysampler-Missing-Pids"].split()))
        assert any(f"pid {victim}" in n and "lost" in n for n in prof.metadata.notes)
        assert (workers - {victim}) <= set(pid_values(prof)), (
            pid_values(prof),
            headers["X-Pysampler-Pids"],
            prof.metadata.notes,
        )
        # gunicorn starts a replacement; it is in the next profile
        deadline = time.monotonic() + 30
        while True:
            new = children(running.proc.pid) - workers
            if new and set(running.members()) >= new:
                break
            assert time.monotonic() < deadline, running.members()
            time.sleep(0.2)
        _, again = running.profile(2)
        assert new <= {t.pid for t in again.threads}


def test_master_exits_and_a_worker_takes_the_port(tmp_path: Path) -> None:
    (tmp_path / "prefork.py").write_text(PREFORK_APP)
    with fleet(tmp_path, [sys.executable, "prefork.py", "3", "exit"]) as running:
        running.proc.wait(30)  # the master is gone; its workers live on
        t0 = time.monotonic()
        found = running.wait_for(3, timeout=10, master=False)
        assert time.monotonic() - t0 < 5
        assert running.proc.pid not in found
        _, prof = running.profile(1)
        assert set(pid_values(prof)) == set(found)
        assert prof.functions()[0].function == "hot_handler"
        for pid in found:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_gunicorn_restarted_with_usr2_keeps_its_endpoint(tmp_path: Path) -> None:
    """gunicorn's zero-downtime upgrade: USR2 starts a new master (fork and
    exec, so its hook joins the group) with new workers; TERM to the old
    master ends it and its workers; a process of the new generation takes
    the port."""
    _needs("gunicorn")
    (tmp_path / "app.py").write_text(WSGI_APP)
    app_port = free_port()
    argv = [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{app_port}", "app:app"]
    with fleet(tmp_path, argv) as running:
        old = set(running.wait_for(3))
        os.kill(running.proc.pid, signal.SIGUSR2)
        found = running.wait_for(6)
        (new_master,) = (p for p, r in found.items() if r == f"child of {running.proc.pid}")
        new = {new_master} | children(new_master)
        assert set(found) == old | new, found
        os.kill(running.proc.pid, signal.SIGTERM)
        running.proc.wait(30)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError, AssertionError):
                if set(running.members()) == new:
                    break
            assert time.monotonic() < deadline, running.stderr()
            time.sleep(0.2)
        with load(f"http://127.0.0.1:{app_port}/"):
            headers, prof = running.profile(2)
        assert set(map(int, headers["X-Pysampler-Pids"].split())) == new
        assert prof.functions()[0].function == "hot_handler", prof.top(5)


# -- isolation --------------------------------------------------------------------


def test_two_groups_on_two_ports_do_not_see_each_other(tmp_path: Path) -> None:
    (tmp_path / "prefork.py").write_text(PREFORK_APP)
    argv = [sys.executable, "prefork.py", "2"]
    with fleet(tmp_path, argv, name="a") as a, fleet(tmp_path, argv, name="b") as b:
        in_a, in_b = set(a.wait_for(3)), set(b.wait_for(3))
        assert not in_a & in_b
        assert a.group_dir() != b.group_dir()
        assert set(pid_values(a.profile(0.5)[1])) <= in_a
        status, _, body = get(f"{a.url}/debug/pprof/profile?seconds=0.5&pid={min(in_b)}")
        assert status == 404
        assert b'"parameter": "pid"' in body


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_a_process_of_another_user_cannot_join(tmp_path: Path) -> None:
    (tmp_path / "prefork.py").write_text(PREFORK_APP)
    with fleet(tmp_path, [sys.executable, "prefork.py", "1"]) as running:
        before = set(running.wait_for(2))
        group = running.group_dir()
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        readable = subprocess.run(
            [*nobody, sys.executable, "-c", "import pysampler"],
            capture_output=True,
            env=_env(),
            timeout=60,
            cwd="/",
            check=False,
        )
        if readable.returncode != 0:  # an environment under root's home (a wheel under test)
            pytest.skip("this interpreter's packages are not readable by nobody")
        # the hook of a would-be member run as nobody, with the group's environment
        probe = "import time, os; print(os.getpid(), flush=True); time.sleep(3)"
        env = _env(PYSAMPLER_PORT=str(running.port), PYSAMPLER_GROUP=group)
        out = subprocess.run(
            [*nobody, sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd="/",
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "cannot join the process group" in out.stderr
        assert set(running.members()) == before
        # nor can it reach a member's control socket directly
        (member,) = before - {running.proc.pid}
        connect = textwrap.dedent(
            f"""
            import socket
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect({os.path.join(group, f"{member}.sock")!r})
            except PermissionError:
                print("refused")
            """
        )
        out = subprocess.run(
            [*nobody, sys.executable, "-c", connect],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
            cwd="/",
            check=False,
        )
        assert out.stdout.strip() == "refused", out.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_control_channel_tells_another_users_connection(tmp_path: Path) -> None:
    """The uid check each end makes (SO_PEERCRED), on a socket another
    user can reach (a group's own never is: its directory is 0700)."""
    from pysampler.group import channel

    open_dir = tempfile.mkdtemp(prefix="pysampler-test-")
    os.chmod(open_dir, 0o777)
    path = os.path.join(open_dir, "s.sock")
    listener = channel.listen(path)
    os.chmod(path, 0o666)
    with listener:
        code = (
            "import socket, time; s = socket.socket(socket.AF_UNIX); "
            f"s.connect({path!r}); time.sleep(2)"
        )
        child = subprocess.Popen(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
            ],
            env=_env(),
            cwd="/",
        )
        listener.settimeout(30)
        conn, _ = listener.accept()
        with conn:
            assert channel.peer_uid(conn) == 65534
            assert not channel.same_user(conn)
        child.wait(30)
        with socket.socket(socket.AF_UNIX) as mine:
            mine.connect(path)
            conn, _ = listener.accept()
            with conn:
                assert channel.same_user(conn)
    shutil.rmtree(open_dir)


# -- single processes ---------------------------------------------------------------


def test_a_lone_process_answers_as_before_and_knows_its_pid(tmp_path: Path) -> None:
    script = tmp_path / "lone.py"
    script.write_text(HOT + "\nwhile True:\n    hot_handler()\n")
    with fleet(tmp_path, [sys.executable, str(script)], name="lone") as running:
        (pid,) = running.wait_for(1)
        status, headers, body = get(f"{running.url}/debug/pprof/profile?seconds=0.5")
        assert status == 200
        assert "X-Pysampler-Pids" not in headers  # the lone-process route answered
        prof = pprof.read(body)
        assert isinstance(prof, Profile)
        assert not prof.processes
        assert get(f"{running.url}/debug/pprof/profile?seconds=0.5&pid={pid}")[0] == 200
        assert get(f"{running.url}/profile/cpu?duration=0.5&pid=1")[0] == 404
        assert get(f"{running.url}/profile/cpu?duration=0.5&pid=x")[0] == 400


# -- slow members, sessions, heap -----------------------------------------------------


def test_a_hung_member_costs_the_window_plus_the_grace_and_is_named(tmp_path: Path) -> None:
    from pysampler.group.leader import GRACE

    (tmp_path / "prefork.py").write_text(PREFORK_APP)
    with fleet(tmp_path, [sys.executable, "prefork.py", "2"]) as running:
        found = running.wait_for(3)
        stuck = max(set(found) - {running.proc.pid})
        os.kill(stuck, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            headers, prof = running.profile(1)
            took = time.monotonic() - t0
        finally:
            os.kill(stuck, signal.SIGCONT)
        assert 1 + GRACE - 0.5 < took < 1 + GRACE + 3, took
        assert headers["X-Pysampler-Missing-Pids"] == str(stuck)
        assert set(map(int, headers["X-Pysampler-Pids"].split())) == set(found) - {stuck}
        assert any(f"pid {stuck}: did not answer in time" in n for n in prof.metadata.notes)
        assert stuck not in pid_values(prof)
        # it is back once it runs again (on a loaded machine the resumed
        # process may still be catching up when the next window ends: it
        # then refuses that stale request, and answers a later one)
        back = []
        for _ in range(3):
            h2, again = running.profile(1)
            back.append((h2.get("X-Pysampler-Missing-Pids"), again.metadata.notes))
            if stuck in {t.pid for t in again.threads}:
                break
        else:
            raise AssertionError(f"pid {stuck} never came back: {back}")


def test_start_stop_and_cancel_cover_the_group(tmp_path: Path) -> None:
    (tmp_path / "prefork.py").write_text(PREFORK_APP)
    with fleet(tmp_path, [sys.executable, "prefork.py", "2"], PYSAMPLER_TOKEN="s3cret") as running:
        auth = {"Authorization": "Bearer s3cret"}

        def call(path: str) -> tuple[int, Any, bytes]:
            request = urllib.request.Request(running.url + path, headers=auth)
            try:
                with _OPENER.open(request, timeout=60) as resp:
                    return resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as err:
                with err:
                    return err.code, err.headers, err.read()

        deadline = time.monotonic() + 30
        while True:  # the port is open
            with contextlib.suppress(OSError):
                status = get(f"{running.url}/debug/pprof/")[0]
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # the token rule holds for the group's port
        assert status == 401
        deadline = time.monotonic() + 30
        while len(re.findall(rb"<tr><td>\d+", call("/debug/pprof/")[2])) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        status, _, body = call("/profile/cpu/start?hz=200")
        assert status == 200, body
        started = json.loads(body)
        assert len(started["pids"]) == 3
        assert call("/profile/cpu/start")[0] == 409
        assert call("/profile/cpu?duration=1")[0] == 409  # one group session at a time
        time.sleep(0.5)
        status, headers, body = call("/profile/cpu/stop?format=pprof")
        assert status == 200
        assert set(map(int, headers["X-Pysampler-Pids"].split())) == set(started["pids"])
        prof = pprof.read(body)
        assert isinstance(prof, Profile)
        assert {t.pid for t in prof.threads} == set(started["pids"])
        assert call("/profile/cpu/stop")[0] == 409

        assert call("/profile/cpu/start")[0] == 200
        status, _, body = call("/profile/cancel")
        assert (status, json.loads(body)["status"]) == (200, "cancelled")
        assert call("/profile/cpu/stop")[0] == 409
        # a timed request is cancelled too, and every member is free after
        result: list[int] = []
        waiting = threading.Thread(
            target=lambda: result.append(call("/profile/cpu?duration=20")[0])
        )
        waiting.start()
        time.sleep(1)
        assert call("/profile/cancel")[0] == 200
        waiting.join(10)
        assert result == [409]
        assert call("/profile/cpu?duration=0.3")[0] == 200


def test_heap_routes_cover_the_group(tmp_path: Path) -> None:
    (tmp_path / "prefork.py").write_text(PREFORK_APP)
    argv = [sys.executable, "prefork.py", "2"]

    def heap(running: Fleet, path: str, found: set[int]) -> None:
        status, headers, body = get(running.url + path)
        assert status == 200, body
        assert set(map(int, headers["X-Pysampler-Pids"].split())) == found
        prof = pprof.read(body)
        assert not isinstance(prof, Profile)
        assert {p.pid for p in prof.processes} <= found
        assert set(prof.pid.tolist()) <= found

    # every process keeps a heap session: answers at once, as Go's do
    with fleet(tmp_path, argv, name="resident", PYSAMPLER_HEAP="1") as running:
        found = set(running.wait_for(3))
        heap(running, "/debug/pprof/heap", found)
        heap(running, "/debug/pprof/allocs", found)
        status, _, body = get(f"{running.url}/debug/pprof/allocs?seconds=0.5")
        assert status == 409  # as for a lone process: the resident sessions hold it
        assert b"kept running by the endpoint" in body
    # without: a window
    with fleet(tmp_path, argv, name="window") as running:
        found = set(running.wait_for(3))
        heap(running, "/debug/pprof/heap?seconds=0.5", found)
        status, _, body = get(f"{running.url}/debug/pprof/heap")
        assert status == 409
        assert b"PYSAMPLER_HEAP=1" in body
        status, _, body = get(f"{running.url}/profile/heap?duration=0.5")
        assert status == 200
        assert json.loads(body)["head"]["callFrame"]["functionName"] == "(root)"


#: a master and two forked workers; only the workers hold "worker-only-<pid>"
SNAPSHOT_APP = HOT + textwrap.dedent(
    """
    import os, time

    print("group", os.environ.get("PYSAMPLER_GROUP"), flush=True)
    kids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            kept = "-".join(["worker", "only", str(os.getpid())])  # made here alone
            end = time.monotonic() + 120
            while time.monotonic() < end:
                hot_handler()
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    """
)


def test_heap_snapshot_is_of_the_process_pid_names(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SNAPSHOT_APP)
    with fleet(tmp_path, [sys.executable, "app.py"]) as running:
        members = running.wait_for(3)
        master = running.proc.pid
        worker = min(p for p in members if p != master)

        def snapshot(query: str = "") -> tuple[Any, dict[str, Any]]:
            status, headers, body = get(f"{running.url}/profile/heap_snapshot{query}")
            assert status == 200, body[:300]
            assert int(headers["Content-Length"]) == len(body)
            assert float(headers["X-Pysampler-Pause-Ms"]) > 0
            doc = json.loads(body)
            assert len(doc["nodes"]) == doc["snapshot"]["node_count"] * 7
            return headers, doc

        # by default, the process that serves the port, as for a lone one
        headers, doc = snapshot()
        assert not [s for s in doc["strings"] if s.startswith("worker-only-")]
        # pid=N: that process's own graph, streamed through the leader
        headers, doc = snapshot(f"?pid={worker}")
        assert headers["X-Pysampler-Pids"] == str(worker)
        assert f"_pid{worker}.heapsnapshot" in headers["Content-Disposition"]
        assert f"worker-only-{worker}" in doc["strings"]
        assert not [
            s
            for s in doc["strings"]
            if s.startswith("worker-only-") and s != f"worker-only-{worker}"
        ]
        # graphs of two processes do not merge; a pid must be in the group
        others = ",".join(map(str, members))
        status, _, body = get(f"{running.url}/profile/heap_snapshot?pid={others}")
        assert status == 400 and json.loads(body)["parameter"] == "pid"
        status, _, body = get(f"{running.url}/profile/heap_snapshot?pid=1")
        assert status == 404 and json.loads(body)["parameter"] == "pid"


def test_children_opt_out_and_pip_is_untouched(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, subprocess, sys, time
            plain = {k: v for k, v in os.environ.items() if k != "PYSAMPLER_PORT"}
            out = subprocess.run([sys.executable, "-m", "pip", "--version"],
                                 capture_output=True, text=True)
            print("pip", out.returncode, repr(out.stderr), flush=True)
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=plain)
            joined = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            print("kids", joined.pid, flush=True)
            time.sleep(60)
            """
        )
    )
    with fleet(tmp_path, [sys.executable, str(script)]) as running:
        deadline = time.monotonic() + 60
        while "kids" not in running.out.read_text():
            assert time.monotonic() < deadline, running.stderr()
            time.sleep(0.1)
        found = running.wait_for(2)
        out = running.out.read_text()
        assert re.search(r"^pip 0 ''$", out, re.M), out
        joined = int(re.search(r"kids (\d+)", out).group(1))  # type: ignore[union-attr]
        kids = children(running.proc.pid)
        assert set(found) == {running.proc.pid, joined}, (found, kids)
        assert len(kids) == 2  # the opted-out child runs, outside the group
        assert found[joined].startswith(f"child of {running.proc.pid}")


@pytest.mark.parametrize("plant", ["open to others", "symlink"])
def test_a_planted_user_directory_is_refused_and_the_process_served_alone(
    tmp_path: Path, plant: str
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    user_dir = tmp / f"pysampler-{os.geteuid()}"
    if plant == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        user_dir.symlink_to(elsewhere)
    else:
        user_dir.mkdir()
        user_dir.chmod(0o777)
    script = tmp_path / "lone.py"
    script.write_text(HOT + "\nwhile True:\n    hot_handler()\n")
    with fleet(tmp_path, [sys.executable, str(script)], TMPDIR=str(tmp)) as running:
        deadline = time.monotonic() + 30
        while "serving this process alone" not in running.stderr():
            assert time.monotonic() < deadline, running.stderr()
            time.sleep(0.1)
        assert "cannot make a process group" in running.stderr()
        while True:
            with contextlib.suppress(OSError):
                status, headers, _ = get(f"{running.url}/debug/pprof/profile?seconds=0.3")
                break
            assert time.monotonic() < deadline, running.stderr()
            time.sleep(0.1)
        assert status == 200
        assert "X-Pysampler-Pids" not in headers
        # nothing was made in the planted directory
        assert not list(user_dir.iterdir())
