"""Turn the native core's raw tables into a Profile.

Raw frames are (code object, line) per distinct instruction offset; here
they are merged into (qualified name, file, first line, line) and the stack
tree is re-interned over the merged frames, so two offsets on one line make
one frame in every format.
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
import types
from typing import TYPE_CHECKING, Any

import numpy as np

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
    names = _qualnames(
        [code for code, _ in raw["frames"] if code is not None and not isinstance(code, str)]
    )
    frame_ids: dict[Frame, int] = {}
    frame_map = np.empty(len(raw["frames"]), dtype=np.int32)
    for i, (code, line) in enumerate(raw["frames"]):
        if code is None:
            frame = Frame(TRUNCATED_FUNCTION, "", 0, 0)
        elif isinstance(code, str):
            frame = Frame(code, "", 0, 0)  # an asyncio task's root or leaf
        else:
            frame = Frame(names[code], code.co_filename, code.co_firstlineno, max(0, line))
        frame_map[i] = frame_ids.setdefault(frame, len(frame_ids))

    # re-intern the tree over merged frames; a parent always precedes its
    # children in the raw table, so one pass in id order suffices
    node_ids: dict[tuple[int, int], int] = {}
    raw_parent = raw["node_parent"].tolist()
    raw_frame = frame_map[raw["node_frame"]].tolist()
    node_map = np.empty(len(raw_parent), dtype=np.int32)
    for i, (p, f) in enumerate(zip(raw_parent, raw_frame)):
        key = (int(node_map[p]) if p >= 0 else -1, f)
        node_map[i] = node_ids.setdefault(key, len(node_ids))
    parents = np.array([k[0] for k in node_ids], dtype=np.int32)
    frames_of_node = np.array([k[1] for k in node_ids], dtype=np.int32)

    threads = [
        ThreadInfo(int(ident), int(native), name or f"Thread-{ident}")
        for ident, native, name in raw["threads"]
    ]
    stats = raw["stats"]
    duration = max(0.0, (raw["stop_ns"] - raw["start_ns"]) / 1e9)
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
        frames=list(frame_ids),
        stack_parent=parents,
        stack_frame=frames_of_node,
        stack=node_map[raw["stack"]] if len(raw["stack"]) else raw["stack"],
        thread=raw["thread"],
        time_ns=raw["time_ns"],
        cpu_ns=raw["cpu_ns"],
        wall_ns=raw["wall_ns"],
        threads=threads,
        metadata=meta,
    )


def _qualnames(codes: list[Any]) -> dict[Any, str]:
    """Qualified name per code object: ``co_qualname`` on 3.11+; before,
    the ``__qualname__`` of a function found to run the code (best effort:
    one pass over the objects the garbage collector tracks), else the plain
    name."""
    if sys.version_info >= (3, 11):
        return {c: c.co_qualname for c in codes}
    out = {c: c.co_name for c in codes}
    wanted = set(out)
    if wanted:
        deadline = time.perf_counter() + 1.0
        for i, obj in enumerate(gc.get_objects()):
            if type(obj) is types.FunctionType and obj.__code__ in wanted:
                out[obj.__code__] = obj.__qualname__
            if i % 65536 == 0 and time.perf_counter() > deadline:
                break  # a huge heap: keep plain names for the rest
    return out
