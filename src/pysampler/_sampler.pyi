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
    dropped_samples: int
    truncated_stacks: int
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
    # (ident, native id, name or None) per thread index
    threads: list[tuple[int, int, str | None]]
    start_ns: int
    stop_ns: int
    max_depth: int
    stats: Stats
    asyncio: bool

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
def after_fork_child() -> None: ...
def monotonic_ns() -> int: ...
