"""A heap snapshot of the Python object graph, as Chrome DevTools reads it.

>>> import pysampler.heap
>>> info = pysampler.heap.snapshot_graph("app.heapsnapshot")
>>> info.nodes, info.pause_seconds

Open the file in Chrome DevTools (Memory > Load profile): the Summary
groups objects by type with counts, shallow and retained sizes; the
Containment and Retainers views follow references down and up; the
Comparison of two snapshots shows what was added between them.

The program is paused while the graph is read: the walk (src/_heapgraph,
C) holds the GIL from start to end, so no other thread runs Python code
and the graph is consistent. It writes the node, edge and string arrays to
three temporary files as it goes; after the pause they are assembled into
the .heapsnapshot file (or streamed to an HTTP client) in bounded memory.
See docs/heap.md ("Heap snapshots") for what is in the graph.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import secrets
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from pysampler.errors import SnapshotInProgress

__all__ = ["GraphSnapshot", "SnapshotParts", "snapshot_graph", "supported", "taking"]

SUFFIX = ".heapsnapshot"
_CHUNK = 1 << 20

#: V8's snapshot layout (DevTools and memlab read the fields by name from
#: this; trace_node_id and detachedness are always 0 here)
_META = {
    "node_fields": [
        "type",
        "name",
        "id",
        "self_size",
        "edge_count",
        "trace_node_id",
        "detachedness",
    ],
    "node_types": [
        [
            "hidden",
            "array",
            "string",
            "object",
            "code",
            "closure",
            "regexp",
            "number",
            "native",
            "synthetic",
            "concatenated string",
            "sliced string",
            "symbol",
            "bigint",
            "object shape",
        ],
        "string",
        "number",
        "number",
        "number",
        "number",
        "number",
    ],
    "edge_fields": ["type", "name_or_index", "to_node"],
    "edge_types": [
        ["context", "element", "property", "internal", "hidden", "shortcut", "weak"],
        "string_or_number",
        "node",
    ],
    "trace_function_info_fields": [
        "function_id",
        "name",
        "script_name",
        "script_id",
        "line",
        "column",
    ],
    "trace_node_fields": ["id", "function_info_index", "count", "size", "children"],
    "sample_fields": ["timestamp_us", "last_assigned_id"],
    "location_fields": ["object_index", "script_id", "line", "column"],
}

_lock = threading.Lock()


class Writable(Protocol):
    """Where a snapshot can be written: a binary file, a socket's file."""

    def write(self, data: bytes, /) -> Any: ...


@dataclass(frozen=True)
class GraphSnapshot:
    """What a snapshot held and cost.

    Attributes:
        nodes: objects in the graph (plus a few synthetic roots).
        edges: references between them.
        strings: distinct names in the string table.
        other_roots: the children of "(Other roots)": objects tracked by
            the garbage collector that no module or thread stack reaches,
            and static (C) types.
        pause_seconds: how long the program was paused.
        size: bytes of the .heapsnapshot file.
        path: where it was written, if to a file.
    """

    nodes: int
    edges: int
    strings: int
    other_roots: int
    pause_seconds: float
    size: int
    path: str | None = None


class SnapshotParts:
    """The three arrays of a snapshot in temporary files, and how to put
    them together: ``size`` bytes written by ``write_to``."""

    def __init__(self, files: list[IO[bytes]], counts: dict[str, int], pause: float) -> None:
        self._nodes, self._edges, self._strings = files
        self._counts = counts
        self.pause_seconds = pause
        self._head = (
            '{"snapshot":{"meta":'
            + json.dumps(_META, separators=(",", ":"))
            + f',"node_count":{counts["nodes"]},"edge_count":{counts["edges"]}'
            + ',"trace_function_count":0},\n"nodes":['
        ).encode()
        self._mid_edges = b'],\n"edges":['
        self._mid_strings = (
            b'],\n"trace_function_infos":[],\n"trace_tree":[],\n"samples":[],\n'
            b'"locations":[],\n"strings":['
        )
        self._tail = b"]}\n"

    def _sections(self) -> list[tuple[IO[bytes] | bytes, int, int]]:
        c = self._counts
        out: list[tuple[IO[bytes] | bytes, int, int]] = [(self._head, 0, 0)]
        # The synthetic nodes (root first) were written last: put them first.
        for f, split, total in (
            (self._nodes, c["nodes_split"], c["nodes_bytes"]),
            (self._edges, c["edges_split"], c["edges_bytes"]),
        ):
            out.append((f, split, total))
            if split > 0:
                out.append((b",\n", 0, 0))
                out.append((f, 0, split))
            out.append((self._mid_edges if f is self._nodes else self._mid_strings, 0, 0))
        out.append((self._strings, 0, c["strings_bytes"]))
        out.append((self._tail, 0, 0))
        return out

    @property
    def size(self) -> int:
        return sum(
            len(part) if isinstance(part, bytes) else end - start
            for part, start, end in self._sections()
        )

    def info(self, path: str | None = None) -> GraphSnapshot:
        c = self._counts
        return GraphSnapshot(
            nodes=c["nodes"],
            edges=c["edges"],
            strings=c["strings"],
            other_roots=c["other_roots"],
            pause_seconds=self.pause_seconds,
            size=self.size,
            path=path,
        )

    def write_to(self, out: Writable) -> None:
        """Write the .heapsnapshot to ``out``, a megabyte at a time."""
        for part, start, end in self._sections():
            if isinstance(part, bytes):
                out.write(part)
                continue
            part.seek(start)
            left = end - start
            while left > 0:
                chunk = part.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError("a snapshot's temporary file is shorter than written")
                out.write(chunk)
                left -= len(chunk)


def supported() -> bool:
    """Whether snapshots can be taken here: pausing the program means
    holding the GIL, which free-threaded CPython does not have (other
    threads would change the graph while it is read)."""
    return not sysconfig.get_config_var("Py_GIL_DISABLED")


def _ndarray_type() -> type | None:
    # numpy's array type only if the program imported numpy: never import it.
    np = sys.modules.get("numpy")
    nd = vars(np).get("ndarray") if np is not None else None
    return nd if isinstance(nd, type) else None


@contextlib.contextmanager
def taking(directory: str | None = None, *, collect: bool = False) -> Iterator[SnapshotParts]:
    """Take a snapshot into temporary files in ``directory`` (the system's
    temporary directory by default); they go when the block ends.

    Args:
        directory: where the temporary files go.
        collect: run ``gc.collect()`` first, so that garbage awaiting
            collection is not in the graph (as DevTools collects before a
            snapshot).

    Raises:
        SnapshotInProgress: another snapshot is being taken.
        RuntimeError: on a free-threaded build of CPython.
    """
    if not supported():
        raise RuntimeError("heap snapshots need the GIL: not supported on free-threaded CPython")
    if not _lock.acquire(blocking=False):
        raise SnapshotInProgress("a heap snapshot is already being taken")
    try:
        from pysampler import _heapgraph

        with contextlib.ExitStack() as stack:
            files: list[IO[bytes]] = [
                stack.enter_context(
                    tempfile.TemporaryFile(dir=directory, prefix="pysampler-heapsnapshot-")
                )
                for _ in range(3)
            ]
            if collect:
                gc.collect()
            names = {t.ident: t.name for t in threading.enumerate() if t.ident is not None}
            ndarray = _ndarray_type()
            # Collections run finalizers (Python code): none may start in
            # the pause, when the walk's own allocations could trigger one.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                counts: dict[str, Any] = _heapgraph.walk(
                    files[0].fileno(),
                    files[1].fileno(),
                    files[2].fileno(),
                    sys.modules,
                    names,
                    gc.get_objects,
                    ndarray,
                )
            finally:
                if gc_was_enabled:
                    gc.enable()
            yield SnapshotParts(files, counts, counts["pause"])
    finally:
        _lock.release()


def snapshot_graph(path: str | os.PathLike[str], *, collect: bool = False) -> GraphSnapshot:
    """Write a heap snapshot of the object graph to ``path``.

    The program is paused while the graph is read (``pause_seconds`` of the
    result says how long); the file is then written from temporary files
    beside ``path``, and appears under its name only when complete.

    Args:
        path: the file to write, conventionally ending in ``.heapsnapshot``.
        collect: run ``gc.collect()`` first, so that garbage awaiting
            collection is not in the graph.

    Returns:
        Counts and timings of the snapshot.

    Raises:
        SnapshotInProgress: another snapshot is being taken.
        OSError: the file or the temporary files could not be written.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    # Opened before the pause, so that a bad path fails without pausing; a
    # name of its own, with the permissions a new file gets (not mkstemp's
    # 0600), renamed over the target once complete.
    partial = f"{target}.{os.getpid()}-{secrets.token_hex(4)}.part"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as out, taking(directory, collect=collect) as parts:
            parts.write_to(out)
            info = parts.info(target)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return info


def _after_fork_in_child() -> None:
    # a snapshot in the parent says nothing about the child's
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
