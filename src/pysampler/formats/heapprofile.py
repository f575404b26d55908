"""Chrome DevTools ``.heapprofile`` (HeapProfiler.SamplingHeapProfile JSON):
the Memory panel of Chrome DevTools and VS Code load it, as they load what
``HeapProfiler.getSamplingProfile`` returns for JavaScript.

Layout of what we write::

    {"head": {"callFrame": {...}, "selfSize": 0, "id": 1, "children": [...]},
     "samples": [{"size": ..., "nodeId": ..., "ordinal": ...}, ...]}

  - a call tree per function (the allocating line is not part of the
    format), under a ``(root)`` head (and, in a profile of several
    processes, under one ``Process <pid>: <role>`` node per process);
    ``callFrame`` line and column numbers are 0-based, as the protocol has
    them;
  - ``selfSize`` is the estimated bytes of the profile's view (in use, or
    allocated since start) allocated by the node itself; every sampled
    allocation is one sample whose ``size`` is the bytes it stands for
    (block size times its unsampling weight), as V8 reports them, so the
    samples of a node add up to its ``selfSize``;
  - ``ordinal`` numbers the samples (DevTools filters by ordinal ranges).

:func:`read` parses such a file (ours or one saved from Chrome DevTools)
back into a HeapProfile.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pysampler.heap_profile import HeapMetadata, HeapProfile
from pysampler.profile import Frame, process_title

if TYPE_CHECKING:
    from pysampler.profile import Profile


def _call_frame(name: str, url: str, line0: int, script_id: str) -> dict[str, Any]:
    return {
        "functionName": name,
        "scriptId": script_id,
        "url": url,
        "lineNumber": line0,
        "columnNumber": 0 if line0 >= 0 else -1,
    }


def write(profile: Profile) -> bytes:
    """A CPU profile has no allocations: refuse, naming what to use."""
    raise ValueError(
        ".heapprofile holds heap profiles (pysampler.heap); "
        "write a CPU profile as .cpuprofile or .pprof"
    )


def write_heap(profile: HeapProfile) -> bytes:
    """Serialise ``profile``'s current view as a Chrome DevTools ``.heapprofile``."""
    head: dict[str, Any] = {
        "callFrame": _call_frame("(root)", "", -1, "0"),
        "selfSize": 0,
        "id": 1,
        "children": [],
    }
    nodes = [head]
    children: dict[tuple[int, tuple[str, str, int]], int] = {}
    script_ids: dict[str, str] = {}
    tree_of_stack: dict[int, int] = {}

    titles = {p.pid: process_title(p) for p in profile.processes}

    def tree_node(stack_node: int, pid: int) -> int:
        """The tree node (index into ``nodes``) of a stack-tree node (stack
        trees of different processes share no node)."""
        found = tree_of_stack.get(stack_node)
        if found is not None:
            return found
        parent = 0
        path = [(titles[pid], "", -1, -1)] if titles else []
        for fid in profile.stack_of(stack_node):
            frame = profile.frames[fid]
            line0 = frame.first_line - 1 if frame.filename else -1
            path.append((frame.function, frame.filename, line0, fid))
        for function, filename, line0, _ in path:
            key = (parent, (function, filename, line0))
            idx = children.get(key)
            if idx is None:
                url = filename
                script = script_ids.setdefault(url, str(len(script_ids) + 1)) if url else "0"
                idx = len(nodes)
                node = {
                    "callFrame": _call_frame(function, url, line0, script),
                    "selfSize": 0,
                    "id": idx + 1,
                    "children": [],
                }
                nodes.append(node)
                nodes[parent]["children"].append(node)
                children[key] = idx
            parent = idx
        tree_of_stack[stack_node] = parent
        return parent

    samples: list[dict[str, int]] = []
    ordinal = 0
    for node, n, block, weight, pid in zip(
        profile.column("stack"),
        profile.column("counts"),
        profile.column("size"),
        profile.estimate("weight"),
        profile.column("pid"),
    ):
        if not n:
            continue
        idx = tree_node(node, pid)
        size = round(block * weight)
        nodes[idx]["selfSize"] += size * n
        node_id = idx + 1
        for _ in range(n):
            ordinal += 1
            samples.append({"size": size, "nodeId": node_id, "ordinal": ordinal})
    return json.dumps({"head": head, "samples": samples}, separators=(",", ":")).encode("utf-8")


def read(data: bytes) -> HeapProfile:
    """Parse a ``.heapprofile`` (SamplingHeapProfile JSON) into a HeapProfile.

    The file holds one view and no sampling rate, and its numbers are
    already estimates, so the profile read has ``sample_bytes`` 1 (no
    further unsampling), view ``"inuse"`` and the same counts for allocated
    and in use. A node whose samples add up to its ``selfSize`` (ours) gets
    one row per sample size, counting its samples; otherwise (V8 lists the
    sampled block sizes, not what they stand for) one row of ``selfSize``
    bytes: bytes are exact, the count of blocks is not known.

    Raises:
        ValueError: the data is not a sampling heap profile.
    """
    try:
        doc = json.loads(data)
        head = doc["head"]
        samples = doc.get("samples", [])
        if not isinstance(head, dict) or not isinstance(samples, list):
            raise TypeError("head must be an object and samples a list")
        frames: dict[Frame, int] = {}
        nodes: list[tuple[int, int]] = []  # (parent node, frame id) per stack node
        node_of_id: dict[int, int] = {}
        self_size: dict[int, int] = {}
        # (tree node, its stack node or -1 for the root), walked without recursion
        todo: list[tuple[dict[str, Any], int]] = [(c, -1) for c in reversed(head["children"])]
        while todo:
            node, parent = todo.pop()
            cf = node["callFrame"]
            line0 = int(cf.get("lineNumber", -1))
            url = str(cf.get("url", ""))
            frame = Frame(str(cf.get("functionName", "")) or "(anonymous)", url, line0 + 1, 0)
            fid = frames.setdefault(frame, len(frames))
            here = len(nodes)
            nodes.append((parent, fid))
            node_of_id[int(node["id"])] = here
            self_size[here] = int(node.get("selfSize", 0))
            # reversed, so that children are numbered in the file's order
            todo.extend((child, here) for child in reversed(node.get("children", ())))
        per_node: dict[int, dict[int, int]] = {}
        for s in samples:
            where = node_of_id.get(int(s["nodeId"]))
            if where is None:
                continue  # the root's own samples, or a node not in the tree
            sizes = per_node.setdefault(where, {})
            sizes[int(s["size"])] = sizes.get(int(s["size"]), 0) + 1
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a valid .heapprofile ({exc!r})") from None

    rows: list[tuple[int, int, int]] = []  # (stack node, size, count)
    for where, total in self_size.items():
        sizes = per_node.get(where, {})
        if sizes and sum(size * n for size, n in sizes.items()) == total:
            rows += [(where, size, n) for size, n in sorted(sizes.items())]
        elif total > 0:
            rows.append((where, total, 1))
    counts = [r[2] for r in rows]
    return HeapProfile(
        frames=list(frames),
        stack_parent=[p for p, _ in nodes],
        stack_frame=[f for _, f in nodes],
        stack=[r[0] for r in rows],
        size=[r[1] for r in rows],
        alloc_count=counts,
        inuse_count=counts,
        metadata=HeapMetadata(sample_bytes=1, start_time=0.0, duration=0.0),
        view="inuse",
    )
