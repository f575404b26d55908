"""Typed face of the native core (src/_sampler.pyx)."""

from array import array
from typing import Any, Literal, TypedDict, overload

# Columns are array.array: 'i' (int32) and 'q' (int64), one memcpy each
# out of the native tables; nothing here imports numpy.

MODES: dict[str, int]
TASKS_THREAD_NAME: str
OTHER_CPU_THREAD_NAME: str  #: the pseudo-thread of CPU outside sampled stacks
#: bytes of one sample row
SAMPLE_ROW_BYTES: int

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
    timer_moves: int  # reader path, Linux: times the timer left the GIL holder's CPU
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
    node_parent: array[int]
    node_frame: array[int]
    stack: array[int]
    thread: array[int]
    time_ns: array[int]
    cpu_ns: array[int]
    wall_ns: array[int]
    # samples each row stands for ('i'; 1 for a row recorded one sample at a time,
    # more where a thread's unchanged stack extended its row)
    count: array[int]
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
@overload
def stop(discard: Literal[False] = False) -> RawTables: ...
@overload
def stop(discard: Literal[True]) -> None: ...
def sample_count() -> int: ...
def after_fork_child() -> None: ...
def close() -> None: ...
def monotonic_ns() -> int: ...
def eval_breaker_set() -> bool: ...
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
    node_parent: array[int]
    node_frame: array[int]
    # one row per (stack node, block size): sampled allocations since start
    alloc_node: array[int]
    alloc_size: array[int]
    alloc_count: array[int]
    # one row per sampled block still in use
    live_node: array[int]
    live_size: array[int]
    live_ordinal: array[int]
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
