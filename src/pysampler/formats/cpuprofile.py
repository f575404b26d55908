"""Chrome DevTools ``.cpuprofile`` (Profiler.Profile JSON): Chrome, VS Code,
speedscope.

The format is a call tree of ``nodes`` plus a timeline (``samples`` with
``timeDeltas`` in microseconds); a reader gives sample i the time until
sample i+1. Our samples carry weights instead (CPU or wall nanoseconds), so
we lay out a synthetic timeline in which each sample lasts exactly its
weight, and put ``(idle)`` where a sampling event's interval was not covered
(CPU mode: nobody was running). Totals therefore match pprof's.

Nodes are per function (the line is in ``positionTicks``), with one
``Thread: <name>`` node per thread under ``(root)``; in a profile of
several processes, one ``Process <pid>: <role>`` node per process under
``(root)`` holds its threads. ``callFrame`` line and
column numbers are 0-based; ``positionTicks`` lines are 1-based, as Chrome
writes them.

:func:`read` rebuilds a Profile from ``nodes``, ``samples`` and
``timeDeltas``, ours or Chrome's / Node's.
"""

from __future__ import annotations

import array
import itertools
import json
from typing import Any

from pysampler import _columns
from pysampler.profile import (
    Frame,
    Metadata,
    ProcessInfo,
    Profile,
    ThreadInfo,
    parse_process_title,
    process_title,
)


class _Tree:
    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.children: dict[tuple[int, tuple[str, str, int]], int] = {}
        self.script_ids: dict[str, str] = {}
        self.ticks: list[dict[int, int]] = []

    def add(self, parent: int, name: str, url: str, line0: int) -> int:
        """A child of ``parent`` (0-based index, -1 for none); its index."""
        key = (parent, (name, url, line0))
        idx = self.children.get(key)
        if idx is not None:
            return idx
        idx = len(self.nodes)
        script = self.script_ids.setdefault(url, str(len(self.script_ids) + 1)) if url else "0"
        self.nodes.append(
            {
                "id": idx + 1,
                "callFrame": {
                    "functionName": name,
                    "scriptId": script,
                    "url": url,
                    "lineNumber": line0,
                    "columnNumber": 0 if line0 >= 0 else -1,
                },
                "hitCount": 0,
                "children": [],
            }
        )
        self.ticks.append({})
        self.children[key] = idx
        if parent >= 0:
            self.nodes[parent]["children"].append(idx + 1)
        return idx


def write(profile: Profile) -> bytes:
    """Serialise ``profile`` as a Chrome DevTools ``.cpuprofile``."""
    tree = _Tree()
    root = tree.add(-1, "(root)", "", -1)
    idle = tree.add(root, "(idle)", "", -1)

    # leaf tree node per distinct (thread, stack), in (thread, stack) order
    thread, stack = profile.column("thread"), profile.column("stack")
    values, count = profile.column("values"), profile.column("count")
    threads, stacks, counts, _, group = _columns.group_sums(
        thread, stack, count, values, inverse=True
    )
    leaf_of_group = array.array("q", bytes(8 * len(threads)))
    thread_nodes: dict[int, int] = {}
    for k in _columns.order_by(threads, stacks):
        t = threads[k]
        if t not in thread_nodes:
            process = profile.process_of(t)
            under = root if process is None else tree.add(root, process_title(process), "", -1)
            thread_nodes[t] = tree.add(under, f"Thread: {profile.threads[t].name}", "", -1)
        node = thread_nodes[t]
        frames = profile.stack_of(stacks[k])
        for fid in frames:
            f = profile.frames[fid]
            node = tree.add(node, f.function, f.filename, f.first_line - 1 if f.first_line else -1)
        leaf_of_group[k] = node + 1  # node ids are 1-based
        # hits and line ticks count samples (a row may stand for several)
        tree.nodes[node]["hitCount"] += counts[k]
        line = profile.frames[frames[-1]].line if frames else 0
        if line > 0:
            ticks = tree.ticks[node]
            ticks[line] = ticks.get(line, 0) + counts[k]

    # timeline: events in time order, threads in index order within one;
    # (idle) first where an event's interval was not covered by its rows
    order = _columns.order_by(profile.column("time_ns"), thread)
    weights = _columns.take(values, order)
    assert group is not None
    leaves = _columns.take(leaf_of_group, _columns.take(group, order))
    starts, covered = _columns.runs(_columns.take(profile.column("time_ns"), order), weights)
    walls = _columns.take(_columns.take(profile.column("wall_ns"), order), starts)
    gaps = [
        (start, wall - total) for start, wall, total in zip(starts, walls, covered) if wall > total
    ]
    at = array.array("q", [g[0] for g in gaps])
    tree.nodes[idle]["hitCount"] += len(gaps)
    seq_nodes = _columns.insert(leaves, at, array.array("q", [idle + 1]) * len(gaps))
    seq_dur = _columns.insert(weights, at, array.array("q", [g[1] for g in gaps]))

    # cumulative nanoseconds -> whole microseconds, rounding once so that
    # the deltas add up exactly to the total
    deltas, end_us = _columns.tick_deltas(seq_dur, 1000)
    start_us = int(profile.metadata.start_time * 1e6)

    for entry, ticks in zip(tree.nodes, tree.ticks):
        if ticks:
            entry["positionTicks"] = [{"line": ln, "ticks": t} for ln, t in sorted(ticks.items())]
        if not entry["children"]:
            del entry["children"]
    doc = {"nodes": tree.nodes, "startTime": start_us, "endTime": start_us + end_us}
    head = json.dumps(doc, separators=(",", ":"))[:-1]  # without the closing brace
    # the two long arrays are written as text by a column kernel, not as
    # millions of Python ints through json
    return (
        f'{head},"samples":[{_columns.join_ints(seq_nodes)}],'
        f'"timeDeltas":[{_columns.join_ints(deltas)}]}}'
    ).encode()


# -- reading -------------------------------------------------------------

_THREAD_PREFIX = "Thread: "
#: pseudo-frames Chrome and Node put where no JavaScript ran
_IDLE_NAMES = ("(idle)",)


def read(data: bytes) -> Profile:
    """Parse a ``.cpuprofile`` (ours, Chrome's or Node's) into a Profile.

    Each sample lasts until the next one's timestamp (the last until
    ``endTime``); ``(idle)`` samples are dropped. ``Thread: <name>``
    children of ``(root)`` (as we write them) become threads; a profile
    without them has one thread. The format records neither the sampling
    mode nor the rate: the profile is read as CPU time, the delivered rate
    is the one the timestamps show and the requested one is 0 (unknown).
    Lines are the functions' first lines (the per-line ``positionTicks``
    are not spread over samples). A node whose ``hitCount`` exceeds its
    samples on the timeline (ours, for a row that stands for several
    samples) gets the difference on its last sample.

    Args:
        data: the file's contents (UTF-8 JSON).

    Raises:
        ValueError: the data is not a readable ``.cpuprofile``.
    """
    try:
        doc = json.loads(data)
        nodes = {int(n["id"]): n for n in doc["nodes"]}
        samples = [int(s) for s in doc.get("samples", [])]
        deltas = [int(t) for t in doc.get("timeDeltas", [])]
        start_us = int(doc.get("startTime", 0))
        end_us = int(doc.get("endTime", start_us))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a valid .cpuprofile ({exc})") from None
    if len(deltas) != len(samples):
        raise ValueError(".cpuprofile has a different number of samples and timeDeltas")

    parent: dict[int, int] = {}
    for nid, node in nodes.items():
        for child in node.get("children", ()):
            parent[int(child)] = nid
    roots = [nid for nid in nodes if nid not in parent]

    frames: dict[Frame, int] = {}
    tree: dict[tuple[int, int], int] = {}
    threads: dict[tuple[str, int], int] = {}
    processes: dict[int, ProcessInfo] = {}
    # per cpuprofile node: (thread index, stack node) or None to drop its samples
    placed: dict[int, tuple[int, int] | None] = {}

    def place(nid: int) -> tuple[int, int] | None:
        chain = []
        n: int | None = nid
        while n is not None and n not in placed:
            chain.append(n)
            n = parent.get(n)
        where = placed.get(n) if n is not None else None
        for n in reversed(chain):
            call = nodes[n].get("callFrame", {})
            name = str(call.get("functionName", ""))
            url = str(call.get("url", ""))
            process = parse_process_title(name) if not url else None
            if n in roots or (n in parent and parent[n] in roots and name in _IDLE_NAMES):
                where = None if n not in roots else (-1, -1)
            elif where == (-1, -1) and process is not None:
                # a process's node: (-2 - pid, -1) until one of its threads
                processes[process[0]] = ProcessInfo(process[0], 0.0, process[1], "")
                where = (-2 - process[0], -1)
            elif (
                where is not None
                and where[0] < 0
                and where[1] == -1
                and name.startswith(_THREAD_PREFIX)
                and not url
            ):
                pid = max(0, -2 - where[0])
                key = (name[len(_THREAD_PREFIX) :], pid)
                where = (threads.setdefault(key, len(threads)), -1)
            elif where is not None:
                if where[0] < 0:  # no thread node: one thread for the process or profile
                    key = ("main", max(0, -2 - where[0]))
                    where = (threads.setdefault(key, len(threads)), -1)
                line0 = int(call.get("lineNumber", -1))
                first = line0 + 1 if line0 >= 0 else 0
                frame = Frame(name or "(anonymous)", url, first, first)
                fid = frames.setdefault(frame, len(frames))
                where = (where[0], tree.setdefault((where[1], fid), len(tree)))
            placed[n] = where
        return where

    times = [start_us + t for t in itertools.accumulate(deltas)]
    # each sample lasts until the next one (the last until endTime)
    ends = [*times[1:], max(end_us, times[-1])] if times else []
    rows_stack: list[int] = []
    rows_thread: list[int] = []
    time_ns: list[int] = []
    dur_ns: list[int] = []
    last_row: dict[int, int] = {}  # per cpuprofile node: its last row
    entries: dict[int, int] = {}  # per cpuprofile node: timeline samples
    for sid, t, end in zip(samples, times, ends):
        if sid not in nodes:
            raise ValueError(f".cpuprofile sample refers to node {sid}, which does not exist")
        where = place(sid)
        if where is None or where[1] < 0:
            continue  # idle, or time spent in (root) itself
        rows_thread.append(where[0])
        rows_stack.append(where[1])
        time_ns.append(t * 1000)
        dur_ns.append(max(end - t, 0) * 1000)
        last_row[sid] = len(rows_stack) - 1
        entries[sid] = entries.get(sid, 0) + 1
    # A sample of ours may stand for several (a row extended while a thread's
    # stack did not change): its node's hitCount says so. Samples the
    # timeline does not show go to the node's last entry.
    count = [1] * len(rows_stack)
    for sid, row in last_row.items():
        hits = nodes[sid].get("hitCount")
        if isinstance(hits, int) and hits > entries[sid]:
            count[row] += hits - entries[sid]
    duration = max(0.0, (end_us - start_us) / 1e6)
    events = len(set(times))
    hz = events / duration if duration > 0 else 0.0
    meta = Metadata(
        mode="cpu",
        hz_requested=0.0,  # not recorded in the format: unknown
        hz_delivered=hz,
        start_time=start_us / 1e6,
        duration=duration,
    )
    return Profile(
        frames=list(frames),
        stack_parent=[k[0] for k in tree],
        stack_frame=[k[1] for k in tree],
        stack=rows_stack,
        thread=rows_thread,
        time_ns=time_ns,
        cpu_ns=dur_ns,
        wall_ns=dur_ns,
        count=count,
        threads=[ThreadInfo(i, 0, name, pid) for i, (name, pid) in enumerate(threads)],
        metadata=meta,
        # a file mixing threads under process nodes and threads outside any
        # is not ours: its threads name their processes, nothing more
        processes=list(processes.values()) if all(pid for _, pid in threads) else (),
    )
