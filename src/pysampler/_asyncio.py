"""What the native sampler reads to record asyncio task stacks.

start(mode="wall", asyncio=True) hands the native core asyncio's own task
registry and the C Task's attribute descriptors, once; at each sampling
event the core walks them in C (src/_sampler/tasks.h explains why there
and not here). Nothing of asyncio is patched or wrapped. docs/asyncio.md
says what each Python version offers.
"""

from __future__ import annotations

import sys
from typing import Any

#: tasks recorded per sampling event at most; the rest of the registry is
#: visited by the next events in turn and counted as dropped task samples.
#: About 1.7 us per task three coroutines deep (benchmarks/asyncio_tasks.py):
#: 256 tasks hold the GIL ~0.45 ms per event, 4.5% of a core at 100 Hz.
DEFAULT_MAX_TASKS = 256


def supported() -> bool:
    """Whether this Python's task registry can be read (3.9 to 3.13).

    3.14 keeps native tasks in per-thread C lists that only the
    interpreter's own debugging offsets describe; see docs/asyncio.md.
    """
    return sys.version_info < (3, 14)


def registry_config(max_tasks: int = DEFAULT_MAX_TASKS) -> dict[str, Any]:
    """The objects the native task walk reads, for ``_sampler.start``.

    Args:
        max_tasks: tasks recorded per sampling event at most.

    Raises:
        ValueError: this Python's task registry is not supported, or
            ``max_tasks`` is out of range.
    """
    if not supported():
        raise ValueError(
            "asyncio=True needs Python 3.9 to 3.13: this version keeps tasks out of reach"
        )
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
        raise ValueError(f"max_tasks must be a positive integer, not {max_tasks!r}")
    import asyncio.tasks as tasks

    # 3.9-3.11: every task is in the WeakSet `_all_tasks`. 3.12-3.13 split
    # it: `_scheduled_tasks` (WeakSet) holds tasks that have yielded once,
    # `_eager_tasks` (set) those running their first step eagerly, which
    # are on a thread's stack by definition, so it is not read.
    name = "_scheduled_tasks" if hasattr(tasks, "_scheduled_tasks") else "_all_tasks"
    weak = getattr(tasks, name, None)
    registries = (weak.data,) if weak is not None and isinstance(weak.data, set) else ()
    config: dict[str, Any] = {
        "registries": registries,
        "current": getattr(tasks, "_current_tasks", None),
        "max_tasks": max_tasks,
    }
    try:
        import _asyncio
    except ImportError:  # pragma: no cover - CPython always builds it
        return config
    c_task = _asyncio.Task
    names = vars(c_task)
    if all(n in names for n in ("_coro", "_fut_waiter", "get_name")):
        config.update(
            c_task=c_task,
            d_coro=names["_coro"],
            d_fut_waiter=names["_fut_waiter"],
            m_get_name=names["get_name"],
        )
    return config
