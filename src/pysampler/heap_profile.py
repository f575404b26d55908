"""The HeapProfile: sampled allocations by Python stack, allocated and in use.

A HeapProfile shares the frame table and stack tree of a CPU
:class:`~pysampler.profile.Profile` (same conventions: parent id before
child id, -1 for a root) but its rows are different: one row per
(stack, block size), with how many sampled allocations of that size the
stack made since the session started and how many of those blocks are still
in use. It is its own class rather than a mode of Profile because nothing
of Profile's per-sample columns (time, thread, CPU and wall time) applies,
and a CPU Profile keeps its invariants and every format that reads it.

Counts are of *samples*. Estimates of the true numbers come from
unsampling as Go's runtime/pprof does: with a mean of ``sample_bytes``
between samples, a block of ``size`` bytes is sampled with probability
``1 - exp(-size / sample_bytes)``, so each sample stands for
``1 / (1 - exp(-size / sample_bytes))`` such blocks.

As with Profile, the columns are ``array.array`` inside (building a
HeapProfile and writing any format never import numpy); the column and
estimate attributes are read-only numpy arrays made on first access.
"""

from __future__ import annotations

import array
import importlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pysampler import _arrays, _columns
from pysampler.profile import (
    Frame,
    FunctionStat,
    PathLike,
    ProcessInfo,
    StackColumns,
    check_rows,
    check_stack_tree,
    function_stats,
    location,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

VIEWS = ("inuse", "alloc")
#: the integer columns of a HeapProfile and their typecodes ('i' int32, 'q' int64)
COLUMNS = {
    "stack_parent": _arrays.INT32,
    "stack_frame": _arrays.INT32,
    "stack": _arrays.INT32,
    "size": _arrays.INT64,
    "alloc_count": _arrays.INT64,
    "inuse_count": _arrays.INT64,
    "pid": _arrays.INT64,
}


@dataclass(frozen=True)
class HeapMetadata:
    """Facts about the session that produced a heap profile."""

    sample_bytes: float  #: mean bytes allocated between two samples
    start_time: float  #: Unix time (seconds) the session started
    duration: float  #: seconds from start to this profile
    pid: int = 0
    python_version: str = ""
    sampled_allocations: int = 0  #: allocations sampled since start
    dropped_samples: int = 0  #: samples a full table could not (fully) keep
    truncated_stacks: int = 0  #: samples deeper than the depth cap
    frees_matched: int = 0  #: frees of sampled blocks seen
    #: what a reader should know about how complete the profile is (see
    #: :attr:`pysampler.Metadata.notes`)
    notes: tuple[str, ...] = ()


class HeapProfile(StackColumns):
    """Frames, stack tree and per-(stack, size) sample counts.

    Args:
        frames: the frame table; frame ids index it.
        stack_parent: parent node id per stack-tree node (-1 for a root).
        stack_frame: frame id per stack-tree node.
        stack: per row, the leaf node of the allocating stack.
        size: per row, the size in bytes of each block.
        alloc_count: per row, sampled allocations since the session started.
        inuse_count: per row, sampled blocks still in use.
        metadata: facts about the session.
        view: what one number means by default: ``"inuse"`` (memory held
            now, by the stack that allocated it) or ``"alloc"`` (everything
            allocated since start). :meth:`top`, ``.heapprofile`` and the
            default sample type of pprof follow it.
        processes: in a profile of several processes, one entry per
            process; empty otherwise.
        pid: with ``processes``, per row, the pid of the process that
            allocated (an entry of ``processes``); 0 for every row if not
            given.
    """

    def __init__(
        self,
        frames: list[Frame] | tuple[Frame, ...],
        stack_parent: npt.ArrayLike,
        stack_frame: npt.ArrayLike,
        stack: npt.ArrayLike,
        size: npt.ArrayLike,
        alloc_count: npt.ArrayLike,
        inuse_count: npt.ArrayLike,
        metadata: HeapMetadata,
        view: str = "inuse",
        processes: list[ProcessInfo] | tuple[ProcessInfo, ...] = (),
        pid: npt.ArrayLike | None = None,
    ) -> None:
        if view not in VIEWS:
            raise ValueError(f"view must be 'inuse' or 'alloc', not {view!r}")
        if not metadata.sample_bytes >= 1:
            raise ValueError("sample_bytes must be at least 1")
        self.frames: tuple[Frame, ...] = tuple(frames)
        given = {
            "stack_parent": stack_parent,
            "stack_frame": stack_frame,
            "stack": stack,
            "size": size,
            "alloc_count": alloc_count,
            "inuse_count": inuse_count,
        }
        cols = {
            name: _arrays.column(given[name], code)
            for name, code in COLUMNS.items()
            if name != "pid"
        }
        n = len(cols["stack"])
        cols["pid"] = _arrays.zeros(n) if pid is None else _arrays.column(pid, _arrays.INT64)
        self._columns: dict[str, array.array[int]] = cols
        self._estimates: dict[str, array.array[float]] = {}
        self._views: dict[str, npt.NDArray[Any]] = {}
        self.metadata = metadata
        self.view = view
        self.processes: tuple[ProcessInfo, ...] = tuple(processes)
        if len(cols["stack_parent"]) != len(cols["stack_frame"]):
            raise ValueError("stack_parent and stack_frame differ in length")
        for name in ("size", "alloc_count", "inuse_count", "pid"):
            if len(cols[name]) != n:
                raise ValueError(f"row column {name} differs in length from stack")
        check_stack_tree(
            self.frames, cols["stack_parent"], cols["stack_frame"], cols["stack"], "row"
        )
        lowest = min(_columns.stats(cols[c])[0] for c in ("size", "alloc_count", "inuse_count"))
        if n and lowest < 0:
            raise ValueError("sizes and counts must not be negative")
        if self.processes and not set(cols["pid"]) <= {p.pid for p in self.processes}:
            raise ValueError("a row refers to a process that is not in the process table")

    # -- columns -------------------------------------------------------
    def column(self, name: str) -> array.array[int]:
        """An integer column as an ``array.array``, without numpy:
        ``"stack_parent"``, ``"stack_frame"``, ``"stack"``, ``"size"``,
        ``"alloc_count"``, ``"inuse_count"``, ``"pid"``, or ``"counts"``
        (that of the current view). The profile's own memory: read it, do not change it.

        Args:
            name: the column's name.
        """
        if name == "counts":
            name = "inuse_count" if self.view == "inuse" else "alloc_count"
        return self._columns[name]

    def estimate(self, name: str) -> array.array[float]:
        """A per-row estimate as an ``array.array`` of floats, without
        numpy: ``"weight"``, ``"alloc_objects"``, ``"alloc_space"``,
        ``"inuse_objects"``, ``"inuse_space"``, or ``"values"`` (estimated
        bytes of the current view).

        Args:
            name: the estimate's name.
        """
        if name == "values":
            name = "inuse_space" if self.view == "inuse" else "alloc_space"
        if not self._estimates:
            self._estimates = _unsample(
                self._columns["size"],
                self._columns["alloc_count"],
                self._columns["inuse_count"],
                self.metadata.sample_bytes,
            )
        return self._estimates[name]

    def _source(self, name: str) -> array.array[Any]:
        return self._columns[name] if name in COLUMNS else self.estimate(name)

    @property
    def size(self) -> npt.NDArray[np.int64]:
        """Per row, the size in bytes of each block (numpy, read-only)."""
        return self._view("size")

    @property
    def alloc_count(self) -> npt.NDArray[np.int64]:
        """Per row, sampled allocations since start (numpy, read-only)."""
        return self._view("alloc_count")

    @property
    def inuse_count(self) -> npt.NDArray[np.int64]:
        """Per row, sampled blocks still in use (numpy, read-only)."""
        return self._view("inuse_count")

    @property
    def pid(self) -> npt.NDArray[np.int64]:
        """Per row, the process that allocated, in a profile of several
        processes; 0 otherwise (numpy, read-only)."""
        return self._view("pid")

    # -- estimates -----------------------------------------------------
    @property
    def weight(self) -> npt.NDArray[np.float64]:
        """Per row: how many allocations one sample of that size stands for."""
        return self._view("weight")

    @property
    def alloc_objects(self) -> npt.NDArray[np.float64]:
        """Per row: estimated allocations since start."""
        return self._view("alloc_objects")

    @property
    def alloc_space(self) -> npt.NDArray[np.float64]:
        """Per row: estimated bytes allocated since start."""
        return self._view("alloc_space")

    @property
    def inuse_objects(self) -> npt.NDArray[np.float64]:
        """Per row: estimated blocks in use."""
        return self._view("inuse_objects")

    @property
    def inuse_space(self) -> npt.NDArray[np.float64]:
        """Per row: estimated bytes in use."""
        return self._view("inuse_space")

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """Per row: sample count of the current view."""
        return self.inuse_count if self.view == "inuse" else self.alloc_count

    @property
    def values(self) -> npt.NDArray[np.float64]:
        """Per row: estimated bytes of the current view."""
        return self.inuse_space if self.view == "inuse" else self.alloc_space

    @property
    def inuse_bytes(self) -> float:
        """Estimated bytes in use, allocated since the session started."""
        return math.fsum(self.estimate("inuse_space"))

    @property
    def alloc_bytes(self) -> float:
        """Estimated bytes allocated since the session started."""
        return math.fsum(self.estimate("alloc_space"))

    def with_view(self, view: str) -> HeapProfile:
        """The same data with another default view (``"inuse"`` or ``"alloc"``).

        Args:
            view: ``"inuse"`` or ``"alloc"``.
        """
        cols = self._columns
        other = HeapProfile(
            self.frames,
            cols["stack_parent"],
            cols["stack_frame"],
            cols["stack"],
            cols["size"],
            cols["alloc_count"],
            cols["inuse_count"],
            self.metadata,
            view,
            self.processes,
            cols["pid"],
        )
        other._estimates = self._estimates
        return other

    # -- stacks and functions ------------------------------------------
    def stacks(self) -> list[tuple[list[int], int, float]]:
        """Distinct stacks of the current view: (frame ids root first,
        sample count, estimated bytes), heaviest first."""
        stack = self._columns["stack"]
        nnodes = len(self._columns["stack_parent"])
        cnt = _columns.bincount(stack, self.column("counts"), nnodes)
        val = _columns.bincount(stack, self.estimate("values"), nnodes)
        out = [(self.stack_of(n), c, val[n]) for n, c in enumerate(cnt) if c > 0]
        out.sort(key=lambda r: -r[2])
        return out

    def functions(self) -> list[FunctionStat]:
        """Self and total estimated bytes of the current view per function,
        heaviest self first (values in bytes, samples are sample counts)."""
        cols = self._columns
        return function_stats(
            self.frames,
            cols["stack_parent"],
            cols["stack_frame"],
            cols["stack"],
            self.estimate("values"),
            self.column("counts"),
        )

    def top(self, n: int = 10) -> str:
        """A text table of the ``n`` functions holding (``inuse``) or having
        allocated (``alloc``) the most memory themselves.

        Args:
            n: how many rows to show (0 or more).

        Raises:
            ValueError: ``n`` is negative.
        """
        check_rows(n)
        m = self.metadata
        total = math.fsum(self.estimate("values"))
        what = "in use" if self.view == "inuse" else "allocated"
        # a profile read from a file without a sampling rate has sample_bytes 1
        rate = f", one per {_bytes(m.sample_bytes)} on average" if m.sample_bytes > 1 else ""
        # a .heapprofile does not record how long it took
        over = f" over {m.duration:.2f} s" if m.duration > 0 else ""
        head = (
            f"pysampler heap profile ({self.view}): {_bytes(total)} {what} "
            f"({_columns.stats(self.column('counts'))[2]} samples{rate}){over}"
        )
        if self.processes:
            head += f", {len(self.processes)} processes"
        if m.dropped_samples:
            head += f", {m.dropped_samples} samples dropped"
        lines = [head, *(f"note: {note}" for note in m.notes)]
        lines.append(f"{'self':>10} {'self %':>7} {'total %':>7}  {'function':<40} location")
        share = 100.0 / total if total else 0.0
        for row in self.functions()[:n]:
            where = location(row.filename, row.first_line)
            lines.append(
                f"{_bytes(row.self_value):>10} {row.self_value * share:7.1f} "
                f"{row.total_value * share:7.1f}  {row.function:<40} {where}"
            )
        return "\n".join(lines)

    # -- output --------------------------------------------------------
    def to_bytes(self, format: str) -> bytes:
        """The profile serialised in a named format that writes heap
        profiles: ``"pprof"`` or ``"heapprofile"``.

        Args:
            format: a format name (see pysampler.formats).

        Raises:
            ValueError: the format does not exist or writes no heap profiles.
        """
        from pysampler import formats

        return _heap_writer(formats.get(format).module, format)(self)

    def save(self, path: PathLike, format: str | None = None) -> str:
        """Write the profile to ``path``; returns the format used.

        Args:
            path: where to write.
            format: a format name; by default chosen from the file suffix
                (``.pprof``, ``.pb.gz``, ``.heapprofile``).

        Raises:
            ValueError: the format (or the suffix) is not one that writes
                heap profiles.
        """
        from pysampler import formats

        fmt = formats.get(format) if format is not None else formats.for_path(os.fspath(path))
        data = _heap_writer(fmt.module, fmt.name)(self)
        with open(path, "wb") as f:
            f.write(data)
        return fmt.name

    def __repr__(self) -> str:
        return (
            f"<HeapProfile view={self.view} inuse={_bytes(self.inuse_bytes)} "
            f"alloc={_bytes(self.alloc_bytes)} rows={len(self._columns['stack'])} "
            f"duration={self.metadata.duration:.2f}s>"
        )


def _heap_writer(module: str, name: str) -> Callable[[HeapProfile], bytes]:
    """A format module's heap writer: formats that can write heap profiles
    offer ``write_heap(HeapProfile) -> bytes`` beside ``write``."""
    writer = getattr(importlib.import_module(module), "write_heap", None)
    if writer is None:
        raise ValueError(f"the {name} format does not write heap profiles")
    return cast("Callable[[HeapProfile], bytes]", writer)


def _bytes(n: Any) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _unsample(
    size: array.array[int],
    alloc_count: array.array[int],
    inuse_count: array.array[int],
    rate: float,
) -> dict[str, array.array[float]]:
    """Per-row estimates from sample counts: a sample of a block of ``size``
    bytes stands for ``1 / (1 - exp(-size / rate))`` blocks (size 0, never
    sampled, is taken as 1 so that the weight stays finite)."""
    weights: dict[int, float] = {}
    weight: array.array[float] = array.array(_arrays.FLOAT64)
    for n in size:
        w = weights.get(n)
        if w is None:
            w = weights[n] = 1.0 if rate <= 1 else 1.0 / -math.expm1(-max(n, 1) / rate)
        weight.append(w)
    alloc_objects = array.array(_arrays.FLOAT64, [c * w for c, w in zip(alloc_count, weight)])
    inuse_objects = array.array(_arrays.FLOAT64, [c * w for c, w in zip(inuse_count, weight)])
    return {
        "weight": weight,
        "alloc_objects": alloc_objects,
        "alloc_space": array.array(_arrays.FLOAT64, [o * n for o, n in zip(alloc_objects, size)]),
        "inuse_objects": inuse_objects,
        "inuse_space": array.array(_arrays.FLOAT64, [o * n for o, n in zip(inuse_objects, size)]),
    }
