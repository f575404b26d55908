"""Turn the heap profiler's raw tables into a HeapProfile.

Raw frames are (code object, line) per distinct instruction offset; they
are merged into (qualified name, file, first line, line) frames and the
stack tree is re-interned over them, as for CPU profiles (see _build.py).
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

import numpy as np

from pysampler._build import _qualnames
from pysampler.heap_profile import HeapMetadata, HeapProfile
from pysampler.profile import TRUNCATED_FUNCTION, Frame

if TYPE_CHECKING:
    from pysampler._sampler import HeapTables

#: the frame of allocations made with no Python code on the stack
NATIVE_FUNCTION = "[no Python frame]"


def build_heap_profile(raw: HeapTables, start_unix: float, view: str) -> HeapProfile:
    """Build a HeapProfile from ``_sampler.heap_snapshot()``'s tables.

    Args:
        raw: the raw tables.
        start_unix: Unix time when the session started.
        view: the profile's default view, ``"inuse"`` or ``"alloc"``.
    """
    names = _qualnames([code for code, _ in raw["frames"] if code is not None])
    frame_ids: dict[Frame, int] = {}
    frame_map = np.empty(len(raw["frames"]), dtype=np.int32)
    for i, (code, line) in enumerate(raw["frames"]):
        if code is None:
            frame = Frame(NATIVE_FUNCTION if line < 0 else TRUNCATED_FUNCTION, "", 0, 0)
        else:
            frame = Frame(names[code], code.co_filename, code.co_firstlineno, max(0, line))
        frame_map[i] = frame_ids.setdefault(frame, len(frame_ids))

    # a parent always precedes its children in the raw table
    node_ids: dict[tuple[int, int], int] = {}
    raw_parent = raw["node_parent"].tolist()
    raw_frame = frame_map[raw["node_frame"]].tolist() if len(raw_parent) else []
    node_map = np.empty(len(raw_parent), dtype=np.int32)
    for i, (p, f) in enumerate(zip(raw_parent, raw_frame)):
        node_map[i] = node_ids.setdefault((int(node_map[p]) if p >= 0 else -1, f), len(node_ids))
    parents = np.array([k[0] for k in node_ids], dtype=np.int32)
    frames_of_node = np.array([k[1] for k in node_ids], dtype=np.int32)

    # rows: (node, size) with sampled allocation and in-use counts; merging
    # frames can make two raw rows one
    n_alloc, n_live = len(raw["alloc_node"]), len(raw["live_node"])
    raw_nodes = np.concatenate([raw["alloc_node"], raw["live_node"]])
    nodes = node_map[raw_nodes].astype(np.int64) if len(raw_nodes) else np.zeros(0, np.int64)
    sizes = np.concatenate([raw["alloc_size"], raw["live_size"]]).astype(np.int64)
    alloc = np.concatenate([raw["alloc_count"], np.zeros(n_live, dtype=np.int64)])
    inuse = np.concatenate([np.zeros(n_alloc, dtype=np.int64), np.ones(n_live, dtype=np.int64)])
    if len(nodes):
        keys, inverse = np.unique(np.column_stack([nodes, sizes]), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        alloc = np.bincount(inverse, weights=alloc, minlength=len(keys)).astype(np.int64)
        inuse = np.bincount(inverse, weights=inuse, minlength=len(keys)).astype(np.int64)
        row_node, row_size = keys[:, 0], keys[:, 1]
    else:
        row_node = row_size = np.zeros(0, dtype=np.int64)

    stats = raw["stats"]
    meta = HeapMetadata(
        sample_bytes=float(raw["sample_bytes"]),
        start_time=start_unix,
        duration=max(0.0, (raw["now_ns"] - raw["start_ns"]) / 1e9),
        pid=os.getpid(),
        python_version=platform.python_version(),
        sampled_allocations=int(stats["sampled"]),
        dropped_samples=int(stats["dropped_samples"]),
        truncated_stacks=int(stats["truncated_stacks"]),
        frees_matched=int(stats["frees_matched"]),
    )
    return HeapProfile(
        frames=list(frame_ids),
        stack_parent=parents,
        stack_frame=frames_of_node,
        stack=row_node,
        size=row_size,
        alloc_count=alloc,
        inuse_count=inuse,
        metadata=meta,
        view=view,
    )
