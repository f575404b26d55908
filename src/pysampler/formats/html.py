"""A self-contained HTML flame graph: one file, inline script and style, no
network fetch, so it opens from ``file://`` and can be mailed around.

The page (``flamegraph.html`` beside this module) gets the call tree as
JSON: per-function frames (name, file, first line) and one tree whose first
level is the threads, each node carrying its total value and sample count.
The page draws it as boxes (HTML elements, so they can be searched,
hovered and tested), lets the reader pick a thread or all of them, zoom by
clicking and highlight functions matching a search.

Heap profiles (:func:`write_heap`) use the same page: the tree has no
thread level, and each node carries its in-use and allocated bytes and
objects, so the page can switch between the four views (boxes are sized by
the view shown, bytes by default).
"""

from __future__ import annotations

import array
import datetime
import html
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from pysampler import _columns
from pysampler.profile import process_title

if TYPE_CHECKING:
    from pysampler.heap_profile import HeapProfile
    from pysampler.profile import Profile

_DATA_MARK = "/*PYSAMPLER_DATA*/null"
_TITLE_MARK = "PYSAMPLER_TITLE"


def tree_data(profile: Profile) -> dict[str, Any]:
    """The call tree the page draws, as JSON-ready data.

    Node 0 is the root (all threads); nodes 1..T are the threads (``fn`` is
    ``-1 - thread index``); further nodes are calls, ``fn`` indexing
    ``functions``. In a profile of several processes, a level of process
    nodes (``fn`` is ``-1 - len(threads) - process index``, names in
    ``processes``) comes between the root and the threads. ``value`` and
    ``samples`` are totals (the node and all below it); children are listed
    heaviest first.
    """
    functions: dict[tuple[str, str, int], int] = {}
    fn_of_frame = [functions.setdefault(f.function_key, len(functions)) for f in profile.frames]
    parent = [-1]
    fn = [-1]
    value = [0]
    samples = [0]
    children: dict[tuple[int, int], int] = {}

    def child(of: int, f: int) -> int:
        key = (of, f)
        node = children.get(key)
        if node is None:
            node = children[key] = len(parent)
            parent.append(of)
            fn.append(f)
            value.append(0)
            samples.append(0)
        return node

    process_index = {p.pid: i for i, p in enumerate(profile.processes)}
    n_threads = len(profile.threads)
    for thread, frames, count, weight in profile.stacks():
        if weight <= 0:
            continue
        process = profile.process_of(thread)
        path = []
        if process is not None:
            path.append(child(0, -1 - n_threads - process_index[process.pid]))
        path.append(child(path[-1] if path else 0, -1 - thread))
        for fid in frames:
            path.append(child(path[-1], fn_of_frame[fid]))
        for node in (0, *path):
            value[node] += weight
            samples[node] += count

    # renumber so that children come heaviest first and parents first
    kids: dict[int, list[int]] = {}
    for node in range(1, len(parent)):
        kids.setdefault(parent[node], []).append(node)
    order = [0]
    for node in order:  # grows while iterating: a breadth-first walk
        order.extend(sorted(kids.get(node, ()), key=lambda n: -value[n]))
    new = {old: i for i, old in enumerate(order)}
    meta = profile.metadata
    return {
        "mode": meta.mode,
        "hz": meta.hz_requested,
        "hzDelivered": round(meta.hz_delivered, 1),
        "duration": round(meta.duration, 3),
        "start": _iso(meta.start_time),
        "pid": meta.pid,
        "python": meta.python_version,
        "dropped": meta.dropped_samples,
        "threads": [t.name for t in profile.threads],
        "processes": [process_title(p) for p in profile.processes],
        "functions": [list(k) for k in functions],
        "parent": [new[parent[o]] if o else -1 for o in order],
        "fn": [fn[o] for o in order],
        "value": [value[o] for o in order],
        "samples": [samples[o] for o in order],
    }


def _iso(unix: float) -> str:
    if unix <= 0:
        return ""
    when = datetime.datetime.fromtimestamp(unix, tz=datetime.timezone.utc)
    return when.isoformat(timespec="seconds")


def write(profile: Profile) -> bytes:
    """Serialise ``profile`` as a self-contained HTML flame graph page."""
    mode = "CPU" if profile.metadata.mode == "cpu" else "wall"
    return _page(tree_data(profile), f"pysampler {mode} flame graph")


def _page(tree: dict[str, Any], title: str) -> bytes:
    page = resources.files("pysampler.formats").joinpath("flamegraph.html").read_text("utf-8")
    data = json.dumps(tree, separators=(",", ":"))
    # inside <script>, "</script" or "<!--" in a function name would end or
    # confuse the element; JSON lets "<" be written as an escape instead
    data = data.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    page = page.replace(_TITLE_MARK, html.escape(title)).replace(_DATA_MARK, data)
    return page.encode("utf-8")


#: the four views of a heap profile: (key in the page, what is counted)
HEAP_VIEWS = ("inuse_space", "inuse_objects", "alloc_space", "alloc_objects")


def heap_tree_data(profile: HeapProfile) -> dict[str, Any]:
    """The call tree of a heap profile, as JSON-ready data for the page.

    Node 0 is the root; further nodes are calls, ``fn`` indexing
    ``functions`` (there is no thread level; in a profile of several
    processes, a level of process nodes, ``fn`` ``-1 - process index``,
    comes first). ``views`` holds, per view
    (``inuse_space``, ``inuse_objects``, ``alloc_space``,
    ``alloc_objects``), each node's total estimate (rounded) and sample
    count; ``value`` and ``samples`` are those of the profile's own view in
    bytes (``view``), and children are listed heaviest first in it.
    """
    functions: dict[tuple[str, str, int], int] = {}
    fn_of_frame = [functions.setdefault(f.function_key, len(functions)) for f in profile.frames]
    parent = [-1]
    fn = [-1]
    children: dict[tuple[int, int], int] = {}
    tree_of_stack: dict[int, int] = {}
    process_index = {p.pid: i for i, p in enumerate(profile.processes)}

    def tree_node(stack_node: int, pid: int) -> int:
        # stack trees of different processes share no node
        found = tree_of_stack.get(stack_node)
        if found is None:
            found = 0
            path = [-1 - process_index[pid]] if process_index else []
            path += [fn_of_frame[fid] for fid in profile.stack_of(stack_node)]
            for f in path:
                key = (found, f)
                node = children.get(key)
                if node is None:
                    node = children[key] = len(parent)
                    parent.append(found)
                    fn.append(key[1])
                found = node
            tree_of_stack[stack_node] = found
        return found

    leaf = array.array(
        "q", [tree_node(s, p) for s, p in zip(profile.column("stack"), profile.column("pid"))]
    )
    n = len(parent)
    # each node's own share, then added up the tree (a parent's id is smaller)
    totals: dict[str, tuple[list[float], list[int]]] = {}
    for name in HEAP_VIEWS:
        counts = profile.column("inuse_count" if name.startswith("inuse") else "alloc_count")
        val = _columns.bincount(leaf, profile.estimate(name), n).tolist()
        cnt = _columns.bincount(leaf, counts, n).tolist()
        for node in range(n - 1, 0, -1):
            val[parent[node]] += val[node]
            cnt[parent[node]] += cnt[node]
        totals[name] = (val, cnt)

    view = "inuse_space" if profile.view == "inuse" else "alloc_space"
    # renumber so that children come heaviest first and parents first
    kids: dict[int, list[int]] = {}
    for node in range(1, n):
        kids.setdefault(parent[node], []).append(node)
    order = [0]
    main = totals[view][0]
    for node in order:  # grows while iterating: a breadth-first walk
        order.extend(sorted(kids.get(node, ()), key=lambda c: -main[c]))
    new = {old: i for i, old in enumerate(order)}
    views = {
        name: {
            "value": [round(val[o]) for o in order],
            "samples": [cnt[o] for o in order],
        }
        for name, (val, cnt) in totals.items()
    }
    meta = profile.metadata
    return {
        "kind": "heap",
        "view": view,
        "sampleBytes": meta.sample_bytes,
        "duration": round(meta.duration, 3),
        "start": _iso(meta.start_time),
        "pid": meta.pid,
        "python": meta.python_version,
        "dropped": meta.dropped_samples,
        "threads": [],
        "processes": [process_title(p) for p in profile.processes],
        "functions": [list(k) for k in functions],
        "parent": [new[parent[o]] if o else -1 for o in order],
        "fn": [fn[o] for o in order],
        "value": views[view]["value"],
        "samples": views[view]["samples"],
        "views": views,
    }


def write_heap(profile: HeapProfile) -> bytes:
    """Serialise a heap profile as a self-contained HTML flame graph page
    (boxes sized by bytes of the profile's view; the page switches views)."""
    return _page(heap_tree_data(profile), "pysampler heap flame graph")


def write_diff(tree: dict[str, Any]) -> bytes:
    """A differential flame graph page from :func:`pysampler.diff.tree_data`
    (widths from the new profile, colour by the change against the base)."""
    return _page(tree, "pysampler differential flame graph")
