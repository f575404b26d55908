"""One profile of several processes: the profiles of a process group,
taken over the same window, merged into one.

The merged profile keeps every row of every process. Frames are shared
(one table, deduplicated); stack trees are laid side by side (node ids
shifted, never shared, since no stack crosses a process); threads and
heap rows say which process they belong to (``ThreadInfo.pid``,
``HeapProfile.pid``), and ``processes`` lists each one. Writers show each
process as its own root (``.cpuprofile``, the HTML flame graph) or label
each sample with its ``pid`` (pprof).

Nothing here imports numpy: this runs in the profiled process that serves
a group's endpoint, and columns are read through the buffer protocol
(:func:`_ints`), whatever type holds them.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from pysampler.heap_profile import HeapMetadata, HeapProfile
from pysampler.profile import Frame, Metadata, ProcessInfo, Profile, ThreadInfo

#: the sample columns of a Profile, concatenated as they are
_PLAIN_COLUMNS = ("time_ns", "cpu_ns", "wall_ns")


def _ints(column: Any) -> list[int]:
    """A column's values as Python ints, through the buffer protocol."""
    return memoryview(column).tolist()


def _merge_trees(
    parts: Iterable[tuple[tuple[Frame, ...], Any, Any]],
) -> tuple[list[Frame], array[int], array[int], list[int]]:
    """Frames (deduplicated), stack_parent and stack_frame of several stack
    trees laid side by side; and each tree's node id offset."""
    frame_ids: dict[Frame, int] = {}
    parents: array[int] = array("i")
    frames_of_node: array[int] = array("i")
    offsets = []
    for frames, stack_parent, stack_frame in parts:
        fmap = [frame_ids.setdefault(f, len(frame_ids)) for f in frames]
        offset = len(parents)
        offsets.append(offset)
        parents.extend(p + offset if p >= 0 else -1 for p in _ints(stack_parent))
        frames_of_node.extend(fmap[f] for f in _ints(stack_frame))
    return list(frame_ids), parents, frames_of_node, offsets


def merge_profiles(
    members: Sequence[tuple[ProcessInfo, Profile]], notes: Sequence[str] = ()
) -> Profile:
    """One Profile of several processes' profiles of the same window.

    Args:
        members: each process and its profile, in the order to list them.
        notes: facts about completeness (a process lost mid-profile, ...),
            kept in the metadata after the members' own notes.

    Raises:
        ValueError: no profiles, profiles of different modes, or a pid twice.
    """
    if not members:
        raise ValueError("nothing to merge")
    pids = [info.pid for info, _ in members]
    if len(set(pids)) != len(pids):
        raise ValueError("a process appears twice")
    modes = {p.metadata.mode for _, p in members}
    if len(modes) != 1:
        raise ValueError(f"cannot merge profiles of different modes: {sorted(modes)}")
    frames, parents, frames_of_node, offsets = _merge_trees(
        (p.frames, p.stack_parent, p.stack_frame) for _, p in members
    )
    stack: array[int] = array("i")
    thread: array[int] = array("i")
    plain: dict[str, array[int]] = {name: array("q") for name in _PLAIN_COLUMNS}
    threads: list[ThreadInfo] = []
    for (info, profile), offset in zip(members, offsets):
        first_thread = len(threads)
        threads.extend(t._replace(pid=info.pid) for t in profile.threads)
        stack.extend(s + offset for s in _ints(profile.stack))
        thread.extend(t + first_thread for t in _ints(profile.thread))
        for name, column in plain.items():
            column.extend(_ints(getattr(profile, name)))
    metas = [p.metadata for _, p in members]
    meta = Metadata(
        mode=metas[0].mode,
        hz_requested=metas[0].hz_requested,
        hz_delivered=sum(m.hz_delivered for m in metas) / len(metas),
        start_time=min(m.start_time for m in metas),
        duration=max(m.duration for m in metas),
        pid=0,
        python_version=_joined(m.python_version for m in metas),
        asyncio=any(m.asyncio for m in metas),
        notes=(*(n for m in metas for n in m.notes), *notes),
        **{
            name: sum(getattr(m, name) for m in metas)
            for name in (
                "dropped_samples",
                "truncated_stacks",
                "sampling_events",
                "ticks",
                "missed_ticks",
                "served_in_place",
                "served_by_timer",
                "sampling_ns",
                "task_samples",
                "dropped_task_samples",
            )
        },
    )
    return Profile(
        frames,
        parents,
        frames_of_node,
        stack,
        thread,
        plain["time_ns"],
        plain["cpu_ns"],
        plain["wall_ns"],
        threads,
        meta,
        processes=[info for info, _ in members],
    )


def merge_heap_profiles(
    members: Sequence[tuple[ProcessInfo, HeapProfile]], notes: Sequence[str] = ()
) -> HeapProfile:
    """One HeapProfile of several processes' heap profiles (see
    :func:`merge_profiles`); it takes the first profile's view.

    Raises:
        ValueError: no profiles, or a pid twice.
    """
    if not members:
        raise ValueError("nothing to merge")
    pids = [info.pid for info, _ in members]
    if len(set(pids)) != len(pids):
        raise ValueError("a process appears twice")
    frames, parents, frames_of_node, offsets = _merge_trees(
        (p.frames, p.stack_parent, p.stack_frame) for _, p in members
    )
    stack: array[int] = array("i")
    columns: dict[str, array[int]] = {
        name: array("q") for name in ("size", "alloc_count", "inuse_count")
    }
    pid: array[int] = array("q")
    for (info, profile), offset in zip(members, offsets):
        stack.extend(s + offset for s in _ints(profile.stack))
        for name, column in columns.items():
            column.extend(_ints(getattr(profile, name)))
        pid.extend([info.pid] * len(profile.stack))
    metas = [p.metadata for _, p in members]
    rates = {m.sample_bytes for m in metas}
    meta = replace(
        metas[0],
        # members sample at the rate the request asked for; should they
        # differ, the mean keeps the unsampling estimates near the truth
        sample_bytes=sum(rates) / len(rates),
        start_time=min(m.start_time for m in metas),
        duration=max(m.duration for m in metas),
        pid=0,
        python_version=_joined(m.python_version for m in metas),
        sampled_allocations=sum(m.sampled_allocations for m in metas),
        dropped_samples=sum(m.dropped_samples for m in metas),
        truncated_stacks=sum(m.truncated_stacks for m in metas),
        frees_matched=sum(m.frees_matched for m in metas),
        notes=(*(n for m in metas for n in m.notes), *notes),
    )
    assert isinstance(meta, HeapMetadata)
    return HeapProfile(
        frames,
        parents,
        frames_of_node,
        stack,
        columns["size"],
        columns["alloc_count"],
        columns["inuse_count"],
        meta,
        members[0][1].view,
        processes=[info for info, _ in members],
        pid=pid,
    )


def _joined(values: Iterable[str]) -> str:
    """Distinct non-empty values, in order, joined by commas."""
    return ",".join(dict.fromkeys(v for v in values if v))
