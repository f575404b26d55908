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
a group's endpoint. Row columns are concatenated as ``array.array`` and
their ids renumbered by the column kernels (``_columns.take`` through a
table of new ids), so no Python loop runs over rows; what is looped over
in Python is per frame, stack node or thread.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import replace

from pysampler import _arrays, _columns
from pysampler.heap_profile import HeapMetadata, HeapProfile
from pysampler.profile import Frame, Metadata, ProcessInfo, Profile, ThreadInfo

#: the sample columns of a Profile, concatenated as they are
_PLAIN_COLUMNS = {
    "time_ns": _arrays.INT64,
    "cpu_ns": _arrays.INT64,
    "wall_ns": _arrays.INT64,
    "count": _arrays.INT32,
}
#: the row columns of a HeapProfile, concatenated as they are
_HEAP_COLUMNS = ("size", "alloc_count", "inuse_count")
#: Metadata counters that add up over processes
_SUMMED = (
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


def _shifted(offset: int, n: int) -> array[int]:
    """New ids of ``n`` ids moved up by ``offset``: a table for ``take``."""
    return array(_arrays.INT32, range(offset, offset + n))


class _Trees:
    """Stack trees of several profiles laid side by side over one frame
    table; :meth:`add` gives the table renumbering a profile's nodes."""

    def __init__(self) -> None:
        self.frame_ids: dict[Frame, int] = {}
        self.parents: array[int] = array(_arrays.INT32)
        self.frames_of_node: array[int] = array(_arrays.INT32)

    def add(self, profile: Profile | HeapProfile) -> array[int]:
        ids = self.frame_ids
        fmap = array(_arrays.INT32, [ids.setdefault(f, len(ids)) for f in profile.frames])
        parent = profile.column("stack_parent")
        offset = len(self.parents)
        # per node, not per row: a tree has as many nodes as distinct stacks
        self.parents.extend(p + offset if p >= 0 else -1 for p in parent)
        self.frames_of_node.extend(_columns.take(fmap, profile.column("stack_frame")))
        return _shifted(offset, len(parent))

    @property
    def frames(self) -> list[Frame]:
        return list(self.frame_ids)


def _check_members(members: Sequence[tuple[ProcessInfo, object]]) -> None:
    if not members:
        raise ValueError("nothing to merge")
    pids = [info.pid for info, _ in members]
    if len(set(pids)) != len(pids):
        raise ValueError("a process appears twice")


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
    _check_members(members)
    modes = {p.metadata.mode for _, p in members}
    if len(modes) != 1:
        raise ValueError(f"cannot merge profiles of different modes: {sorted(modes)}")
    trees = _Trees()
    stack: array[int] = array(_arrays.INT32)
    thread: array[int] = array(_arrays.INT32)
    plain = {name: array(code) for name, code in _PLAIN_COLUMNS.items()}
    threads: list[ThreadInfo] = []
    for info, profile in members:
        nodes = trees.add(profile)
        stack.extend(_columns.take(nodes, profile.column("stack")))
        first_thread = _shifted(len(threads), len(profile.threads))
        thread.extend(_columns.take(first_thread, profile.column("thread")))
        threads.extend(t._replace(pid=info.pid) for t in profile.threads)
        for name, column in plain.items():
            column.extend(profile.column(name))
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
        **{name: sum(getattr(m, name) for m in metas) for name in _SUMMED},
    )
    return Profile(
        trees.frames,
        trees.parents,
        trees.frames_of_node,
        stack,
        thread,
        plain["time_ns"],
        plain["cpu_ns"],
        plain["wall_ns"],
        threads,
        meta,
        count=plain["count"],
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
    _check_members(members)
    trees = _Trees()
    stack: array[int] = array(_arrays.INT32)
    columns = {name: array(_arrays.INT64) for name in _HEAP_COLUMNS}
    pid: array[int] = array(_arrays.INT64)
    for info, profile in members:
        nodes = trees.add(profile)
        rows = profile.column("stack")
        stack.extend(_columns.take(nodes, rows))
        for name, column in columns.items():
            column.extend(profile.column(name))
        pid.extend(array(_arrays.INT64, [info.pid]) * len(rows))
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
        trees.frames,
        trees.parents,
        trees.frames_of_node,
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
