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
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from pysampler.profile import (
    Frame,
    FunctionStat,
    PathLike,
    ProcessInfo,
    _column,
    check_stack_tree,
    function_stats,
)

VIEWS = ("inuse", "alloc")


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


class HeapProfile:
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
            allocated (an entry of ``processes``).
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
        self.stack_parent = _column(stack_parent, np.int32)
        self.stack_frame = _column(stack_frame, np.int32)
        self.stack = _column(stack, np.int32)
        self.size = _column(size, np.int64)
        self.alloc_count = _column(alloc_count, np.int64)
        self.inuse_count = _column(inuse_count, np.int64)
        self.metadata = metadata
        self.view = view
        self.processes: tuple[ProcessInfo, ...] = tuple(processes)
        self.pid = _column(pid if pid is not None else [0] * len(self.stack), np.int64)
        if len(self.stack_parent) != len(self.stack_frame):
            raise ValueError("stack_parent and stack_frame differ in length")
        n = len(self.stack)
        for name in ("size", "alloc_count", "inuse_count", "pid"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"row column {name} differs in length from stack")
        check_stack_tree(self.frames, self.stack_parent, self.stack_frame, self.stack, "row")
        if n and (self.size.min() < 0 or self.alloc_count.min() < 0 or self.inuse_count.min() < 0):
            raise ValueError("sizes and counts must not be negative")
        if self.processes and not set(self.pid.tolist()) <= {p.pid for p in self.processes}:
            raise ValueError("a row refers to a process that is not in the process table")

    # -- estimates -----------------------------------------------------
    @property
    def weight(self) -> npt.NDArray[np.float64]:
        """Per row: how many allocations one sample of that size stands for."""
        rate = self.metadata.sample_bytes
        if rate <= 1:
            return np.ones(len(self.size))
        # size 0 is never sampled; keep its weight finite
        p = -np.expm1(-np.maximum(self.size, 1) / rate)
        return cast("npt.NDArray[np.float64]", 1.0 / p)

    @property
    def alloc_objects(self) -> npt.NDArray[np.float64]:
        """Per row: estimated allocations since start."""
        return cast("npt.NDArray[np.float64]", self.alloc_count * self.weight)

    @property
    def alloc_space(self) -> npt.NDArray[np.float64]:
        """Per row: estimated bytes allocated since start."""
        return cast("npt.NDArray[np.float64]", self.alloc_objects * self.size)

    @property
    def inuse_objects(self) -> npt.NDArray[np.float64]:
        """Per row: estimated blocks in use."""
        return cast("npt.NDArray[np.float64]", self.inuse_count * self.weight)

    @property
    def inuse_space(self) -> npt.NDArray[np.float64]:
        """Per row: estimated bytes in use."""
        return cast("npt.NDArray[np.float64]", self.inuse_objects * self.size)

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
        return float(self.inuse_space.sum())

    @property
    def alloc_bytes(self) -> float:
        """Estimated bytes allocated since the session started."""
        return float(self.alloc_space.sum())

    def with_view(self, view: str) -> HeapProfile:
        """The same data with another default view (``"inuse"`` or ``"alloc"``).

        Args:
            view: ``"inuse"`` or ``"alloc"``.
        """
        return HeapProfile(
            self.frames,
            self.stack_parent,
            self.stack_frame,
            self.stack,
            self.size,
            self.alloc_count,
            self.inuse_count,
            self.metadata,
            view,
            self.processes,
            self.pid,
        )

    # -- stacks and functions ------------------------------------------
    def stack_of(self, node: int) -> list[int]:
        """Frame ids of a stack-tree node's path, root first."""
        out: list[int] = []
        while node >= 0:
            out.append(int(self.stack_frame[node]))
            node = int(self.stack_parent[node])
        out.reverse()
        return out

    def stacks(self) -> list[tuple[list[int], int, float]]:
        """Distinct stacks of the current view: (frame ids root first,
        sample count, estimated bytes), heaviest first."""
        counts = self.counts
        keep = counts > 0
        if not keep.any():
            return []
        nodes = self.stack[keep]
        uniq, inverse = np.unique(nodes, return_inverse=True)
        cnt = np.bincount(inverse, weights=counts[keep], minlength=len(uniq))
        val = np.bincount(inverse, weights=self.values[keep], minlength=len(uniq))
        out = [
            (self.stack_of(int(n)), int(c), float(v))
            for n, c, v in zip(uniq.tolist(), cnt.tolist(), val.tolist())
        ]
        out.sort(key=lambda r: -r[2])
        return out

    def functions(self) -> list[FunctionStat]:
        """Self and total estimated bytes of the current view per function,
        heaviest self first (values in bytes, samples are sample counts)."""
        return function_stats(
            self.frames, self.stack_parent, self.stack_frame, self.stack, self.values, self.counts
        )

    def top(self, n: int = 10) -> str:
        """A text table of the ``n`` functions holding (``inuse``) or having
        allocated (``alloc``) the most memory themselves.

        Args:
            n: how many rows to show.
        """
        m = self.metadata
        total = float(self.values.sum())
        what = "in use" if self.view == "inuse" else "allocated"
        # a profile read from a file without a sampling rate has sample_bytes 1
        rate = f", one per {_bytes(m.sample_bytes)} on average" if m.sample_bytes > 1 else ""
        head = (
            f"pysampler heap profile ({self.view}): {_bytes(total)} {what} "
            f"({int(self.counts.sum())} samples{rate}) over {m.duration:.2f} s"
        )
        if m.dropped_samples:
            head += f", {m.dropped_samples} samples dropped"
        lines = [head, f"{'self':>10} {'self %':>7} {'total %':>7}  {'function':<40} location"]
        share = 100.0 / total if total else 0.0
        for row in self.functions()[: max(0, n)]:
            where = f"{row.filename}:{row.first_line}" if row.filename else ""
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
            f"alloc={_bytes(self.alloc_bytes)} rows={len(self.stack)} "
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
