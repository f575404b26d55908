"""The Profile: an immutable, format-neutral record of one profiling session.

A Profile holds a frame table, a stack tree shared by all samples, and one
row per (sampling event, thread). Formats (pysampler.formats) and the
command line read it; nothing here knows about any file format except
through :meth:`Profile.save`, which looks the format up by name.

The columns are kept as ``array.array`` (see _arrays.py): building a
Profile, its aggregations (:meth:`~Profile.stacks`,
:meth:`~Profile.functions`, :meth:`~Profile.top`) and writing any format
never import numpy. The column attributes (``stack``, ``thread``, ...) are
read-only numpy arrays over the same memory, made on first access: that is
the one thing here that imports numpy.
"""

from __future__ import annotations

import array
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Union

from pysampler import _arrays, _columns

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PathLike = Union[str, "os.PathLike[str]"]

TRUNCATED_FUNCTION = "[truncated: outer frames omitted]"
#: how writers name the root of a process's stacks in a profile of several
#: processes: ``Process 1234: forked from 1200``
PROCESS_PREFIX = "Process "
#: function name prefix of the root frame of an asyncio task's stack
TASK_PREFIX = "Task: "
#: leaves of asyncio task stacks that wait on other tasks (one task, or a
#: gather of several): the waiting is in those tasks' own samples
DELEGATING_WAITS = ("(awaiting Task", "(awaiting _GatheringFuture)")


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
    def is_wait(self) -> bool:
        """Whether this is the leaf of an asyncio task's stack: what the task
        waits on (``(awaiting Future)``, ``(ready to run)``), not code."""
        return not self.filename and not self.first_line and self.function.startswith("(")

    @property
    def task_name(self) -> str | None:
        """The task's name if this is the root frame of an asyncio task's
        stack (``Task: <name>``), else None."""
        if self.filename or self.first_line or not self.function.startswith(TASK_PREFIX):
            return None
        return self.function[len(TASK_PREFIX) :]


#: the name of the pseudo-thread that holds CPU no sample took (a CPU
#: profile's ``[CPU outside sampled Python stacks]`` rows); the native
#: layer names it so (``_sampler.OTHER_CPU_THREAD_NAME``)
OTHER_CPU_THREAD = "(other CPU)"


class ThreadInfo(NamedTuple):
    """A thread that was sampled at least once, or alive at start."""

    ident: int  #: ``threading.get_ident()`` value
    native_id: int  #: the OS thread id (0 when not known)
    name: str
    #: the process the thread ran in, when a profile covers several (the
    #: pprof ``pid`` label; see :attr:`Profile.processes`); 0 means the
    #: profile's own, ``metadata.pid``
    pid: int = 0

    @property
    def is_pseudo(self) -> bool:
        """Not a thread of the program: the one that holds CPU no sample
        took (CPU mode's ``[CPU outside sampled Python stacks]`` rows)."""
        return self.name == OTHER_CPU_THREAD


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
    #: thread samples lost: to full tables, or (3.11+, stacks read without
    #: the GIL) to a stack its running thread changed while it was read
    dropped_samples: int = 0
    truncated_stacks: int = 0  #: samples deeper than the depth cap
    sampling_events: int = 0  #: timer ticks that were turned into samples
    ticks: int = 0  #: timer ticks (each asks for one sampling event)
    missed_ticks: int = 0  #: ticks skipped because the timer fell behind
    served_in_place: int = 0  #: events recorded by a program thread (GIL-holding path)
    served_by_timer: int = 0  #: events recorded by the timer or the fallback thread
    sampling_ns: int = 0  #: time spent recording samples (the sampler's own cost)
    sampler_cpu_ns: int = 0  #: CPU used by the sampler's own native threads
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


def _process_table(
    given: list[ProcessInfo] | tuple[ProcessInfo, ...],
    threads: tuple[ThreadInfo, ...],
    own_pid: int,
) -> tuple[ProcessInfo, ...]:
    """:attr:`Profile.processes`: those given, which must name the process
    of every thread; or, when none are given and threads name processes (a
    profile read from a file, or built by hand), a bare entry per pid."""
    pids = dict.fromkeys(t.pid or own_pid for t in threads)
    if given:
        if not pids.keys() <= {p.pid for p in given}:
            raise ValueError("a thread refers to a process that is not in the process table")
        return tuple(given)
    if not any(t.pid for t in threads):
        return ()
    return tuple(ProcessInfo(pid, 0.0, "", "") for pid in pids)


class FunctionStat(NamedTuple):
    """A row of :meth:`Profile.functions`."""

    function: str
    filename: str
    first_line: int
    self_value: float
    total_value: float
    self_samples: int
    total_samples: int


#: the integer columns of a Profile and their typecodes ('i' int32, 'q' int64)
TREE_COLUMNS = {"stack_parent": _arrays.INT32, "stack_frame": _arrays.INT32}
SAMPLE_COLUMNS = {
    "stack": _arrays.INT32,
    "thread": _arrays.INT32,
    "time_ns": _arrays.INT64,
    "cpu_ns": _arrays.INT64,
    "wall_ns": _arrays.INT64,
    "count": _arrays.INT32,
}


class StackColumns:
    """What Profile and HeapProfile share: integer columns kept as
    ``array.array``, read-only numpy views of them made on first access,
    and a stack tree (``stack_parent``, ``stack_frame``) that the rows'
    ``stack`` column points into."""

    _columns: dict[str, array.array[int]]
    _views: dict[str, npt.NDArray[Any]]

    def _source(self, name: str) -> array.array[Any]:
        """The array.array behind the numpy attribute ``name``."""
        return self._columns[name]

    def _view(self, name: str) -> npt.NDArray[Any]:
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = _arrays.numpy_view(self._source(name))
        return view

    @property
    def stack_parent(self) -> npt.NDArray[np.int32]:
        """Parent node id per stack-tree node, -1 for a root (numpy, read-only)."""
        return self._view("stack_parent")

    @property
    def stack_frame(self) -> npt.NDArray[np.int32]:
        """Frame id per stack-tree node (numpy, read-only)."""
        return self._view("stack_frame")

    @property
    def stack(self) -> npt.NDArray[np.int32]:
        """Per row, the leaf node of its stack (numpy, read-only)."""
        return self._view("stack")

    def stack_of(self, node: int) -> list[int]:
        """Frame ids of a stack-tree node's path, root first."""
        out: list[int] = []
        parent = self._columns["stack_parent"]
        frame = self._columns["stack_frame"]
        while node >= 0:
            out.append(frame[node])
            node = parent[node]
        out.reverse()
        return out


class Profile(StackColumns):
    """Frames, stack tree, per-sample columns, threads and metadata.

    A row stands for ``count`` samples of one thread in one stack (1 for
    every row the sampler records one sample at a time); its ``cpu_ns`` and
    ``wall_ns`` are the totals over them.

    Args:
        frames: the frame table; frame ids index it.
        stack_parent: parent node id per stack-tree node (-1 for a root).
        stack_frame: frame id per stack-tree node.
        stack: per row, the leaf node of its stack.
        thread: per row, an index into ``threads``.
        time_ns: per row, monotonic time of its (first) sampling event.
        cpu_ns: per row, CPU time the thread used since its previous sample.
        wall_ns: per row, wall time since the previous sampling event.
        threads: the thread table.
        metadata: facts about the session.
        count: per row, the samples it stands for; 1 for every row if not
            given.
        processes: in a profile of several processes (threads name theirs
            by ``pid``), one entry per process; when not given, one bare
            entry per pid the threads name. Empty for a profile of one
            process.

    Columns may be given as sequences of integers, ``array.array`` (taken
    as they are, not copied: do not change them afterwards) or numpy arrays.
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
        count: npt.ArrayLike | None = None,
        processes: list[ProcessInfo] | tuple[ProcessInfo, ...] = (),
    ) -> None:
        self.frames: tuple[Frame, ...] = tuple(frames)
        given = {
            "stack_parent": stack_parent,
            "stack_frame": stack_frame,
            "stack": stack,
            "thread": thread,
            "time_ns": time_ns,
            "cpu_ns": cpu_ns,
            "wall_ns": wall_ns,
        }
        cols = {name: _arrays.column(given[name], code) for name, code in TREE_COLUMNS.items()}
        for name, code in SAMPLE_COLUMNS.items():
            if name != "count":
                cols[name] = _arrays.column(given[name], code)
        n = len(cols["stack"])
        cols["count"] = _arrays.ones(n) if count is None else _arrays.column(count, _arrays.INT32)
        self._columns: dict[str, array.array[int]] = cols
        self._views: dict[str, npt.NDArray[Any]] = {}
        self.threads: tuple[ThreadInfo, ...] = tuple(threads)
        self.metadata = metadata
        #: in a profile of several processes, one entry per process; empty
        #: in a profile of one
        self.processes: tuple[ProcessInfo, ...] = _process_table(
            processes, self.threads, metadata.pid
        )
        self._by_pid = {p.pid: p for p in self.processes}
        if metadata.mode not in ("cpu", "wall"):
            raise ValueError(f"mode must be 'cpu' or 'wall', not {metadata.mode!r}")
        if len(cols["stack_parent"]) != len(cols["stack_frame"]):
            raise ValueError("stack_parent and stack_frame differ in length")
        for name in SAMPLE_COLUMNS:
            if len(cols[name]) != n:
                raise ValueError(f"sample column {name} differs in length from stack")
        check_stack_tree(
            self.frames, cols["stack_parent"], cols["stack_frame"], cols["stack"], "sample"
        )
        low, high, _ = _columns.stats(cols["thread"])
        if n and (low < 0 or high >= len(self.threads)):
            raise ValueError("a sample refers to a thread that does not exist")
        low, _, self._samples = _columns.stats(cols["count"])
        if n and low < 0:
            raise ValueError("a row's count must not be negative")

    # -- columns -------------------------------------------------------
    def column(self, name: str) -> array.array[int]:
        """A column as an ``array.array`` ('i' int32, 'q' int64), without
        numpy: ``"stack_parent"``, ``"stack_frame"``, ``"stack"``,
        ``"thread"``, ``"time_ns"``, ``"cpu_ns"``, ``"wall_ns"``,
        ``"count"``, or ``"values"`` (``cpu_ns`` or ``wall_ns`` by mode).
        The profile's own memory: read it, do not change it.

        Args:
            name: the column's name.
        """
        if name == "values":
            name = "cpu_ns" if self.mode == "cpu" else "wall_ns"
        return self._columns[name]

    @property
    def thread(self) -> npt.NDArray[np.int32]:
        """Per row, an index into ``threads`` (numpy, read-only)."""
        return self._view("thread")

    @property
    def time_ns(self) -> npt.NDArray[np.int64]:
        """Per row, monotonic time of its sampling event (numpy, read-only)."""
        return self._view("time_ns")

    @property
    def cpu_ns(self) -> npt.NDArray[np.int64]:
        """Per row, CPU time used since the thread's previous sample (numpy, read-only)."""
        return self._view("cpu_ns")

    @property
    def wall_ns(self) -> npt.NDArray[np.int64]:
        """Per row, wall time since the previous sampling event (numpy, read-only)."""
        return self._view("wall_ns")

    @property
    def count(self) -> npt.NDArray[np.int32]:
        """Per row, the samples it stands for (numpy, read-only)."""
        return self._view("count")

    def process_of(self, thread: int) -> ProcessInfo | None:
        """The process a thread (an index into ``threads``) ran in, in a
        profile of several processes; None in a profile of one.

        Args:
            thread: an index into ``threads``.
        """
        if not self._by_pid:
            return None
        return self._by_pid[self.threads[thread].pid or self.metadata.pid]

    # -- basic views ---------------------------------------------------
    @property
    def mode(self) -> str:
        return self.metadata.mode

    @property
    def values(self) -> npt.NDArray[np.int64]:
        """Per-row weight in nanoseconds: CPU time or wall time by mode
        (numpy, read-only)."""
        return self.cpu_ns if self.mode == "cpu" else self.wall_ns

    @property
    def sample_count(self) -> int:
        """Samples in the profile: the sum of ``count`` over the rows."""
        return int(self._samples)

    @property
    def total_ns(self) -> int:
        return int(_columns.stats(self.column("values"))[2])

    def stacks(self) -> list[tuple[int, list[int], int, int]]:
        """Distinct (thread, stack) pairs: (thread, frame ids root first,
        sample count, summed value in ns), heaviest first."""
        cols = self._columns
        if not len(cols["stack"]):
            return []
        threads, nodes, counts, sums, _ = _columns.group_sums(
            cols["thread"], cols["stack"], cols["count"], self.column("values")
        )
        paths: dict[int, list[int]] = {}
        out = []
        for k in _columns.order_by(threads, nodes):
            node = nodes[k]
            path = paths.get(node)
            if path is None:
                path = paths[node] = self.stack_of(node)
            out.append((threads[k], path, counts[k], sums[k]))
        out.sort(key=lambda r: -r[3])
        return out

    # -- aggregations --------------------------------------------------
    def ranked(self) -> tuple[array.array[int], array.array[int]]:
        """Per row, the stack node :meth:`functions` and :meth:`top` rank
        it under, and 1 where it counts there (0 where not). Rows are as
        recorded, except those of waiting asyncio tasks: a leaf saying what
        a task waits on (``(awaiting Future)``, ``(ready to run)``) hands
        its time to the coroutine that waits, and a task waiting on other
        tasks (``(awaiting Task: handler)``, a gather) does not count, as
        those tasks' own samples hold that time (a request is counted
        once)."""
        node_to, node_counts = self._node_ranks()
        stack = self._columns["stack"]
        return _columns.take(node_to, stack), _columns.take(node_counts, stack)

    def _node_ranks(self) -> tuple[array.array[int], array.array[int]]:
        """:meth:`ranked`'s rule per stack node (it depends on the leaf
        only): the node a row ending there is ranked under, and 1 or 0."""
        parent, frame = self._columns["stack_parent"], self._columns["stack_frame"]
        n = len(parent)
        node_to = array.array("i", range(n))
        node_counts = array.array("i", [1]) * n
        waits = {i for i, f in enumerate(self.frames) if f.is_wait}
        if waits:
            for node in range(n):
                f = frame[node]
                if f not in waits:
                    continue
                if self.frames[f].function.startswith(DELEGATING_WAITS):
                    node_counts[node] = 0
                if parent[node] >= 0:
                    node_to[node] = parent[node]
        return node_to, node_counts

    def _ranked_totals(self) -> tuple[array.array[int], array.array[Any], array.array[int], float]:
        """Per stack node, as :meth:`ranked` ranks rows: the nodes (0..n-1),
        summed values and sample counts; and the value not counted."""
        cols = self._columns
        n = len(cols["stack_parent"])
        node_val = _columns.bincount(cols["stack"], self.column("values"), n)
        node_cnt = _columns.bincount(cols["stack"], cols["count"], n)
        node_to, node_counts = self._node_ranks()
        val = array.array(node_val.typecode, bytes(node_val.itemsize * n))
        cnt = array.array(node_cnt.typecode, bytes(node_cnt.itemsize * n))
        dropped = 0.0
        for node in range(n):
            if node_counts[node]:
                val[node_to[node]] += node_val[node]
                cnt[node_to[node]] += node_cnt[node]
            else:
                dropped += node_val[node]
        return array.array("i", range(n)), val, cnt, dropped

    def functions(self) -> list[FunctionStat]:
        """Self and total value per function, heaviest self first (asyncio
        task samples as :meth:`ranked` says)."""
        if not len(self._columns["stack"]):
            return []
        nodes, values, counts, _ = self._ranked_totals()
        return function_stats(
            self.frames,
            self._columns["stack_parent"],
            self._columns["stack_frame"],
            nodes,
            values,
            counts,
        )

    def thread_totals(self) -> dict[int, tuple[int, int]]:
        """Per thread index: (sample count, summed value in ns)."""
        n = len(self.threads)
        thread = self._columns["thread"]
        cnt = _columns.bincount(thread, self._columns["count"], n)
        val = _columns.bincount(thread, self.column("values"), n)
        return {i: (cnt[i], val[i]) for i in range(n)}

    def top(self, n: int = 10) -> str:
        """A text table of the ``n`` hottest functions by self value.

        Args:
            n: how many rows to show (0 or more).

        Raises:
            ValueError: ``n`` is negative.
        """
        check_rows(n)
        m = self.metadata
        if len(self._columns["stack"]):
            _, values, _, dropped = self._ranked_totals()
            total, delegated = float(sum(values)), dropped
        else:
            total, delegated = 0.0, 0.0
        threads = sum(1 for t in self.threads if not t.is_pseudo)
        # a rate of 0 requested: not known (a .cpuprofile does not record it)
        asked = f" ({m.hz_requested:g} requested)" if m.hz_requested > 0 else ""
        head = (
            f"pysampler {m.mode} profile: {self.sample_count} samples, "
            f"{total / 1e9:.2f} s {m.mode.upper() if m.mode == 'cpu' else 'wall'} time "
            f"over {m.duration:.2f} s, {threads} thread{'' if threads == 1 else 's'}, "
            f"{m.hz_delivered:.0f} Hz delivered{asked}"
        )
        if self.processes:
            head += f", {len(self.processes)} processes"
        if m.dropped_samples:
            head += f", {m.dropped_samples} samples dropped"
        if delegated:
            head += f"; not counted: {delegated / 1e9:.2f} s of tasks awaiting other tasks"
        lines = [head, *(f"note: {note}" for note in m.notes)]
        lines.append(f"{'self %':>7} {'total %':>7}  {'function':<40} location")
        for row in self.functions()[:n]:
            share = 100.0 / total if total else 0.0
            where = location(row.filename, row.first_line)
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


def check_rows(n: object) -> None:
    """``top(n)``'s argument: a whole number, 0 or more; else ValueError."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number of rows, 0 or more, not {n!r}")


def location(filename: str, line: int) -> str:
    """``file:line`` as tables show it: the path normalised (``a/../b.py``
    is ``b.py``), nothing for a frame without a file."""
    if not filename:
        return ""
    if not filename.startswith("<"):  # <frozen runpy>, <string>: not paths
        filename = os.path.normpath(filename)
    return f"{filename}:{line}"


def function_stats(
    frames: tuple[Frame, ...],
    stack_parent: array.array[int],
    stack_frame: array.array[int],
    stack: array.array[int],
    values: array.array[Any],
    counts: array.array[int],
) -> list[FunctionStat]:
    """Self and total of ``values`` and ``counts`` per function (frames of
    one name, file and first line), heaviest self first. A function counts
    once per stack in its total, however often it recurses there.

    Args:
        frames: the frame table.
        stack_parent: parent node per stack-tree node (-1 for roots).
        stack_frame: frame id per stack-tree node.
        stack: leaf node per row.
        values: value per row (integers or floats).
        counts: sample count per row.
    """
    keys: dict[tuple[str, str, int], int] = {}
    fn_of_frame = array.array("q", [keys.setdefault(f.function_key, len(keys)) for f in frames])
    nfn = len(keys)
    names = list(keys)
    if nfn == 0 or not len(stack):
        return []
    nnodes = len(stack_parent)
    node_val = _columns.bincount(stack, values, nnodes)
    node_cnt = _columns.bincount(stack, counts, nnodes)
    if not any(node_cnt):
        return []
    node_fn = _columns.take(fn_of_frame, stack_frame)
    self_val = _columns.bincount(node_fn, node_val, nfn)
    self_cnt = _columns.bincount(node_fn, node_cnt, nfn)
    total_val = [0.0] * nfn
    total_cnt = [0] * nfn
    for node, cnt in enumerate(node_cnt):
        if not cnt:
            continue
        seen = set()
        n = node
        while n >= 0:
            seen.add(node_fn[n])
            n = stack_parent[n]
        val = node_val[node]
        for fn in seen:
            total_val[fn] += val
            total_cnt[fn] += cnt
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
    stack_parent: array.array[int],
    stack_frame: array.array[int],
    stack: array.array[int],
    row: str,
) -> None:
    """Raise ValueError unless the stack tree is well formed and every
    ``row`` (sample, row) points at one of its nodes."""
    low, high, _ = _columns.stats(stack)
    if len(stack) and (low < 0 or high >= len(stack_parent)):
        raise ValueError(f"a {row} refers to a stack node that does not exist")
    low, high, _ = _columns.stats(stack_frame)
    if len(stack_frame) and (low < 0 or high >= len(frames)):
        raise ValueError("a stack node refers to a frame that does not exist")
    if _columns.first_parent_not_before(stack_parent) >= 0:
        raise ValueError("a stack node's parent must come before it")
