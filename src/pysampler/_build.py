"""Turn the native core's raw tables into a Profile.

Raw frames are (code object, line) per distinct instruction offset; here
they are merged into (qualified name, file, first line, line) and the stack
tree is re-interned over the merged frames, so two offsets on one line make
one frame in every format.

Everything here is plain Python over the frames and the tree; the loops over
every sample row are column kernels (pysampler._columns), so building a
profile imports no numpy.
"""

from __future__ import annotations

import array
import os
from typing import TYPE_CHECKING

from pysampler import _columns
from pysampler._qualnames import qualnames
from pysampler._task_groups import group_by_coroutine
from pysampler.profile import TRUNCATED_FUNCTION, Frame, Metadata, Profile, ThreadInfo

if TYPE_CHECKING:
    from pysampler._sampler import RawTables


def build_profile(raw: RawTables, hz: float, start_unix: float) -> Profile:
    """Build a Profile from ``_sampler.stop()``'s tables.

    Args:
        raw: the raw tables.
        hz: the requested sampling rate.
        start_unix: Unix time when the session started.
    """
    import platform  # here, not at import: an idle host does not pay for it

    names = qualnames(
        [code for code, _ in raw["frames"] if code is not None and not isinstance(code, str)]
    )
    frame_ids: dict[Frame, int] = {}
    frame_map = array.array("i")
    for code, line in raw["frames"]:
        if code is None:
            frame = Frame(TRUNCATED_FUNCTION, "", 0, 0)
        elif isinstance(code, str):
            frame = Frame(code, "", 0, 0)  # an asyncio task's root or leaf
        else:
            frame = Frame(names[code], code.co_filename, code.co_firstlineno, max(0, line))
        frame_map.append(frame_ids.setdefault(frame, len(frame_ids)))
    parents, frames_of_node, node_map = merge_tree(
        raw["node_parent"], _columns.take(frame_map, raw["node_frame"])
    )
    frames = list(frame_ids)
    stack = _columns.take(node_map, raw["stack"])
    grouped = group_by_coroutine(frames, parents, frames_of_node)
    if grouped is not None:  # asyncio tasks with default names: one root per coroutine
        frames, group_parents, group_frames, remap = grouped
        parents = array.array("i", group_parents)
        frames_of_node = array.array("i", group_frames)
        stack = _columns.take(array.array("i", remap), stack)

    threads = [
        ThreadInfo(int(ident), int(native), name or f"Thread-{ident}")
        for ident, native, name in raw["threads"]
    ]
    stats = raw["stats"]
    duration = max(0.0, (raw["stop_ns"] - raw["start_ns"]) / 1e9)
    count = raw.get("count")
    # served by a program thread (GIL path), the fallback thread (GIL path)
    # or the timer itself (reader path)
    events = int(stats["served_pending"] + stats["served_fallback"] + stats.get("served_reader", 0))
    meta = Metadata(
        mode=raw["mode"],
        hz_requested=float(hz),
        hz_delivered=events / duration if duration > 0 else 0.0,
        start_time=start_unix,
        duration=duration,
        pid=os.getpid(),
        python_version=platform.python_version(),
        dropped_samples=int(stats["dropped_samples"]),
        truncated_stacks=int(stats["truncated_stacks"]),
        sampling_events=events,
        ticks=int(stats["ticks"]),
        missed_ticks=int(stats["missed_ticks"]),
        served_in_place=int(stats["served_pending"]),
        served_by_timer=int(stats["served_fallback"] + stats.get("served_reader", 0)),
        sampling_ns=int(stats["sampling_ns"]),
        sampler_cpu_ns=int(stats.get("sampler_cpu_ns", 0)),
        asyncio=bool(raw.get("asyncio", False)),
        task_samples=int(stats.get("task_samples", 0)),
        dropped_task_samples=int(stats.get("dropped_task_samples", 0)),
    )
    return Profile(
        frames=frames,
        stack_parent=parents,
        stack_frame=frames_of_node,
        stack=stack,
        thread=raw["thread"],
        time_ns=raw["time_ns"],
        cpu_ns=raw["cpu_ns"],
        wall_ns=raw["wall_ns"],
        threads=threads,
        metadata=meta,
        count=count,
    )


def merge_tree(
    parent: array.array[int], frame: array.array[int]
) -> tuple[array.array[int], array.array[int], array.array[int]]:
    """Re-intern a stack tree whose node frames were merged: (parent,
    frame) of each new node and the new node of each old one. A parent
    always precedes its children, so one pass in id order suffices.

    Args:
        parent: parent node per old node (-1 for a root).
        frame: merged frame id per old node.
    """
    node_ids: dict[tuple[int, int], int] = {}
    node_map = array.array("i")
    for p, f in zip(parent, frame):
        node_map.append(node_ids.setdefault((node_map[p] if p >= 0 else -1, f), len(node_ids)))
    parents = array.array("i", [k[0] for k in node_ids])
    frames = array.array("i", [k[1] for k in node_ids])
    return parents, frames, node_map
