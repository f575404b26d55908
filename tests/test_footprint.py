"""What pysampler costs a process that is not asking for analysis: no numpy
is ever imported on its account, and an idle HTTP endpoint is one thread.

Each case runs in a fresh interpreter (a test process has numpy loaded
already) and checks ``sys.modules`` there after the work is done. Timing
and RSS are measured in benchmarks/ (hook_startup.py), not asserted here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import helpers
from pysampler import _asyncio, formats
from pysampler.server import ROUTES

CPU_FORMATS = ("pprof", "cpuprofile", "collapsed", "html", "speedscope")
HEAP_FORMATS = ("pprof", "heapprofile", "html", "collapsed")

#: run in the child after its work: fails the child if numpy came in
NO_NUMPY = """
import sys
assert "numpy" not in sys.modules, "numpy was imported"
print("numpy-free")
"""


def run_numpy_free(code: str, timeout: float = 60) -> str:
    """Run ``code`` then :data:`NO_NUMPY` in a fresh interpreter."""
    proc = helpers.run_python(textwrap.dedent(code) + NO_NUMPY, timeout=timeout)
    assert proc.stdout.rstrip().endswith("numpy-free"), proc.stdout
    return proc.stdout


def test_import_and_the_public_names_load_no_numpy() -> None:
    run_numpy_free(
        """
        import pysampler
        from pysampler import *  # every public name resolved
        import pysampler.heap, pysampler.formats, pysampler.server
        assert pysampler.profile is profile
        """
    )


# -- sessions, built and written in every format ---------------------------------

SESSION = """
import threading, time
import pysampler
from workloads import busy_until, running_threads, spin_cpu, sleep_until

with running_threads({"busy": busy_until, "sleepy": sleep_until}):
    pysampler.start(hz=500, mode=%(mode)r)
    spin_cpu(0.2)
    profile = pysampler.stop()
assert profile.sample_count > 10, profile
"""

USE_PROFILE = """
import os, tempfile
from pysampler import formats
profile.top(5); profile.functions(); profile.stacks(); profile.thread_totals()
for name in %(formats)r:
    data = profile.to_bytes(name)
    assert data, name
    path = os.path.join(tempfile.mkdtemp(), "out" + formats.get(name).suffixes[0])
    assert profile.save(path) == name
    assert os.path.getsize(path) == len(data), name
"""


@pytest.mark.parametrize("mode", ["cpu", "wall"])
@pytest.mark.parametrize("fmt", CPU_FORMATS)
def test_session_and_each_format_load_no_numpy(mode: str, fmt: str) -> None:
    run_numpy_free(SESSION % {"mode": mode} + USE_PROFILE % {"formats": (fmt,)})


@pytest.mark.skipif(not _asyncio.supported(), reason="asyncio task sampling needs Python 3.9-3.14")
def test_wall_session_with_asyncio_tasks_loads_no_numpy() -> None:
    session = textwrap.dedent(
        """
        import asyncio
        import pysampler

        async def waits():
            await asyncio.sleep(3600)

        async def main():
            tasks = [asyncio.create_task(waits(), name=f"waiter-{i}") for i in range(3)]
            await asyncio.sleep(0.3)
            for t in tasks:
                t.cancel()

        with pysampler.profile(hz=200, mode="wall", asyncio=True) as p:
            asyncio.run(main())
        profile = p.profile
        assert profile.metadata.asyncio and profile.metadata.task_samples > 0
        """
    )
    run_numpy_free(session + USE_PROFILE % {"formats": CPU_FORMATS})


@pytest.mark.parametrize("fmt", HEAP_FORMATS)
def test_heap_start_snapshot_stop_and_each_format_load_no_numpy(fmt: str) -> None:
    run_numpy_free(
        f"""
        import os, tempfile
        import pysampler.heap
        from pysampler import _asyncio, formats

        pysampler.heap.start(sample_bytes=4096)
        kept = [bytearray(1000) for _ in range(2000)]
        snap = pysampler.heap.snapshot()
        profile = pysampler.heap.stop()
        for p in (snap, profile, profile.with_view("inuse")):
            p.top(5); p.functions(); p.stacks(); p.inuse_bytes; p.alloc_bytes
            data = p.to_bytes({fmt!r})
            assert data
            path = os.path.join(tempfile.mkdtemp(), "out" + formats.get({fmt!r}).suffixes[0])
            assert p.save(path) == {fmt!r}
        """
    )


def test_reading_profiles_back_loads_no_numpy() -> None:
    run_numpy_free(
        SESSION % {"mode": "cpu"}
        + """
from pysampler import _asyncio, formats
for name in ("pprof", "cpuprofile"):
    back = formats.read(profile.to_bytes(name))
    back.top(3)
    assert back.sample_count == profile.sample_count, name
"""
    )


def test_column_attributes_are_numpy_views_made_on_first_access() -> None:
    helpers.run_python(
        SESSION % {"mode": "cpu"}
        + """
import sys
assert "numpy" not in sys.modules
stack = profile.stack
import numpy as np
assert isinstance(stack, np.ndarray) and not stack.flags.writeable
assert profile.stack is stack  # made once
assert (profile.count >= 1).all() and profile.count.sum() == profile.sample_count
"""
    )


# -- the HTTP endpoint -----------------------------------------------------------

#: a program that knows nothing of pysampler; it reports on a line of stdin
APP = """
import asyncio, json, os, sys, threading, time

def crunch_numbers():
    n = 0
    for i in range(20000):
        n += i * i
    return n

async def waits():
    await asyncio.sleep(3600)

async def tasks():
    pending = [asyncio.create_task(waits(), name=f"waiter-{i}") for i in range(3)]
    await asyncio.gather(*pending)

threading.Thread(target=asyncio.run, args=(tasks(),), name="loop", daemon=True).start()
# a line on stdin ends the program; waiting for it in a thread of its own
# keeps the main thread pure computation: a main thread that made a system
# call on every turn would win the GIL back each time and starve the
# endpoint's thread (CPython's convoy), so every request would take minutes
report = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), report.set()), daemon=True).start()
kept = []
while not report.is_set():
    crunch_numbers()
    kept.append(bytearray(512))
    del kept[:-2000]
print(json.dumps(sorted(m for m in sys.modules if m == "numpy" or m.startswith("numpy."))))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")}
    env["PYTHONPATH"] = os.path.dirname(__file__) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class _App:
    def __init__(self, tmp_path: Path, program: str = APP, **env: str) -> None:
        script = tmp_path / "app.py"
        script.write_text(program)
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            env=_env(**env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # its own process group: kill() ends a forked worker too
            start_new_session=hasattr(os, "killpg"),
        )
        try:
            self.url = helpers.endpoint_url(self.proc)
        except BaseException:
            self.kill()
            raise

    def numpy_modules(self) -> list[str]:
        out, err = self.proc.communicate("report\n", timeout=60)
        assert self.proc.returncode == 0, err
        return list(json.loads(out.strip().splitlines()[-1]))

    def kill(self) -> None:
        """End the program and any worker it forked (which may outlive it
        and would hold its output pipes open)."""
        if hasattr(os, "killpg"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        elif self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _fetch(url: str) -> tuple[int, bytes]:
    """Status and body (may be empty: a collapsed profile of no whole
    millisecond)."""
    try:
        with _OPENER.open(url, timeout=60) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code), err.read()


def _get(url: str) -> int:
    return _fetch(url)[0]


def _wait_for_members(url: str, count: int) -> None:
    """Until the index page lists ``count`` processes, each answered."""
    deadline = time.monotonic() + 30
    while True:
        with _OPENER.open(url + "/debug/pprof/", timeout=10) as resp:
            page = resp.read().decode()
        roles = re.findall(r"<tr><td>\d+</td><td>[^<]*</td><td>([^<]*)</td>", page)
        # a process still starting has a role in brackets
        if len(roles) >= count and not any(r.startswith("(") for r in roles):
            return
        assert time.monotonic() < deadline, page
        time.sleep(0.1)


#: the profiling windows asked below: 0.1 s, 1 s under emulation, where a
#: group member may read its part of the request only after 0.1 s have passed
#: (it then refuses it, as the window has ended, and so does the whole group)
_W = helpers.scaled(0.1)
_D = f"duration={_W}"
#: every route, every format, each answered 200; heap windows (?seconds) need
#: no resident heap session, the resident routes one (PYSAMPLER_HEAP=1)
REQUESTS = {
    "windows": [
        *(f"/profile/cpu?{_D}&format={f}" for f in CPU_FORMATS),
        *(f"/profile/cpu?{_D}&mode=wall&format={f}" for f in CPU_FORMATS),
        # asyncio task sampling where supported (refused with a 400 on 3.15)
        *(
            f"/profile/cpu?{_D}&mode=wall&asyncio=1{f}"
            for f in ("", "&format=pprof")
            if _asyncio.supported()
        ),
        *(
            step
            for f in CPU_FORMATS
            for step in ("/profile/cpu/start?hz=500", f"/profile/cpu/stop?format={f}")
        ),
        "/profile/cpu/start?mode=wall",
        "/profile/cancel",
        "/debug/pprof/",
        "/debug/pprof",
        f"/debug/pprof/profile?seconds={_W}",
        f"/debug/fgprof?seconds={_W}",
        f"/debug/fgprof?seconds={_W}&format=collapsed",
        *(f"/profile/heap?{_D}&format={f}" for f in ("heapprofile", "pprof")),
        f"/debug/pprof/heap?seconds={_W}",
        f"/debug/pprof/allocs?seconds={_W}",
        "/profile/heap_snapshot",
    ],
    "resident heap": ["/debug/pprof/heap", "/debug/pprof/allocs"],
}


#: put before :data:`APP`: the program forks a worker that runs APP too (a
#: group of two: the founder holds the port, the worker is a member) and
#: writes its own numpy modules to worker.json when told to end (SIGTERM)
FORK_WORKER = """
import json, os, signal, sys
worker = os.fork()
if worker == 0:
    def _report(*_):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.json")
        with open(path, "w") as f:
            json.dump(sorted(m for m in sys.modules if m == "numpy" or m.startswith("numpy.")), f)
        os._exit(0)
    signal.signal(signal.SIGTERM, _report)
    r, _keep_open = os.pipe()
    os.dup2(r, 0)  # its stdin never ends: only the founder reads the test's line
"""

#: put after :data:`APP` (whose last line lists the founder's numpy
#: modules): ends the worker, then prints both lists as one
REAP_WORKER = """
os.kill(worker, signal.SIGTERM)
os.waitpid(worker, 0)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.json")) as f:
    print(json.dumps(sorted(set(json.load(f)) | {m for m in sys.modules if m.startswith("numpy")})))
"""


def test_the_requests_below_cover_every_route() -> None:
    paths = {r.split("?")[0] for group in REQUESTS.values() for r in group}
    assert paths == set(ROUTES)


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("group", sorted(REQUESTS))
def test_every_route_and_format_loads_no_numpy(group: str, processes: int, tmp_path: Path) -> None:
    """In one process; and in a process group of two, where the founder
    serves every request by asking its member and merging the answers."""
    if processes > 1 and not hasattr(os, "fork"):
        pytest.skip("process groups need fork")
    env = {"PYSAMPLER_PORT": "0"}
    if group == "resident heap":
        env["PYSAMPLER_HEAP"] = "1"
    app = _App(tmp_path, FORK_WORKER * (processes > 1) + APP + REAP_WORKER * (processes > 1), **env)
    try:
        if processes > 1:
            _wait_for_members(app.url, processes)
        for path in REQUESTS[group]:
            status, body = _fetch(app.url + path)
            assert status == 200, (path, body[:500])
        if processes > 1:  # requests cover both processes
            # (a member starved past the window plus the grace, on a loaded
            # machine, is left out of one answer and named: ask again)
            for _ in range(5):
                with _OPENER.open(f"{app.url}/profile/cpu?{_D}&format=pprof", timeout=60) as resp:
                    answered = resp.headers["X-Pysampler-Pids"].split()
                if len(answered) == processes:
                    break
            assert len(answered) == processes, answered
        assert _get(app.url + "/profile/cpu?duration=0") == 400
        assert _get(app.url + "/no/such/path") == 404
        assert app.numpy_modules() == []
    finally:
        app.kill()


def test_idle_endpoint_is_one_thread_and_loads_no_profiler() -> None:
    probe = textwrap.dedent(
        """
        import json, os, sys, threading
        try:
            native = len(os.listdir("/proc/self/task"))
        except OSError:
            native = None
        print(json.dumps({
            "python_threads": [t.name for t in threading.enumerate()],
            "native_threads": native,
            "modules": sorted(sys.modules),
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=_env(PYSAMPLER_PORT="0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "profiling endpoint on http://127.0.0.1:" in out.stderr
    seen = json.loads(out.stdout)
    assert seen["python_threads"] == ["MainThread", "pysampler-http"]
    if seen["native_threads"] is not None:
        # no thread pool of any library either: the endpoint's thread and
        # the main one. An emulator (qemu-user) runs a thread of its own in
        # every process, seen in /proc/self/task: under emulation, those of
        # an interpreter without site (so without our start-up hook) count
        # as the main one
        main = _bare_native_threads() if helpers.EMULATED else 1
        assert seen["native_threads"] == main + 1
    modules = set(seen["modules"])
    assert "pysampler.server" in modules
    # neither numpy, nor the profiler, nor the HTTP machinery until a request
    assert not modules & {"numpy", "pysampler._sampler", "pysampler.profile", "http.server"}


def _bare_native_threads() -> int:
    """Threads in /proc/self/task of an interpreter started with -S -I: no
    site, so no .pth file and none of our code runs."""
    out = subprocess.run(
        [sys.executable, "-S", "-I", "-c", "import os; print(len(os.listdir('/proc/self/task')))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout)


# -- an idle member of a process group ---------------------------------------------

#: prints, as JSON, what an idle process holds: threads, modules, descriptors
STATE = """
import json, os, sys, threading
def state():
    try:
        native = len(os.listdir("/proc/self/task"))
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        native = fds = None
    return {
        "python_threads": sorted(t.name for t in threading.enumerate()),
        "native_threads": native,
        "fds": fds,
        "modules": sorted(sys.modules),
    }
"""

#: a forked child reports its state through a pipe; the parent prints it
FORKED = """
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, json.dumps(state()).encode())
    os._exit(0)
os.close(w)
out = b""
while True:
    chunk = os.read(r, 1 << 16)
    if not chunk:
        break
    out += chunk
os.waitpid(pid, 0)
print(out.decode())
"""

#: a spawned child (the same interpreter, the inherited environment)
SPAWNED = """
import subprocess
print(subprocess.run(
    [sys.executable, "-c", %r + "print(json.dumps(state()))"],
    capture_output=True, text=True, check=True,
).stdout.strip().splitlines()[-1])
"""


def _child_state(how: str, group: bool) -> dict[str, object]:
    """The state of a child forked or spawned by a process that founded a
    group (``group``) or by one without pysampler's endpoint."""
    code = STATE + (FORKED if how == "forked" else SPAWNED % STATE)
    env = _env(PYSAMPLER_PORT="0") if group else _env()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert ("profiling endpoint on http://" in out.stderr) == group, out.stderr
    state: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return state


@pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(os, "fork"), reason="process groups need fork"
)
@pytest.mark.parametrize("how", ["forked", "spawned"])
def test_idle_group_member_is_one_thread_and_loads_no_profiler(how: str) -> None:
    member = _child_state(how, group=True)
    alone = _child_state(how, group=False)
    # one thread of its own, which waits on its control socket
    assert member["python_threads"] == sorted([*alone["python_threads"], "pysampler-group"])  # type: ignore[misc]
    if member["native_threads"] is not None:
        assert member["native_threads"] == alone["native_threads"] + 1  # type: ignore[operator]
        # its control socket and the leader lock's file
        assert member["fds"] <= alone["fds"] + 2, (member["fds"], alone["fds"])  # type: ignore[operator]
    modules = set(member["modules"])  # type: ignore[call-overload]
    assert "pysampler.group.member" in modules
    # neither numpy, nor the profiler, nor the HTTP server (only a leader has one)
    assert not modules & {
        "numpy",
        "pysampler._sampler",
        "pysampler.profile",
        "pysampler.server.routes",
        "http.server",
        "logging",
    }, sorted(modules & {"numpy", "pysampler._sampler", "pysampler.profile", "http.server"})


def test_heap_formats_are_the_ones_that_write_heap_profiles() -> None:
    # keeps HEAP_FORMATS above honest as formats are added
    import importlib

    writers = {
        name
        for name, fmt in formats.FORMATS.items()
        if hasattr(importlib.import_module(fmt.module), "write_heap")
    }
    assert writers == set(HEAP_FORMATS)
    assert set(formats.FORMATS) - {"heapprofile"} == set(CPU_FORMATS)
