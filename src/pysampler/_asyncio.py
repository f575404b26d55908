"""What the native sampler reads to record asyncio task stacks.

start(mode="wall", asyncio=True) hands the native core asyncio's own task
registry and the C Task's attribute descriptors, once; at each sampling
event the core walks them in C (src/_sampler/tasks.h explains why there
and not here). Nothing of asyncio is patched or wrapped. docs/asyncio.md
says what each Python version offers.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: tasks recorded per sampling event at most; the rest of the registry is
#: visited by the next events in turn and counted as dropped task samples.
#: About 1.7 us per task three coroutines deep (benchmarks/asyncio_tasks.py):
#: 256 tasks hold the GIL ~0.45 ms per event, 4.5% of a core at 100 Hz.
DEFAULT_MAX_TASKS = 256


#: 3.14: the checked offset of a C task's list node (None: not usable);
#: probed once per process, the first time it is asked for
_node_offset: int | None = None
_node_probed = False


class _ProbeLoop:
    """Just enough of a loop for ``_asyncio.Task.__init__``: nothing runs."""

    def get_debug(self) -> bool:
        return False

    def call_soon(self, callback: object, *args: object, context: object = None) -> None:
        return None  # the probe's first step is never scheduled


async def _probe_coro() -> None:  # pragma: no cover - never started
    return None


def _task_node_offset() -> int | None:
    """3.14: where the native walk finds a task in its thread's list.

    Creates one named (so no ``Task-N`` number is used up) ``_asyncio.Task``
    on a stand-in loop, has the native core check that it is the tail of
    this thread's task list at the expected offset, and lets it go again
    without ever running it. Cached: layouts do not change in a process.
    """
    global _node_offset, _node_probed
    if _node_probed:
        return _node_offset
    _node_probed = True
    if sys.version_info < (3, 14):
        return None
    try:
        import _asyncio
    except ImportError:  # pragma: no cover - CPython always builds it
        return None
    from pysampler import _sampler

    coro = _probe_coro()
    try:
        task = _asyncio.Task(coro, loop=_ProbeLoop(), name="pysampler-probe")
    except Exception:  # pragma: no cover - an _asyncio we do not know
        coro.close()
        return None
    try:
        _node_offset = _sampler.asyncio_task_node_offset(task)
    finally:
        # unregistered by its dealloc, which then has nothing to report
        task._log_destroy_pending = False
        coro.close()
        del task
    return _node_offset


def supported() -> bool:
    """Whether this Python's task registry can be read.

    3.9 to 3.13: asyncio's WeakSet of tasks. 3.14: the per-thread task lists,
    when a probe task confirms their layout; see docs/asyncio.md.
    """
    if sys.version_info < (3, 14):
        return True
    return _task_node_offset() is not None


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
            "asyncio=True needs Python 3.9 to 3.14 (GIL build): this version keeps"
            " tasks out of reach"
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
        # 3.14: C tasks are in per-thread lists, not in `_scheduled_tasks`
        # (which still holds pure-Python tasks)
        config["node_off"] = _task_node_offset()
    elif sys.version_info >= (3, 14):  # pragma: no cover - not the C Task we know
        raise ValueError("asyncio=True: this Python's _asyncio.Task is not the one expected")
    return config
