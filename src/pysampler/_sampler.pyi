"""Typed face of the native core (src/_sampler.pyx)."""

from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

MODES: dict[str, int]
TASKS_THREAD_NAME: str

class AlreadyRunning(RuntimeError): ...
class NotRunning(RuntimeError): ...

class Stats(TypedDict):
    ticks: int
    missed_ticks: int
    served_pending: int
    served_fallback: int
    served_reader: int  # reader path: events recorded by the timer thread itself
    busy_ticks: int  # reader path: ticks dropped because the head lock was busy
    holder_left: int  # reader path: the GIL holder let go while its stack was read
    pins: int  # reader path: pinning steps (code objects, thread names) run
    safe_reads: int  # reader path: safe memory copies made (system calls)
    dropped_samples: int
    truncated_stacks: int
    sampling_ns: int
    sampler_cpu_ns: int  # CPU of the timer and fallback threads
    task_samples: int
    dropped_task_samples: int

class RawTables(TypedDict):
    mode: str
    # (code object, line) per raw frame; (None, 0) is the truncation marker;
    # (label, 0) for an asyncio task's synthetic frames ("Task: name",
    # "(awaiting Future)", "(ready to run)")
    frames: list[tuple[Any, int]]
    node_parent: npt.NDArray[np.int32]
    node_frame: npt.NDArray[np.int32]
    stack: npt.NDArray[np.int32]
    thread: npt.NDArray[np.int32]
    time_ns: npt.NDArray[np.int64]
    cpu_ns: npt.NDArray[np.int64]
    wall_ns: npt.NDArray[np.int64]
    count: npt.NDArray[np.int32]  # samples each row stands for
    # (ident, native id, name or None) per thread index
    threads: list[tuple[int, int, str | None]]
    start_ns: int
    stop_ns: int
    max_depth: int
    stats: Stats
    asyncio: bool
    reader: bool  # the timer read the stacks without the GIL (3.11+)

def start(
    hz: float,
    mode: str,
    max_depth: int,
    max_samples: int,
    max_frames: int,
    max_nodes: int,
    thread_registry: dict[int, Any] | None,
    asyncio_config: dict[str, Any] | None = None,
) -> None: ...
def is_running() -> bool: ...
def stop() -> RawTables: ...
def sample_count() -> int: ...
def after_fork_child() -> None: ...
def close() -> None: ...
def monotonic_ns() -> int: ...
def asyncio_task_node_offset(probe: object) -> int | None: ...

# -- heap profiling (src/_sampler/heap.h) -------------------------------

class HeapStats(TypedDict):
    sampled: int  # allocations sampled since start
    dropped_samples: int  # samples a full table could not (fully) keep
    truncated_stacks: int  # samples deeper than max_depth
    frees_matched: int  # frees of sampled blocks seen

class HeapTables(TypedDict):
    # (code object, line) per raw frame; (None, 0) marks a truncated stack,
    # (None, -1) an allocation made with no Python frame on the stack
    frames: list[tuple[Any, int]]
    node_parent: npt.NDArray[np.int32]
    node_frame: npt.NDArray[np.int32]
    # one row per (stack node, block size): sampled allocations since start
    alloc_node: npt.NDArray[np.int32]
    alloc_size: npt.NDArray[np.int64]
    alloc_count: npt.NDArray[np.int64]
    # one row per sampled block still in use
    live_node: npt.NDArray[np.int32]
    live_size: npt.NDArray[np.int64]
    live_ordinal: npt.NDArray[np.int64]
    sample_bytes: float
    max_depth: int
    start_ns: int
    now_ns: int
    stats: HeapStats

def heap_start(
    sample_bytes: float,
    max_depth: int,
    max_frames: int,
    max_nodes: int,
    max_allocs: int,
    max_live: int,
) -> None: ...
def heap_is_running() -> bool: ...
def heap_hooked() -> bool: ...
def heap_snapshot() -> HeapTables: ...
def heap_stop() -> HeapTables: ...
def heap_after_fork_child() -> None: ...
