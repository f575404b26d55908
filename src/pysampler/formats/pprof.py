"""pprof (profile.proto, gzip-compressed): go tool pprof, Pyroscope, Grafana.

:func:`write` serialises a Profile; :func:`read` parses ours and, where the
data allows, pprof from other tools (see its docstring).

Layout of what we write:
  - sample types ``samples/count`` and ``cpu/nanoseconds`` (or
    ``wall/nanoseconds``); period type and period = one sampling interval;
  - one Function per (qualified name, file, first line), one Location per
    (function, line), all in a single Mapping that declares functions,
    file names and line numbers present, so no reader tries to symbolise;
  - one Sample per distinct (thread, stack), labelled ``thread_id`` and
    ``thread_name``, and ``task_name`` for an asyncio task's stack;
  - in a profile of several processes (a process group), every sample
    also has a string label ``pid``, and comments say, per process,
    ``pysampler process pid=N start=T role="..." command="..."``, then
    ``pysampler note: ...`` for each note (a process lost mid-profile);
  - string table entry 0 is "" as the format requires.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pysampler.formats._protobuf import Message, fields, unpack
from pysampler.profile import Frame, Metadata, ProcessInfo, Profile, ThreadInfo

if TYPE_CHECKING:
    from pysampler.heap_profile import HeapProfile


class Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        return self.index.setdefault(s, len(self.index))


def write(profile: Profile) -> bytes:
    """Serialise ``profile`` as gzip-compressed profile.proto."""
    meta = profile.metadata
    strings = Strings()
    out = Message()

    value_type = "cpu" if meta.mode == "cpu" else "wall"
    for type_, unit in (("samples", "count"), (value_type, "nanoseconds")):
        out.sub(1, Message().uint(1, strings(type_)).uint(2, strings(unit)))

    thread_id_key = strings("thread_id")
    thread_name_key = strings("thread_name")
    task_name_key = strings("task_name")
    # a string label, as Pyroscope and Grafana keep only those
    pid_key = strings("pid") if profile.processes else 0
    for thread, frames, count, value in profile.stacks():
        info = profile.threads[thread]
        sample = Message()
        # location ids are frame ids + 1, listed leaf first
        sample.packed(1, (f + 1 for f in reversed(frames)))
        sample.packed(2, (count, value))
        sample.sub(3, Message().uint(1, thread_id_key).uint(2, strings(str(info.ident))))
        sample.sub(3, Message().uint(1, thread_name_key).uint(2, strings(info.name)))
        task = profile.frames[frames[0]].task_name if frames else None
        if task is not None:
            sample.sub(3, Message().uint(1, task_name_key).uint(2, strings(task)))
        process = profile.process_of(thread)
        if process is not None:
            sample.sub(3, Message().uint(1, pid_key).uint(2, strings(str(process.pid))))
        out.sub(2, sample)

    functions = write_symbols(out, strings, profile.frames)
    body = out.encode() + functions

    tail = Message()
    tail.uint(9, int(meta.start_time * 1e9))
    tail.uint(10, int(meta.duration * 1e9))
    tail.sub(11, Message().uint(1, strings(value_type)).uint(2, strings("nanoseconds")))
    tail.uint(12, round(1e9 / meta.hz_requested) if meta.hz_requested > 0 else 0)
    comment = (
        f"pysampler mode={meta.mode} hz={meta.hz_requested:g} "
        f"delivered_hz={meta.hz_delivered:.1f} pid={meta.pid} python={meta.python_version} "
        f"dropped_samples={meta.dropped_samples} sampling_ns={meta.sampling_ns} "
        f"sampling_events={meta.sampling_events}"
    )
    tail.packed(13, [strings(comment), *group_comments(strings, profile.processes, meta.notes)])
    tail.uint(14, strings(value_type))

    return finish(body, strings, tail)


def group_comments(
    strings: Strings, processes: Sequence[ProcessInfo], notes: Sequence[str]
) -> list[int]:
    """String indexes of the comments naming each process and each note."""
    out = [
        strings(
            f"pysampler process pid={p.pid} start={p.start_time:.3f} "
            f"role={json.dumps(p.role)} command={json.dumps(p.command)}"
        )
        for p in processes
    ]
    out += [strings(f"pysampler note: {note}") for note in notes]
    return out


_PROCESS_COMMENT = re.compile(
    r'pysampler process pid=(\d+) start=([\d.]+) role=("(?:[^"\\]|\\.)*") '
    r'command=("(?:[^"\\]|\\.)*")\Z'
)


def read_group_comments(
    d: _Decoded, pids: Sequence[int], own: int
) -> tuple[list[ProcessInfo], tuple[str, ...]]:
    """The processes and notes :func:`group_comments` wrote. ``pids`` are
    the ``pid`` labels read (0 where a sample has none: the profile's own
    process, ``own``); without any, the profile is of one process and has
    no process table. A process labelled but not described gets a bare
    entry (a file from another writer)."""
    described: dict[int, ProcessInfo] = {}
    notes = []
    for idx in d.comments:
        text = d.string(idx)
        if text.startswith("pysampler note: "):
            notes.append(text[len("pysampler note: ") :])
            continue
        match = _PROCESS_COMMENT.match(text)
        if match:
            pid = int(match.group(1))
            role, command = json.loads(match.group(3)), json.loads(match.group(4))
            described[pid] = ProcessInfo(pid, float(match.group(2)), str(role), str(command))
    if not any(pids):
        return [], tuple(notes)
    processes = {
        p: described.get(p) or ProcessInfo(p, 0.0, "", "") for p in (q or own for q in pids)
    }
    # described processes first, in the order written, then the others
    order = [p for p in described if p in processes] + [p for p in processes if p not in described]
    return [processes[p] for p in order], tuple(notes)


def label_pid(d: _Decoded, text: int, num: int) -> int:
    """The process a ``pid`` label names: a string (ours, and what
    Pyroscope keeps) or a number; 0 if neither is a pid."""
    label = d.string(text)
    return int(label) if label.isdigit() else max(0, num)


def display_name(function: str) -> str:
    """The name shown by pprof readers. ``go tool pprof`` takes ``<...>`` as
    C++ template arguments and strips it, which turns ``<module>``,
    ``<lambda>`` or ``<listcomp>`` into nothing (shown as ``[python]``);
    single angle quotation marks survive and read the same. The exact name
    stays in the function's ``system_name``."""
    if "<" not in function:
        return function
    return function.replace("<", "\u2039").replace(">", "\u203a")


def write_symbols(out: Message, strings: Strings, frames: Sequence[Frame]) -> bytes:
    """Append the mapping and one Location per frame (id = frame id + 1) to
    ``out``; return the encoded Functions, one per (name, file, first line)."""
    out.sub(
        3,
        Message()
        .uint(1, 1)
        .uint(2, 1)
        .uint(3, len(frames) + 2)
        .uint(5, strings("python"))
        .flag(7, True)
        .flag(8, True)
        .flag(9, True),
    )
    function_ids: dict[tuple[str, str, int], int] = {}
    functions = Message()
    for i, frame in enumerate(frames):
        key = frame.function_key
        fid = function_ids.get(key)
        if fid is None:
            fid = function_ids[key] = len(function_ids) + 1
            functions.sub(
                5,
                Message()
                .uint(1, fid)
                .uint(2, strings(display_name(frame.function)))
                .uint(3, strings(frame.function))
                .uint(4, strings(frame.filename))
                .uint(5, max(0, frame.first_line)),
            )
        line = Message().uint(1, fid).uint(2, max(0, frame.line))
        out.sub(4, Message().uint(1, i + 1).uint(2, 1).uint(3, i + 1).sub(4, line))
    return functions.encode()


def finish(body: bytes, strings: Strings, tail: Message) -> bytes:
    """The gzip-compressed profile: body, string table, then ``tail``."""
    table = Message()
    for s in strings.index:  # insertion order is index order
        table.text(6, s)
    return gzip.compress(body + table.encode() + tail.encode(), mtime=0)


# -- reading -------------------------------------------------------------

#: nanoseconds per unit, for sample types measured in time
_TIME_UNITS = {
    "nanoseconds": 1,
    "ns": 1,
    "microseconds": 1_000,
    "us": 1_000,
    "milliseconds": 1_000_000,
    "ms": 1_000_000,
    "seconds": 1_000_000_000,
    "s": 1_000_000_000,
}
#: weight of a sample when nothing says how long a count lasts (100 Hz)
_DEFAULT_PERIOD_NS = 10_000_000


def _signed(value: int) -> int:
    # int64 fields arrive as two's-complement varints
    return value - (1 << 64) if value >= 1 << 63 else value


class _Decoded:
    """The parts of profile.proto a Profile needs, decoded as plain Python."""

    def __init__(self, raw: bytes) -> None:
        self.types: list[tuple[int, int]] = []
        self.samples: list[tuple[list[int], list[int], list[tuple[int, int, int]]]] = []
        self.mappings: dict[int, int] = {}  # id -> filename string index
        self.locations: dict[int, tuple[int, int, list[tuple[int, int]]]] = {}
        self.functions: dict[int, tuple[int, int, int]] = {}  # name, filename, start line
        self.strings: list[str] = []
        self.time_nanos = self.duration_nanos = self.period = 0
        self.period_type = (0, 0)
        self.comments: list[int] = []
        self.default_type = 0
        for field, _wire, value in fields(raw):
            if isinstance(value, bytes):
                self._field(field, value)
            elif field == 9:
                self.time_nanos = _signed(value)
            elif field == 10:
                self.duration_nanos = _signed(value)
            elif field == 12:
                self.period = _signed(value)
            elif field == 13:
                self.comments.append(value)
            elif field == 14:
                self.default_type = value

    def _field(self, field: int, value: bytes) -> None:
        if field == 1:
            self.types.append(_value_type(value))
        elif field == 2:
            locs: list[int] = []
            vals: list[int] = []
            labels: list[tuple[int, int, int]] = []
            for f, _w, v in fields(value):
                if f == 1:
                    locs += unpack(v)
                elif f == 2:
                    vals += [_signed(x) for x in unpack(v)]
                elif f == 3 and isinstance(v, bytes):
                    label = {1: 0, 2: 0, 3: 0}
                    for lf, _lw, lv in fields(v):
                        if lf in label and isinstance(lv, int):
                            label[lf] = lv
                    labels.append((label[1], label[2], label[3]))
            self.samples.append((locs, vals, labels))
        elif field == 3:
            m = {1: 0, 5: 0}
            for f, _w, v in fields(value):
                if f in m and isinstance(v, int):
                    m[f] = v
            self.mappings[m[1]] = m[5]
        elif field == 4:
            loc = {1: 0, 2: 0, 3: 0}
            lines: list[tuple[int, int]] = []
            for f, _w, v in fields(value):
                if f == 4 and isinstance(v, bytes):
                    ln = {1: 0, 2: 0}
                    for lf, _lw, lv in fields(v):
                        if lf in ln and isinstance(lv, int):
                            ln[lf] = lv
                    lines.append((ln[1], _signed(ln[2])))
                elif f in loc and isinstance(v, int):
                    loc[f] = v
            self.locations[loc[1]] = (loc[2], loc[3], lines)
        elif field == 5:
            fn = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
            for f, _w, v in fields(value):
                if f in fn and isinstance(v, int):
                    fn[f] = v
            # the exact name is the system name where one is given (ours
            # differ in display_name's quotation marks)
            self.functions[fn[1]] = (fn[3] or fn[2], fn[4], _signed(fn[5]))
        elif field == 6:
            self.strings.append(value.decode("utf-8", "replace"))
        elif field == 11:
            self.period_type = _value_type(value)
        elif field == 13:
            self.comments += unpack(value)

    def string(self, index: int) -> str:
        return self.strings[index] if 0 <= index < len(self.strings) else ""


class _Symbols:
    """Frames of a decoded profile's locations, made once per location."""

    def __init__(self, d: _Decoded) -> None:
        self.d = d
        self.frames: dict[Frame, int] = {}
        self.loc_frames: dict[int, list[int]] = {}  # location id -> frame ids, caller first

    def location(self, loc_id: int) -> list[int]:
        """Frame ids of a location, caller first (inlined calls are frames too)."""
        known = self.loc_frames.get(loc_id)
        if known is not None:
            return known
        d, frames = self.d, self.frames
        mapping, address, lines = d.locations.get(loc_id, (0, 0, []))
        out: list[int] = []
        for fn_id, line in reversed(lines):  # lines[0] is the innermost (inlined) one
            name, filename, start = d.functions.get(fn_id, (0, 0, 0))
            label = d.string(name) or f"0x{address:x}"
            frame = Frame(label, d.string(filename), max(0, start), max(0, line))
            out.append(frames.setdefault(frame, len(frames)))
        if not out:
            label = f"0x{address:x}" if address else f"location {loc_id}"
            frame = Frame(label, d.string(d.mappings.get(mapping, 0)), 0, 0)
            out.append(frames.setdefault(frame, len(frames)))
        self.loc_frames[loc_id] = out
        return out


def _value_type(data: bytes) -> tuple[int, int]:
    vt = {1: 0, 2: 0}
    for f, _w, v in fields(data):
        if f in vt and isinstance(v, int):
            vt[f] = v
    return vt[1], vt[2]


def _choose_value(d: _Decoded) -> tuple[int, int | None, str]:
    """(index of the value to use, index of a sample count or None, mode)."""
    types = [(d.string(t), d.string(u)) for t, u in d.types]
    if not types:
        raise ValueError("pprof data declares no sample types")
    count = next((i for i, (t, u) in enumerate(types) if u == "count"), None)

    def timed(i: int) -> bool:
        return types[i][1] in _TIME_UNITS

    default = d.string(d.default_type)
    choice = next((i for i, (t, _) in enumerate(types) if t == default and timed(i)), None)
    for wanted in ("cpu", "wall"):
        if choice is None:
            choice = next((i for i, (t, _) in enumerate(types) if t == wanted and timed(i)), None)
    if choice is None:
        choice = next((i for i in range(len(types)) if timed(i)), None)
    if choice is None and count is not None:
        choice = count  # counts only: each count lasts one period
    if choice is None:
        found = ", ".join(f"{t}/{u}" for t, u in types)
        raise ValueError(f"pprof data has no time or count sample type (it has {found})")
    mode = "wall" if types[choice][0] == "wall" else "cpu"
    return choice, count, mode


def read(data: bytes) -> Profile | HeapProfile:
    """Parse pprof (gzip-compressed or plain profile.proto) into a Profile,
    or into a HeapProfile when it is a heap profile (sample types in bytes
    and none in time units; see pprof_heap.read_heap).

    Our own files come back as written. From other tools: the sample type
    used is the file's default one if it is measured in time, else ``cpu``,
    ``wall``, the first one in time units, or counts times the period;
    inlined frames become separate frames; a location without line
    information is named by its address; threads come from ``thread_id`` /
    ``thread_name`` labels when present (one thread otherwise). pprof keeps
    no per-sample timestamps, so samples are laid out one after another.

    Args:
        data: the file's contents.

    Raises:
        ValueError: the data is not a readable pprof profile.
    """
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        d = _Decoded(raw)
    except (OSError, EOFError, zlib.error, ValueError, IndexError) as exc:
        raise ValueError(f"not a valid pprof profile ({exc})") from None
    from pysampler.formats import pprof_heap

    if pprof_heap.is_heap(d):
        return pprof_heap.read_heap(d)
    index, count_index, mode = _choose_value(d)
    unit = d.string(d.types[index][1])
    period_unit = _TIME_UNITS.get(d.string(d.period_type[1]), 0)
    period_ns = d.period * period_unit if d.period > 0 and period_unit else 0
    scale = _TIME_UNITS.get(unit, period_ns or _DEFAULT_PERIOD_NS)

    symbols = _Symbols(d)
    frames = symbols.frames
    location = symbols.location

    thread_id_key = d.strings.index("thread_id") if "thread_id" in d.strings else -1
    thread_name_key = d.strings.index("thread_name") if "thread_name" in d.strings else -1
    pid_key = d.strings.index("pid") if "pid" in d.strings else -1
    threads: dict[tuple[str, str, int], int] = {}
    nodes: dict[tuple[int, int], int] = {}
    rows_stack: list[int] = []
    rows_thread: list[int] = []
    rows_value: list[int] = []
    rows_count: list[int] = []
    for locs, vals, labels in d.samples:
        if index >= len(vals):
            continue
        n = vals[count_index] if count_index is not None and count_index < len(vals) else 1
        value = vals[index] * scale
        if value <= 0 and n <= 0:
            continue
        ident = name = ""
        pid = 0
        for key, text, num in labels:
            if key == thread_id_key:
                ident = d.string(text) or str(num)
            elif key == thread_name_key:
                name = d.string(text)
            elif key == pid_key:  # a profile of several processes
                pid = label_pid(d, text, num)
        thread = threads.setdefault((ident, name, pid), len(threads))
        node = -1
        for loc_id in reversed(locs):  # location ids are listed leaf first
            for fid in location(loc_id):
                node = nodes.setdefault((node, fid), len(nodes))
        if node < 0:
            node = nodes.setdefault(
                (-1, frames.setdefault(Frame("(unknown)", "", 0, 0), len(frames))), len(nodes)
            )
        # one row per pprof sample, standing for its count of samples
        rows_stack.append(node)
        rows_thread.append(thread)
        rows_value.append(max(0, value))
        rows_count.append(max(1, n))

    start_ns = d.time_nanos
    # no timestamps in pprof: rows are laid end to end from the start
    time_ns = list(itertools.accumulate(rows_value[:-1], initial=start_ns))[: len(rows_value)]
    total = sum(rows_value)
    info = _comment_facts(d)
    duration = d.duration_nanos / 1e9 if d.duration_nanos > 0 else total / 1e9
    hz = float(info.get("hz", 1e9 / period_ns if period_ns else 0.0))
    thread_list = []
    for i, (ident, name, pid) in enumerate(threads):
        num = int(ident) if ident.isdigit() else i
        label = name or (f"Thread-{ident}" if ident else "all")
        thread_list.append(ThreadInfo(num, 0, label, pid))
    own = int(info.get("pid", 0))
    processes, notes = read_group_comments(d, [t.pid for t in thread_list], own)
    meta = Metadata(
        mode=str(info.get("mode", mode)) if info.get("mode") in ("cpu", "wall") else mode,
        hz_requested=hz,
        hz_delivered=float(info.get("delivered_hz", hz)),
        start_time=start_ns / 1e9,
        duration=duration,
        pid=own,
        python_version=str(info.get("python", "")),
        dropped_samples=int(info.get("dropped_samples", 0)),
        sampling_ns=int(info.get("sampling_ns", 0)),
        sampling_events=int(info.get("sampling_events", 0)),
        notes=notes,
    )
    return Profile(
        frames=list(frames),
        stack_parent=[k[0] for k in nodes],
        stack_frame=[k[1] for k in nodes],
        stack=rows_stack,
        thread=rows_thread,
        time_ns=time_ns,
        cpu_ns=rows_value if meta.mode == "cpu" else [0] * len(rows_value),
        wall_ns=rows_value,
        threads=thread_list,
        metadata=meta,
        count=rows_count,
        processes=processes,
    )


_COMMENT = re.compile(r"(\w+)=(\S+)")


def _comment_facts(d: _Decoded) -> dict[str, str]:
    """key=value facts from the comment pysampler writes (empty for others)."""
    for idx in d.comments:
        text = d.string(idx)
        if text.startswith("pysampler "):
            return dict(_COMMENT.findall(text))
    return {}


def write_heap(profile: HeapProfile) -> bytes:
    """Serialise a heap profile as pprof (see pprof_heap.py)."""
    from pysampler.formats.pprof_heap import write_heap as write_heap_pprof

    return write_heap_pprof(profile)
