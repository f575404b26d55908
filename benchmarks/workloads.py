"""The workloads the overhead suite times, each as ``body(loops) -> None``.

Most bodies come from the installed ``pyperformance`` package: its benchmark
script is executed as ``__main__`` against a stand-in for ``pyperf.Runner``
that records the function it would have benchmarked (and that function's
arguments, built by the script from its own defaults) instead of running it.
No benchmark code is copied here; the suite times exactly what pyperformance
times. Three workloads are our own: busy threads, an asyncio server under
loopback load, and deep recursion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import runpy
import sys
import threading
from typing import Any, Callable

Body = Callable[[int], None]

#: pyperformance benchmarks, by family: many calls, arithmetic (float also
#: allocates heavily), C-heavy, object graphs (deepcopy), generators/coroutines
PYPERFORMANCE = (
    "richards",
    "deltablue",
    "go",
    "hexiom",
    "chaos",
    "raytrace",
    "nbody",
    "float",
    "deepcopy",
    "spectral_norm",
    "json_dumps",
    "regex_v8",
    "generators",
    "coroutines",
)
OWN = ("threads8", "asyncio_server", "deep_recursion")
#: pyperformance bodies run in 4 worker threads while the main thread waits
#: in ``join``: the shape of a threaded service (``<name>_x4``)
THREADED = ("raytrace_x4", "float_x4", "json_dumps_x4", "go_x4", "chaos_x4")
ALL = PYPERFORMANCE + OWN + THREADED
#: the subset ``--quick`` runs: short-loop members of three families plus our threads
QUICK = ("richards", "nbody", "json_dumps", "threads8")


def pyperformance_dir() -> str:
    """Folder holding the installed pyperformance benchmark scripts."""
    import pyperformance

    return os.path.join(os.path.dirname(pyperformance.__file__), "data-files", "benchmarks")


class _Captured(Exception):
    """Raised by the stand-in runner to stop the script once it has named its body."""


class _CapturingRunner:
    """Stands in for ``pyperf.Runner``: records what the script would time."""

    captured: tuple[str, Callable[..., Any], tuple[Any, ...]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.metadata: dict[str, Any] = {}
        self.argparser = argparse.ArgumentParser()
        self.args: argparse.Namespace | None = None

    def parse_args(self, args: Any = None) -> argparse.Namespace:
        # the script's own defaults, never this process's command line
        self.args = self.argparser.parse_args([])
        return self.args

    def _capture(self, kind: str, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        _CapturingRunner.captured = (kind, func, args)
        raise _Captured

    def bench_func(self, name: str, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self._capture("func", func, args)

    def bench_time_func(self, name: str, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self._capture("time_func", func, args)

    def bench_async_func(self, name: str, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self._capture("async_func", func, args)


def load_pyperformance(name: str) -> Body:
    """Build the body of pyperformance's ``bm_<name>`` from the installed package."""
    import pyperf

    path = os.path.join(pyperformance_dir(), f"bm_{name}", "run_benchmark.py")
    if not os.path.exists(path):
        raise FileNotFoundError(f"pyperformance has no benchmark {name!r} ({path})")
    real_runner = pyperf.Runner
    saved_argv = sys.argv[:]
    _CapturingRunner.captured = None
    pyperf.Runner = _CapturingRunner  # type: ignore[misc,assignment]
    sys.argv = [path]
    try:
        runpy.run_path(path, run_name="__main__")
    except _Captured:
        pass
    finally:
        pyperf.Runner = real_runner  # type: ignore[misc]
        sys.argv = saved_argv
    if _CapturingRunner.captured is None:
        raise RuntimeError(f"bm_{name} did not call a pyperf.Runner bench method")
    kind, func, args = _CapturingRunner.captured

    if kind == "time_func":

        def body(loops: int) -> None:
            func(loops, *args)

    elif kind == "async_func":

        def body(loops: int) -> None:
            for _ in range(loops):
                asyncio.run(func(*args))

    else:

        def body(loops: int) -> None:
            for _ in range(loops):
                func(*args)

    return body


# --- our own workloads ---------------------------------------------------------


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def threads8(loops: int) -> None:
    """Eight threads each spin a fixed amount of pure-Python work per loop;
    the main thread waits in ``join`` (so no thread holds the GIL for long)."""
    for _ in range(loops):
        workers = [threading.Thread(target=_spin, args=(40_000,)) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        # a little work per request so the server is not all syscalls
        words = line.split()
        writer.write(b" ".join(sorted(words, reverse=True)) + b"\n")
        await writer.drain()
    writer.close()


async def _client(port: int, requests: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = b" ".join(b"w%d" % i for i in range(32)) + b"\n"
    for _ in range(requests):
        writer.write(payload)
        await writer.drain()
        await reader.readline()
    writer.close()
    await writer.wait_closed()


async def _asyncio_round(loops: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for _ in range(loops):
            await asyncio.gather(*(_client(port, 40) for _ in range(16)))


def asyncio_server(loops: int) -> None:
    """An asyncio echo-and-sort server on 127.0.0.1 (ephemeral port) with 16
    clients in the same event loop doing 40 request/response round trips each
    per loop; bounded, and it closes everything it opens."""
    asyncio.run(_asyncio_round(loops))


def _descend(depth: int, work: int) -> int:
    if depth > 0:
        return _descend(depth - 1, work) + 1
    return _spin(work)


def deep_recursion(loops: int) -> None:
    """Recurse 300 frames deep, then do pure-Python work at the bottom, so
    every sample walks a 300-frame stack."""
    for _ in range(loops):
        for _ in range(20):
            _descend(300, 2_000)


_OWN: dict[str, Body] = {
    "threads8": threads8,
    "asyncio_server": asyncio_server,
    "deep_recursion": deep_recursion,
}


def in_four_threads(body: Body) -> Body:
    """``body`` run by 4 worker threads at once, the main thread in ``join``;
    each worker runs a quarter of the loops (at least one)."""

    def run(loops: int) -> None:
        share = max(1, loops // 4)
        workers = [threading.Thread(target=body, args=(share,)) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return run


def load(name: str) -> Body:
    """The body of workload ``name`` (see :data:`ALL`)."""
    if name in THREADED:
        return in_four_threads(load_pyperformance(name.removesuffix("_x4")))
    if name in _OWN:
        return _OWN[name]
    if name in PYPERFORMANCE:
        return load_pyperformance(name)
    raise KeyError(f"unknown workload {name!r}; known: {', '.join(ALL)}")
