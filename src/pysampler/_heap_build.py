"""Turn the heap profiler's raw tables into a HeapProfile.

Raw frames are (code object, line) per distinct instruction offset; they
are merged into (qualified name, file, first line, line) frames and the
stack tree is re-interned over them, as for CPU profiles (see _build.py).
"""

from __future__ import annotations

import array
import os
from typing import TYPE_CHECKING

from pysampler import _arrays, _columns
from pysampler._build import merge_tree
from pysampler._qualnames import qualnames
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
    import platform  # here, not at import: an idle host does not pay for it

    names = qualnames([code for code, _ in raw["frames"] if code is not None])
    frame_ids: dict[Frame, int] = {}
    frame_map = array.array("i")
    for code, line in raw["frames"]:
        if code is None:
            frame = Frame(NATIVE_FUNCTION if line < 0 else TRUNCATED_FUNCTION, "", 0, 0)
        else:
            frame = Frame(names[code], code.co_filename, code.co_firstlineno, max(0, line))
        frame_map.append(frame_ids.setdefault(frame, len(frame_ids)))
    parents, frames_of_node, node_map = merge_tree(
        raw["node_parent"], _columns.take(frame_map, raw["node_frame"])
    )

    # rows: (node, size) with sampled allocation and in-use counts, ordered
    # by node and size; merging frames can make two raw rows one
    n_alloc, n_live = len(raw["alloc_node"]), len(raw["live_node"])
    nodes = _columns.take(node_map, raw["alloc_node"] + raw["live_node"])
    sizes = raw["alloc_size"] + raw["live_size"]
    alloc = raw["alloc_count"] + _arrays.zeros(n_live)
    inuse = _arrays.zeros(n_alloc) + array.array("q", [1]) * n_live
    row_node, row_size, alloc, inuse, _ = _columns.group_sums(nodes, sizes, alloc, inuse)
    order = _columns.order_by(row_node, row_size)

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
        stack=_columns.take(row_node, order),
        size=_columns.take(row_size, order),
        alloc_count=_columns.take(alloc, order),
        inuse_count=_columns.take(inuse, order),
        metadata=meta,
        view=view,
    )
