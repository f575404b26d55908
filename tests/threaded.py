"""Threaded programs with an independently measured truth, for CPU attribution.

Each case runs real threads (a Flask/werkzeug threaded server, a waitress
server, a queue worker pool, short-lived threads, threads that compute then
block) while pysampler profiles in CPU mode, and measures the truth itself:
every CPU-heavy function adds the ``time.thread_time()`` it used to a
shared tally, and the process CPU clock gives the window's total. Load for
the servers comes from a separate process, so its CPU is not in the window.

``run_case(name, hz)`` returns an :class:`Outcome` (profile vs truth);
tests assert on it, ``benchmarks/attribution.py`` prints it as a table.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pysampler
from workloads import spin_cpu as burn

#: what a leaf line calls when the thread blocks there (or spends its CPU in
#: a blocking call): CPU mode must leave such lines (almost) nothing
BLOCKING_CALLS = (
    "select(",
    ".poll(",
    ".wait(",
    "sleep(",
    ".acquire(",
    ".accept(",
    ".recv",
    ".readinto(",
    ".write(",
    ".send",
    ".join(",
    ".get(",
)


def blocking_line(filename: str, line: int) -> bool:
    """Does this source line make a blocking call?"""
    import linecache

    text = linecache.getline(filename, line)
    return any(call in text for call in BLOCKING_CALLS)


class Tally:
    """CPU seconds (thread_time) used in each measured function."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.cpu[name] = self.cpu.get(name, 0.0) + seconds
            self.calls[name] = self.calls.get(name, 0) + 1


TALLY = Tally()


def _measured(name: str, seconds: float, *, thread_target: bool = False) -> None:
    t0 = time.thread_time()
    if thread_target:
        # the CPU its thread used before it got here (thread_time counts from
        # the thread's start): start-up that the thread's first sample, taken
        # in here, carries too (nothing else of that thread was seen)
        TALLY.add(f"{name} start-up", t0)
    burn(seconds)
    TALLY.add(name, time.thread_time() - t0)


def heavy_handler() -> None:
    _measured("heavy_handler", 0.008)


def light_handler() -> None:
    _measured("light_handler", 0.001)


def sleeping_handler() -> None:
    time.sleep(0.01)


def queue_job() -> None:
    _measured("queue_job", 0.002)


def short_job() -> None:
    _measured("short_job", 0.004, thread_target=True)


def burst() -> None:
    _measured("burst", 0.003)


# --- the servers -----------------------------------------------------------


def _wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/heavy":
        heavy_handler()
    elif path == "/light":
        light_handler()
    elif path == "/sleep":
        sleeping_handler()
    body = b"ok\n" * 64
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _quiet(*loggers: str) -> None:
    """Keep the servers' request logs and queue warnings out of the output."""
    import logging

    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)


def _flask_app() -> Any:
    import flask

    _quiet("werkzeug")
    app = flask.Flask("threaded")
    for route in ("/heavy", "/light", "/sleep"):
        app.add_url_rule(route, route, lambda: _wsgi_body(flask.request.path))
    return app


def _wsgi_body(path: str) -> bytes:
    if path == "/heavy":
        heavy_handler()
    elif path == "/light":
        light_handler()
    else:
        sleeping_handler()
    return b"ok\n" * 64


LOAD_CLIENT = r"""
import sys, threading, time, urllib.request
port, seconds, clients = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
paths = ["/heavy", "/light", "/light", "/sleep"]
end = time.monotonic() + seconds
def client(i):
    k = i
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{paths[k % 4]}", timeout=10).read()
        except OSError:
            time.sleep(0.01)
        k += 1
ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
for t in ts: t.start()
for t in ts: t.join()
"""


def _drive(port: int, seconds: float, clients: int = 4) -> None:
    """Load from another process; the main thread waits for it (blocked)."""
    subprocess.run(
        [sys.executable, "-c", LOAD_CLIENT, str(port), str(seconds), str(clients)],
        check=True,
        timeout=seconds + 60,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")},
    )


def flask_server(seconds: float) -> Callable[[], None]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, _flask_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="flask-server")
    thread.start()

    def run() -> None:
        try:
            _drive(server.server_port, seconds)
        finally:
            server.shutdown()
            thread.join()

    return run


def waitress_server(seconds: float) -> Callable[[], None]:
    import waitress

    _quiet("waitress", "waitress.queue")
    _time_waitress_select()
    server = waitress.create_server(_wsgi_app, host="127.0.0.1", port=0, threads=4)
    port = server.effective_port  # type: ignore[union-attr]
    thread = threading.Thread(target=server.run, name="waitress-server")
    thread.start()

    def run() -> None:
        try:
            _drive(port, seconds)
        finally:
            server.close()
            thread.join()
            # its 4 worker threads outlive close(): left idle, they showed
            # up in the thread list of every later profile of the process
            server.task_dispatcher.shutdown()  # type: ignore[union-attr]

    return run


class _TimedSelect:
    """waitress's loop really spends CPU in select.select (measured ~5% of
    the process's CPU: thousands of calls a second): tally it as the truth
    of what the blocking-call share may hold."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def select(self, *args: Any) -> Any:
        t0 = time.thread_time()
        try:
            return self._module.select(*args)
        finally:
            TALLY.add("blocking calls", time.thread_time() - t0)


def _time_waitress_select() -> None:
    from waitress import wasyncore

    if not isinstance(wasyncore.select, _TimedSelect):
        wasyncore.select = _TimedSelect(wasyncore.select)  # type: ignore[assignment]


# --- plain thread shapes -----------------------------------------------------


def queue_pool(seconds: float) -> Callable[[], None]:
    jobs: queue.Queue[int | None] = queue.Queue()

    def worker() -> None:
        while jobs.get() is not None:
            queue_job()

    workers = [threading.Thread(target=worker, name=f"worker-{i}") for i in range(4)]
    for w in workers:
        w.start()

    def run() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(8):
                jobs.put(1)
            time.sleep(0.01)  # ~800 jobs/s of 2 ms: the pool is ~80% busy
        for _ in workers:
            jobs.put(None)
        for w in workers:
            w.join()

    return run


def short_threads(seconds: float) -> Callable[[], None]:
    count = max(20, int(seconds * 150))

    def run() -> None:
        for i in range(count):
            t = threading.Thread(target=short_job, name=f"short-{i}")
            t.start()
            t.join()

    return run


def compute_then_block(seconds: float) -> Callable[[], None]:
    import selectors
    import socket

    ev = threading.Event()
    stop = threading.Event()
    a, b = socket.socketpair()
    cond = threading.Condition()

    def sleeper() -> None:
        while not stop.is_set():
            burst()
            time.sleep(0.004)

    def event_waiter() -> None:
        while not stop.is_set():
            burst()
            ev.wait(0.004)

    def selecting() -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ)
        while not stop.is_set():
            burst()
            sel.select(0.004)
        sel.close()

    def waiting() -> None:
        while not stop.is_set():
            burst()
            with cond:
                cond.wait(0.004)

    threads = [
        threading.Thread(target=f, name=f.__name__)
        for f in (sleeper, event_waiter, selecting, waiting)
    ]

    def run() -> None:
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        a.close()
        b.close()

    return run


CASES: dict[str, tuple[Callable[[float], Callable[[], None]], tuple[str, ...]]] = {
    # case: (builder, CPU-heavy functions whose share is checked)
    "flask": (flask_server, ("heavy_handler", "light_handler")),
    "waitress": (waitress_server, ("heavy_handler", "light_handler")),
    "queue_pool": (queue_pool, ("queue_job",)),
    "short_threads": (short_threads, ("short_job",)),
    "compute_then_block": (compute_then_block, ("burst",)),
}


@dataclass
class Outcome:
    case: str
    hz: int
    real_cpu: float  #: CPU seconds the program used in the window
    profile_cpu: float  #: CPU seconds in the profile
    shares: dict[str, tuple[float, float]] = field(default_factory=dict)  #: fn: (profile, truth)
    #: fn: share of the CPU its threads used before they called it (a
    #: thread's target: the start-up its first sample may carry)
    startup: dict[str, float] = field(default_factory=dict)
    blocking: float = 0.0  #: share of the profile with a blocking call as the leaf line
    blocking_truth: float = 0.0  #: measured CPU inside blocking calls (where tallied), share
    threads_seen: int = 0
    events: int = 0
    ticks: int = 0
    #: share of the window in which some task on the machine waited for a
    #: CPU (Linux PSI, /proc/pressure/cpu), -1: unknown. On an oversubscribed
    #: machine the OS preempts threads while they hold the GIL, which the
    #: model's wall-time weights do not see: shown beside a failing share.
    cpu_pressure: float = -1.0

    @property
    def total_ratio(self) -> float:
        return self.profile_cpu / self.real_cpu if self.real_cpu else 0.0

    def row(self) -> str:
        shares = ", ".join(f"{k} {p:.2f}/{t:.2f}" for k, (p, t) in self.shares.items())
        return (
            f"{self.case:<19} {self.hz:>5} {self.real_cpu:8.3f} {self.profile_cpu:8.3f} "
            f"{self.total_ratio:6.2f}  {self.blocking:5.3f}/{self.blocking_truth:5.3f}  {shares}"
            + (f"  (CPU pressure {self.cpu_pressure:.2f})" if self.cpu_pressure >= 0 else "")
        )


def cpu_stall_us() -> int | None:
    """Microseconds in which some task waited for a CPU (Linux PSI)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def _inclusive_cpu(profile: pysampler.Profile, names: tuple[str, ...]) -> dict[str, float]:
    """CPU seconds of samples with each named function anywhere on the stack."""
    out = dict.fromkeys(names, 0.0)
    has: dict[int, set[str]] = {}
    values = profile.cpu_ns
    for i, node in enumerate(profile.stack.tolist()):
        if node not in has:
            has[node] = {profile.frames[f].function for f in profile.stack_of(node)}
        for n in names:
            if n in has[node]:
                out[n] += float(values[i]) / 1e9
    return out


def _blocking_share(profile: pysampler.Profile) -> float:
    total = float(profile.cpu_ns.sum())
    if total == 0:
        return 0.0
    hit = 0.0
    leaf_blocks: dict[int, bool] = {}
    for i, node in enumerate(profile.stack.tolist()):
        if node not in leaf_blocks:
            leaf = profile.frames[profile.stack_of(node)[-1]]
            leaf_blocks[node] = blocking_line(leaf.filename, leaf.line)
        if leaf_blocks[node]:
            hit += float(profile.cpu_ns[i])
    return hit / total


def run_case(name: str, hz: int, seconds: float = 2.0) -> Outcome:
    """Profile one case in CPU mode and compare with its measured truth."""
    build, hot = CASES[name]
    run = build(seconds)
    TALLY.cpu.clear()
    TALLY.calls.clear()
    stall0, wall0 = cpu_stall_us(), time.monotonic()
    cpu0 = time.process_time()
    pysampler.start(hz=hz, mode="cpu")
    try:
        run()
    finally:
        prof = pysampler.stop()
    stall1, wall = cpu_stall_us(), time.monotonic() - wall0
    # the program's CPU: the process's, less the sampler's own threads
    real = time.process_time() - cpu0 - getattr(prof.metadata, "sampler_cpu_ns", 0) / 1e9
    profile_cpu = float(prof.cpu_ns.sum()) / 1e9
    inclusive = _inclusive_cpu(prof, hot)
    truth = dict(TALLY.cpu)
    out = Outcome(
        case=name,
        hz=hz,
        real_cpu=real,
        profile_cpu=profile_cpu,
        blocking=_blocking_share(prof),
        threads_seen=len(prof.threads),
        events=prof.metadata.sampling_events,
        ticks=prof.metadata.ticks,
    )
    out.blocking_truth = truth.get("blocking calls", 0.0) / real if real else 0.0
    if stall0 is not None and stall1 is not None and wall > 0:
        out.cpu_pressure = (stall1 - stall0) / 1e6 / wall
    for h in hot:
        out.shares[h] = (
            inclusive[h] / profile_cpu if profile_cpu else 0.0,
            truth.get(h, 0.0) / real if real else 0.0,
        )
        if f"{h} start-up" in truth and real:
            out.startup[h] = truth[f"{h} start-up"] / real
    return out
