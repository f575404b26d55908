"""The Profile: an immutable, format-neutral record of one profiling session.

A Profile holds a frame table, a stack tree shared by all samples, and one
row per (sampling event, thread) as numpy columns. Formats (pysampler.formats)
and the command line read it; nothing here knows about any file format
except through :meth:`Profile.save`, which looks the format up by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

import numpy as np
import numpy.typing as npt

PathLike = Union[str, "os.PathLike[str]"]

TRUNCATED_FUNCTION = "[truncated: outer frames omitted]"
#: how writers name the root of a process's stacks in a profile of several
#: processes: ``Process 1234: forked from 1200``
PROCESS_PREFIX = "Process "
#: function name prefix of the root frame of an asyncio task's stack
TASK_PREFIX = "Task: "


class Frame(NamedTuple):
    """One distinct (function, line) a sample was seen in."""

    function: str  #: qualified name, e.g. ``Class.method``
    filename: str  #: source file as the code object names it
    first_line: int  #: line where the function starts (1-based, 0 if unknown)
    line: int  #: line being executed (1-based, 0 if unknown)

    @property
    def function_key(self) -> tuple[str, str, int]:
        """What identifies the function regardless of the line."""
        return (self.function, self.filename, self.first_line)

    @property
    def task_name(self) -> str | None:
        """The task's name if this is the root frame of an asyncio task's
        stack (``Task: <name>``), else None."""
        if self.filename or self.first_line or not self.function.startswith(TASK_PREFIX):
            return None
        return self.function[len(TASK_PREFIX) :]


class ThreadInfo(NamedTuple):
    """A thread that was sampled at least once, or alive at start."""

    ident: int  #: ``threading.get_ident()`` value
    native_id: int  #: the OS thread id (0 when not known)
    name: str
    #: the process it ran in, in a profile of several processes (see
    #: :attr:`Profile.processes`); 0 in a profile of one process
    pid: int = 0


class ProcessInfo(NamedTuple):
    """A process of a profile taken of several processes at once (a
    process group: the workers of a pre-fork or spawn server)."""

    pid: int
    start_time: float  #: Unix time (seconds) the process joined its group
    role: str  #: how it came to be, e.g. ``"founder"``, ``"forked from 812"``
    command: str  #: its command line, as ``ps`` shows it


@dataclass(frozen=True)
class Metadata:
    """Facts about the session that produced a profile."""

    mode: str  #: "cpu" or "wall"
    hz_requested: float
    hz_delivered: float  #: sampling events per second actually recorded
    start_time: float  #: Unix time (seconds) the session started
    duration: float  #: seconds from start to stop
    pid: int = 0
    python_version: str = ""
    dropped_samples: int = 0  #: thread samples lost to full tables
    truncated_stacks: int = 0  #: samples deeper than the depth cap
    sampling_events: int = 0  #: timer ticks that were turned into samples
    ticks: int = 0  #: timer ticks (each asks for one sampling event)
    missed_ticks: int = 0  #: ticks skipped because the timer fell behind
    served_in_place: int = 0  #: events recorded by the running thread itself
    served_by_timer: int = 0  #: events recorded by the fallback thread
    sampling_ns: int = 0  #: time spent recording samples (the sampler's own cost)
    asyncio: bool = False  #: waiting asyncio tasks were recorded too
    task_samples: int = 0  #: samples of waiting asyncio tasks
    dropped_task_samples: int = 0  #: task registry entries left out by the per-sample cap
    #: what a reader should know about how complete the profile is, e.g.
    #: that a process of the group was lost while it was being profiled
    notes: tuple[str, ...] = ()

    @property
    def unit(self) -> str:
        return "nanoseconds"


def process_title(info: ProcessInfo) -> str:
    """The root name of a process's stacks (``Process 1234: <role>``)."""
    head = f"{PROCESS_PREFIX}{info.pid}"
    return f"{head}: {info.role}" if info.role else head


def parse_process_title(name: str) -> tuple[int, str] | None:
    """(pid, role) of a name :func:`process_title` made; None otherwise."""
    if not name.startswith(PROCESS_PREFIX):
        return None
    pid, _, role = name[len(PROCESS_PREFIX) :].partition(": ")
    return (int(pid), role) if pid.isdigit() else None


class FunctionStat(NamedTuple):
    """A row of :meth:`Profile.functions`."""

    function: str
    filename: str
    first_line: int
    self_value: float
    total_value: float
    self_samples: int
    total_samples: int


class Profile:
    """Frames, stack tree, per-sample columns, threads and metadata.

    Args:
        frames: the frame table; frame ids index it.
        stack_parent: parent node id per stack-tree node (-1 for a root).
        stack_frame: frame id per stack-tree node.
        stack: per sample, the leaf node of its stack.
        thread: per sample, an index into ``threads``.
        time_ns: per sample, monotonic time of its sampling event.
        cpu_ns: per sample, CPU time the thread used since its previous sample.
        wall_ns: per sample, wall time since the previous sampling event.
        threads: the thread table.
        metadata: facts about the session.
        processes: in a profile of several processes, one entry per
            process (threads name theirs by ``pid``); empty otherwise.
    """

    def __init__(
        self,
        frames: list[Frame] | tuple[Frame, ...],
        stack_parent: npt.ArrayLike,
        stack_frame: npt.ArrayLike,
        stack: npt.ArrayLike,
        thread: npt.ArrayLike,
        time_ns: npt.ArrayLike,
        cpu_ns: npt.ArrayLike,
        wall_ns: npt.ArrayLike,
        threads: list[ThreadInfo] | tuple[ThreadInfo, ...],
        metadata: Metadata,
        processes: list[ProcessInfo] | tuple[ProcessInfo, ...] = (),
    ) -> None:
        self.frames: tuple[Frame, ...] = tuple(frames)
        self.stack_parent = _column(stack_parent, np.int32)
        self.stack_frame = _column(stack_frame, np.int32)
        self.stack = _column(stack, np.int32)
        self.thread = _column(thread, np.int32)
        self.time_ns = _column(time_ns, np.int64)
        self.cpu_ns = _column(cpu_ns, np.int64)
        self.wall_ns = _column(wall_ns, np.int64)
        self.threads: tuple[ThreadInfo, ...] = tuple(threads)
        self.metadata = metadata
        self.processes: tuple[ProcessInfo, ...] = tuple(processes)
        if metadata.mode not in ("cpu", "wall"):
            raise ValueError(f"mode must be 'cpu' or 'wall', not {metadata.mode!r}")
        if len(self.stack_parent) != len(self.stack_frame):
            raise ValueError("stack_parent and stack_frame differ in length")
        n = len(self.stack)
        for name in ("thread", "time_ns", "cpu_ns", "wall_ns"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"sample column {name} differs in length from stack")
        check_stack_tree(self.frames, self.stack_parent, self.stack_frame, self.stack, "sample")
        if n and (self.thread.min() < 0 or self.thread.max() >= len(self.threads)):
            raise ValueError("a sample refers to a thread that does not exist")
        if self.processes:
            pids = {p.pid for p in self.processes}
            if any(t.pid not in pids for t in self.threads):
                raise ValueError("a thread refers to a process that is not in the process table")

    # -- basic views ---------------------------------------------------
    @property
    def mode(self) -> str:
        return self.metadata.mode

    @property
    def values(self) -> npt.NDArray[np.int64]:
        """Per-sample weight in nanoseconds: CPU time or wall time by mode."""
        return self.cpu_ns if self.mode == "cpu" else self.wall_ns

    @property
    def sample_count(self) -> int:
        return len(self.stack)

    @property
    def total_ns(self) -> int:
        return int(self.values.sum())

    def stack_of(self, node: int) -> list[int]:
        """Frame ids of a stack-tree node's path, root first."""
        out: list[int] = []
        parent = self.stack_parent
        while node >= 0:
            out.append(int(self.stack_frame[node]))
            node = int(parent[node])
        out.reverse()
        return out

    def stacks(self) -> list[tuple[int, list[int], int, int]]:
        """Distinct (thread, stack) pairs: (thread, frame ids root first,
        sample count, summed value in ns), heaviest first."""
        if not self.sample_count:
            return []
        key = self.thread.astype(np.int64) * (len(self.stack_parent) + 1) + self.stack
        uniq, inverse = np.unique(key, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(uniq))
        sums = np.bincount(inverse, weights=self.values, minlength=len(uniq))
        width = len(self.stack_parent) + 1
        paths: dict[int, list[int]] = {}
        out = []
        for k, c, s in zip(uniq.tolist(), counts.tolist(), sums.tolist()):
            t, node = divmod(k, width)
            if node not in paths:
                paths[node] = self.stack_of(node)
            out.append((t, paths[node], int(c), round(s)))
        out.sort(key=lambda r: -r[3])
        return out

    # -- aggregations --------------------------------------------------
    def functions(self) -> list[FunctionStat]:
        """Self and total value per function, heaviest self first."""
        if not self.sample_count:
            return []
        return function_stats(
            self.frames,
            self.stack_parent,
            self.stack_frame,
            self.stack,
            self.values,
            np.ones(self.sample_count),
        )

    def thread_totals(self) -> dict[int, tuple[int, int]]:
        """Per thread index: (sample count, summed value in ns)."""
        cnt = np.bincount(self.thread, minlength=len(self.threads))
        val = np.bincount(self.thread, weights=self.values, minlength=len(self.threads))
        return {i: (int(cnt[i]), round(float(val[i]))) for i in range(len(self.threads))}

    def top(self, n: int = 10) -> str:
        """A text table of the ``n`` hottest functions by self value.

        Args:
            n: how many rows to show.
        """
        m = self.metadata
        total = float(self.values.sum())
        head = (
            f"pysampler {m.mode} profile: {self.sample_count} samples, "
            f"{total / 1e9:.2f} s {m.mode.upper() if m.mode == 'cpu' else 'wall'} time "
            f"over {m.duration:.2f} s, {len(self.threads)} threads, "
            f"{m.hz_delivered:.0f} Hz delivered ({m.hz_requested:g} requested)"
        )
        if self.processes:
            head += f", {len(self.processes)} processes"
        if m.dropped_samples:
            head += f", {m.dropped_samples} samples dropped"
        lines = [head, *(f"note: {note}" for note in m.notes)]
        lines.append(f"{'self %':>7} {'total %':>7}  {'function':<40} location")
        for row in self.functions()[: max(0, n)]:
            share = 100.0 / total if total else 0.0
            where = f"{row.filename}:{row.first_line}" if row.filename else ""
            lines.append(
                f"{row.self_value * share:7.1f} {row.total_value * share:7.1f}  "
                f"{row.function:<40} {where}"
            )
        return "\n".join(lines)

    # -- output --------------------------------------------------------
    def to_bytes(self, format: str) -> bytes:
        """The profile serialised in a named format (see pysampler.formats).

        Args:
            format: a format name such as ``"pprof"`` or ``"cpuprofile"``.
        """
        from pysampler import formats

        return formats.get(format).write(self)

    def save(self, path: PathLike, format: str | None = None) -> str:
        """Write the profile to ``path``; returns the format used.

        Args:
            path: where to write.
            format: a format name; by default chosen from the file suffix
                (``.pprof``, ``.pb.gz``, ``.cpuprofile``, ...).

        Raises:
            ValueError: the format (or the suffix) is not one we write.
        """
        from pysampler import formats

        fmt = formats.get(format) if format is not None else formats.for_path(os.fspath(path))
        data = fmt.write(self)
        with open(path, "wb") as f:
            f.write(data)
        return fmt.name

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"<Profile mode={m.mode} samples={self.sample_count} threads={len(self.threads)} "
            f"duration={m.duration:.2f}s>"
        )


def _column(values: npt.ArrayLike, dtype: type[np.generic]) -> npt.NDArray[Any]:
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError("profile columns must be one-dimensional")
    arr.setflags(write=False)
    return arr


def function_stats(
    frames: tuple[Frame, ...],
    stack_parent: npt.NDArray[Any],
    stack_frame: npt.NDArray[Any],
    stack: npt.NDArray[Any],
    values: npt.NDArray[Any],
    counts: npt.NDArray[Any],
) -> list[FunctionStat]:
    """Self and total of ``values`` and ``counts`` per function (frames of
    one name, file and first line), heaviest self first. A function counts
    once per stack in its total, however often it recurses there.

    Args:
        frames: the frame table.
        stack_parent: parent node per stack-tree node (-1 for roots).
        stack_frame: frame id per stack-tree node.
        stack: leaf node per row.
        values: value per row.
        counts: sample count per row.
    """
    keys: dict[tuple[str, str, int], int] = {}
    fn_of_frame = np.array(
        [keys.setdefault(f.function_key, len(keys)) for f in frames], dtype=np.int64
    )
    nfn = len(keys)
    names = list(keys)
    if nfn == 0 or not len(stack) or not counts.any():
        return []
    nnodes = len(stack_parent)
    node_val = np.bincount(stack, weights=values, minlength=nnodes)
    node_cnt = np.bincount(stack, weights=counts, minlength=nnodes)
    node_fn = fn_of_frame[stack_frame]
    self_val = np.bincount(node_fn, weights=node_val, minlength=nfn)
    self_cnt = np.bincount(node_fn, weights=node_cnt, minlength=nfn)
    total_val = np.zeros(nfn)
    total_cnt = np.zeros(nfn)
    for node in np.flatnonzero(node_cnt).tolist():
        seen = set()
        n = node
        while n >= 0:
            seen.add(int(node_fn[n]))
            n = int(stack_parent[n])
        idx = list(seen)
        total_val[idx] += node_val[node]
        total_cnt[idx] += node_cnt[node]
    rows = [
        FunctionStat(
            names[i][0],
            names[i][1],
            names[i][2],
            float(self_val[i]),
            float(total_val[i]),
            int(self_cnt[i]),
            int(total_cnt[i]),
        )
        for i in range(nfn)
        if total_cnt[i] > 0
    ]
    rows.sort(key=lambda r: (-r.self_value, -r.total_value, r.function))
    return rows


def check_stack_tree(
    frames: tuple[Frame, ...],
    stack_parent: npt.NDArray[Any],
    stack_frame: npt.NDArray[Any],
    stack: npt.NDArray[Any],
    row: str,
) -> None:
    """Raise ValueError unless the stack tree is well formed and every
    ``row`` (sample, row) points at one of its nodes."""
    if len(stack) and (stack.min() < 0 or stack.max() >= len(stack_parent)):
        raise ValueError(f"a {row} refers to a stack node that does not exist")
    if len(stack_frame) and (stack_frame.min() < 0 or stack_frame.max() >= len(frames)):
        raise ValueError("a stack node refers to a frame that does not exist")
    if (stack_parent >= np.arange(len(stack_parent))).any():
        raise ValueError("a stack node's parent must come before it")
