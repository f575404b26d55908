"""Heap-memory profiling: sampled allocations by Python stack.

>>> import pysampler.heap
>>> pysampler.heap.start(sample_bytes=512 * 1024)   # mean bytes between samples
>>> snap = pysampler.heap.snapshot()    # memory in use now, by allocating stack
>>> snap.save("heap.pprof")             # or "heap.heapprofile" for Chrome DevTools
>>> allocs = pysampler.heap.stop()      # everything allocated since start

While a session runs, the Python allocators (the MEM and OBJ domains, which
every Python object and container goes through) are wrapped; one allocation
is sampled every ``sample_bytes`` bytes on average, with its Python stack,
and frees of sampled blocks are matched. Estimates are unbiased: a sample of
a block of ``n`` bytes stands for ``1 / (1 - exp(-n / sample_bytes))``
blocks. Nothing is wrapped while no session runs. Memory allocated before
``start()`` is not seen, and neither are buffers C extensions take from
``malloc`` directly (numpy array data, for one).

One heap session per process; it is independent of the CPU sampler
(:func:`pysampler.start`), and both may run at once.

>>> pysampler.heap.snapshot_graph("app.heapsnapshot")   # what holds what, now

writes the whole object graph for Chrome DevTools' Memory panel instead
(pysampler.heapsnapshot; the program is paused while it is read).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pysampler import _sampler
from pysampler._heap_build import build_heap_profile
from pysampler._session_state import RUNNING, SessionState
from pysampler.errors import ProfilerAlreadyRunning
from pysampler.heap_profile import HeapProfile

if TYPE_CHECKING:
    from pysampler.heapsnapshot import GraphSnapshot

DEFAULT_SAMPLE_BYTES = 512 * 1024
DEFAULT_MAX_DEPTH = 512
#: table bounds; a sample that does not fit is dropped and counted
MAX_FRAMES = 1_000_000
MAX_NODES = 4_000_000
#: distinct (stack, block size) pairs kept for "allocated since start"
MAX_ALLOC_RECORDS = 4_000_000
#: sampled blocks in use tracked at once (32 bytes each, 64 MiB at most)
MAX_LIVE = 1_000_000


def _new_state() -> SessionState:
    return SessionState("heap profiling", "heap profiling", "heap profiling is not running")


# One heap session per process; calls may re-enter from a signal handler
# (see _session_state)
_state = _new_state()
_start_unix: float | None = None

__all__ = [
    "DEFAULT_SAMPLE_BYTES",
    "HeapProfile",
    "cancel",
    "is_running",
    "snapshot",
    "snapshot_graph",
    "start",
    "stop",
]


def start(sample_bytes: int = DEFAULT_SAMPLE_BYTES, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Start sampling allocations made by Python code in this process.

    Args:
        sample_bytes: mean bytes allocated between two samples (default
            512 KiB, Go's default). Smaller is more precise and costs more.
        max_depth: frames kept per stack (innermost first); deeper stacks
            get a visible ``[truncated ...]`` root frame.

    Raises:
        ProfilerAlreadyRunning: heap profiling is already running.
        ValueError: ``sample_bytes`` or ``max_depth`` is out of range.
    """
    global _start_unix
    if (
        isinstance(sample_bytes, bool)
        or not isinstance(sample_bytes, (int, float))
        or not math.isfinite(sample_bytes)
        or not 1 <= sample_bytes <= 2**40
    ):
        raise ValueError(f"sample_bytes must be a number from 1 to 2**40, not {sample_bytes!r}")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or not 1 <= max_depth <= 65536:
        raise ValueError(f"max_depth must be an integer from 1 to 65536, not {max_depth!r}")
    with _state.starting():
        start_unix = time.time()
        try:
            _sampler.heap_start(
                float(sample_bytes),
                max_depth,
                MAX_FRAMES,
                MAX_NODES,
                MAX_ALLOC_RECORDS,
                MAX_LIVE,
            )
        except _sampler.AlreadyRunning:
            raise ProfilerAlreadyRunning(_state.busy[RUNNING]) from None
        _start_unix = start_unix


def snapshot() -> HeapProfile:
    """Memory in use now (allocated since start and not yet freed), by the
    stack that allocated it; allocation totals since start come along.
    The session keeps running.

    Returns:
        A HeapProfile whose default view is ``"inuse"``.

    Raises:
        ProfilerNotRunning: heap profiling is not running.
    """
    with _state.while_running():
        start_unix = _start_unix
        assert start_unix is not None
        raw = _sampler.heap_snapshot()
    return build_heap_profile(raw, start_unix, "inuse")


def stop() -> HeapProfile:
    """Stop heap profiling, restore the allocators and return the profile.

    Returns:
        A HeapProfile whose default view is ``"alloc"`` (everything
        allocated since start); ``.with_view("inuse")`` gives what was still
        in use at the stop.

    Raises:
        ProfilerNotRunning: heap profiling is not running.
    """
    return stop_recording()()


def stop_recording() -> Callable[[], HeapProfile]:
    """Stop heap profiling and copy its tables; return the function that
    builds the profile (the slow part, for callers to run outside a lock
    of their own).

    Raises:
        ProfilerNotRunning: heap profiling is not running.
    """
    global _start_unix
    with _state.stopping():
        start_unix, _start_unix = _start_unix, None
        assert start_unix is not None
        raw = _sampler.heap_stop()
    return functools.partial(build_heap_profile, raw, start_unix, "alloc")


def cancel() -> bool:
    """Stop heap profiling, if it runs, and discard what it recorded.

    Returns:
        Whether a session was running (False also while one is still
        starting or already stopping).
    """
    return _state.cancel(_discard)


def _discard() -> None:
    global _start_unix
    _start_unix = None
    _sampler.heap_stop()


def is_running() -> bool:
    """True while heap profiling is running."""
    return _state.running


def snapshot_graph(path: str | os.PathLike[str], *, collect: bool = False) -> GraphSnapshot:
    """Write a heap snapshot of the whole object graph to ``path``, for
    Chrome DevTools' Memory panel (Memory > Load profile).

    Unlike :func:`snapshot` (sampled allocations, by stack), this is every
    object the garbage collector tracks and what they refer to, with
    sizes; DevTools shows what retains what. The program is paused while
    the graph is read. See docs/heap.md, "Heap snapshots".

    Args:
        path: the file to write (``.heapsnapshot``).
        collect: run ``gc.collect()`` first, so that garbage awaiting
            collection is not in the graph.

    Returns:
        Counts, the pause and the file's size
        (:class:`pysampler.heapsnapshot.GraphSnapshot`).

    Raises:
        SnapshotInProgress: another snapshot is being taken.
        RuntimeError: on free-threaded CPython, which has no GIL to pause with.
    """
    # Imported on use: programs that never take one do not load the walker.
    from pysampler.heapsnapshot import snapshot_graph as _snapshot_graph

    return _snapshot_graph(path, collect=collect)


#: the child this module was last reset in (see _after_fork_in_child)
_reset_in = 0


def _after_fork_in_child() -> None:
    # The child starts with no profiler: unhook before it allocates much.
    # Once per child, as pysampler._control's.
    global _start_unix, _state, _reset_in
    if _reset_in == os.getpid():
        return
    _reset_in = os.getpid()
    _state = _new_state()
    _start_unix = None
    _sampler.heap_after_fork_child()


def _stop_at_exit() -> None:
    # Give the interpreter its own allocators back before it finalises.
    with contextlib.suppress(Exception):
        cancel()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_at_exit)
