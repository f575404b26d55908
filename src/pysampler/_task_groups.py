"""asyncio task stacks grouped by what the tasks run.

The native core roots each waiting task's stack at ``Task: <name>``. A
server names nothing itself, so asyncio numbers its tasks (``Task-1``,
``Task-2``, ...): a profile of a thousand requests would hold a thousand
roots, one thin sliver each in a flame graph. When the profile is built,
tasks with such default names are grouped by their coroutine instead
(``Task: serve_client``), so every task running the same code adds up in
one place. Names the program gave its tasks are kept: they say something.

Runs at ``stop()`` in the profiled process: plain Python, no numpy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pysampler.profile import TASK_PREFIX, Frame

#: the names asyncio gives tasks the program did not name
DEFAULT_TASK_NAME = re.compile(r"Task-[0-9]+\Z")


def group_by_coroutine(
    frames: list[Frame], parents: Sequence[int], node_frames: Sequence[int]
) -> tuple[list[Frame], list[int], list[int], list[int]] | None:
    """The frame table and stack tree with default-named task roots replaced
    by ``Task: <coroutine>`` and the tree re-interned over them.

    Args:
        frames: the frame table.
        parents: parent node per stack-tree node (a parent precedes its children).
        node_frames: frame id per node.

    Returns:
        (frames, parents, node frames, new id of each old node), or None when
        no task has a default name (nothing changes).
    """
    numbered = {
        i for i, f in enumerate(frames) if DEFAULT_TASK_NAME.match(f.task_name or "") is not None
    }
    if not numbered:
        return None
    # each numbered root's coroutine: the function of a child (a task runs
    # one coroutine; its frames differ only by line)
    coroutine: dict[int, str] = {}
    for node, parent in enumerate(parents):
        if parent >= 0 and parents[parent] < 0 and node_frames[parent] in numbered:
            coroutine.setdefault(parent, frames[node_frames[node]].function)
    out_frames: dict[Frame, int] = {}
    frame_map = [out_frames.setdefault(f, len(out_frames)) for f in frames]
    nodes: dict[tuple[int, int], int] = {}
    remap: list[int] = []
    for node, (parent, frame) in enumerate(zip(parents, node_frames)):
        new_frame = frame_map[frame]
        if node in coroutine:
            group = Frame(f"{TASK_PREFIX}{coroutine[node]}", "", 0, 0)
            new_frame = out_frames.setdefault(group, len(out_frames))
        key = (remap[parent] if parent >= 0 else -1, new_frame)
        remap.append(nodes.setdefault(key, len(nodes)))
    # leave out the numbered roots no node uses any more
    used = sorted({frame for _, frame in nodes})
    compact = {old: new for new, old in enumerate(used)}
    table = list(out_frames)
    return (
        [table[i] for i in used],
        [parent for parent, _ in nodes],
        [compact[frame] for _, frame in nodes],
        remap,
    )
