"""pprof heap profiles (profile.proto, gzip-compressed), laid out as Go's
runtime/pprof writes them, so ``go tool pprof`` and Pyroscope read them as
memory profiles:

  - sample types ``alloc_objects/count``, ``alloc_space/bytes``,
    ``inuse_objects/count``, ``inuse_space/bytes``, values already
    unsampled (estimates of the true numbers);
  - period type ``space/bytes`` with the mean sampling interval as period;
  - one Sample per (stack, block size), with a numeric ``bytes`` label
    holding the block size;
  - ``default_sample_type`` is ``inuse_space`` or ``alloc_space`` after the
    profile's view (what ``/debug/pprof/heap`` and ``/debug/pprof/allocs``
    differ in).

Functions and locations are laid out as for CPU profiles (see pprof.py).

:func:`read_heap` turns such a file (ours, Go's, or another tool's with
sample types in bytes) back into a HeapProfile.
"""

from __future__ import annotations

import math

from pysampler.formats._protobuf import Message
from pysampler.formats.pprof import (
    Strings,
    _comment_facts,
    _Decoded,
    _Symbols,
    finish,
    group_comments,
    label_pid,
    read_group_comments,
    write_symbols,
)
from pysampler.heap_profile import HeapMetadata, HeapProfile
from pysampler.profile import Frame

SAMPLE_TYPES = (
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
)


def write_heap(profile: HeapProfile) -> bytes:
    """Serialise ``profile`` as a gzip-compressed pprof heap profile."""
    meta = profile.metadata
    strings = Strings()
    out = Message()
    for type_, unit in SAMPLE_TYPES:
        out.sub(1, Message().uint(1, strings(type_)).uint(2, strings(unit)))

    columns = zip(
        *(
            profile.estimate(name)
            for name in ("alloc_objects", "alloc_space", "inuse_objects", "inuse_space")
        )
    )
    bytes_key = strings("bytes")
    pid_key = strings("pid") if profile.processes else 0
    paths: dict[int, list[int]] = {}
    rows = zip(profile.column("stack"), profile.column("size"), profile.column("pid"), columns)
    for node, size, pid, estimates in rows:
        values = [round(v) for v in estimates]
        if not any(values):
            continue
        if node not in paths:
            paths[node] = profile.stack_of(node)
        sample = Message()
        # location ids are frame ids + 1, listed leaf first
        sample.packed(1, (f + 1 for f in reversed(paths[node])))
        sample.packed(2, values)
        sample.sub(3, Message().uint(1, bytes_key).uint(3, size))
        if pid_key:
            sample.sub(3, Message().uint(1, pid_key).uint(2, strings(str(pid))))
        out.sub(2, sample)

    functions = write_symbols(out, strings, profile.frames)
    body = out.encode() + functions

    tail = Message()
    tail.uint(9, int(meta.start_time * 1e9))
    tail.uint(10, int(meta.duration * 1e9))
    tail.sub(11, Message().uint(1, strings("space")).uint(2, strings("bytes")))
    tail.uint(12, round(meta.sample_bytes))
    comment = (
        f"pysampler heap sample_bytes={meta.sample_bytes:g} pid={meta.pid} "
        f"python={meta.python_version} sampled={meta.sampled_allocations} "
        f"dropped_samples={meta.dropped_samples}"
    )
    tail.packed(13, [strings(comment), *group_comments(strings, profile.processes, meta.notes)])
    tail.uint(14, strings("inuse_space" if profile.view == "inuse" else "alloc_space"))

    return finish(body, strings, tail)


# -- reading -------------------------------------------------------------

#: pprof sample types of time, which make a profile a CPU profile even if it
#: also has a type in bytes
_TIME_UNITS = ("nanoseconds", "ns", "microseconds", "us", "milliseconds", "ms", "seconds", "s")


def is_heap(d: _Decoded) -> bool:
    """Whether a decoded pprof profile is a heap profile: a sample type in
    bytes (``inuse_space``, ``alloc_space``, ...) and none in time units."""
    units = [d.string(u) for _, u in d.types]
    return "bytes" in units and not any(u in _TIME_UNITS for u in units)


def _unsampled_weight(size: int, rate: float) -> float:
    """How many blocks one sample of ``size`` bytes stands for (as
    HeapProfile.weight computes it)."""
    if rate <= 1:
        return 1.0
    return 1.0 / -math.expm1(-max(size, 1) / rate)


def read_heap(d: _Decoded) -> HeapProfile:
    """A HeapProfile from a decoded pprof heap profile.

    pprof heap files carry estimates (already unsampled) per stack and block
    size; a HeapProfile keeps sample counts and unsamples them itself. So the
    counts are recovered by undoing the unsampling of the bytes with the
    file's period (``space/bytes``, the mean bytes between samples): for our
    files and Go's this gives back the sample counts exactly, and the
    estimates agree with the file's to a byte per row. The block size is the numeric
    ``bytes`` label where there is one (ours, Go's), else bytes over
    objects. Without a period in bytes, or without ``*_objects`` counts,
    the file's numbers are taken as exact (one sample per block).
    """
    types = [(d.string(t), d.string(u)) for t, u in d.types]
    index = {t: i for i, (t, _) in reversed(list(enumerate(types)))}
    space = {v: index.get(f"{v}_space") for v in ("alloc", "inuse")}
    objects = {v: index.get(f"{v}_objects") for v in ("alloc", "inuse")}
    if space["alloc"] is None and space["inuse"] is None:
        # some other bytes type (say, "space"): read it as in-use space
        space["inuse"] = next(i for i, (_, u) in enumerate(types) if u == "bytes")
    period_unit = d.string(d.period_type[1])
    rate = float(d.period) if d.period > 0 and period_unit == "bytes" else 1.0
    if objects["alloc"] is None and objects["inuse"] is None:
        rate = 1.0  # nothing to undo the unsampling with

    bytes_key = d.strings.index("bytes") if "bytes" in d.strings else -1
    pid_key = d.strings.index("pid") if "pid" in d.strings else -1
    symbols = _Symbols(d)
    nodes: dict[tuple[int, int], int] = {}
    rows: dict[tuple[int, int, int], list[int]] = {}  # (node, size, pid) -> [alloc, inuse] counts

    def value(vals: list[int], i: int | None) -> int:
        return max(0, vals[i]) if i is not None and i < len(vals) else 0

    for locs, vals, labels in d.samples:
        got = {v: (value(vals, objects[v]), value(vals, space[v])) for v in ("alloc", "inuse")}
        if not any(o or b for o, b in got.values()):
            continue
        size = next((num for key, _t, num in labels if key == bytes_key and num > 0), 0)
        pid = next((label_pid(d, t, n) for key, t, n in labels if key == pid_key), 0)
        if not size:
            o, b = got["alloc"] if got["alloc"][1] else got["inuse"]
            size = round(b / o) if o else b
        weight = _unsampled_weight(size, rate)
        counts = []
        for v in ("alloc", "inuse"):
            o, b = got[v]
            # bytes have the finer grain: Go truncates both estimates to
            # integers, which can cost a whole block's worth of objects
            n = round(b / (size * weight)) if b and size else round(o / weight)
            counts.append(n if n or not (b or o) else 1)  # keep a stack the file shows
        if space["alloc"] is None and objects["alloc"] is None:
            counts[0] = counts[1]  # no allocation data: all that is known is in use
        counts[0] = max(counts[0], counts[1])
        node = -1
        for loc_id in reversed(locs):  # location ids are listed leaf first
            for fid in symbols.location(loc_id):
                node = nodes.setdefault((node, fid), len(nodes))
        if node < 0:
            unknown = symbols.frames.setdefault(Frame("(unknown)", "", 0, 0), len(symbols.frames))
            node = nodes.setdefault((-1, unknown), len(nodes))
        row = rows.setdefault((node, size, pid), [0, 0])
        row[0] += counts[0]
        row[1] += counts[1]

    info = _comment_facts(d)
    own = int(info.get("pid", 0))
    keys = list(rows)
    processes, notes = read_group_comments(d, [k[2] for k in keys], own)
    alloc = [rows[k][0] for k in keys]
    default = d.string(d.default_type)
    meta = HeapMetadata(
        sample_bytes=rate,
        start_time=d.time_nanos / 1e9 if d.time_nanos > 0 else 0.0,
        duration=d.duration_nanos / 1e9 if d.duration_nanos > 0 else 0.0,
        pid=own,
        python_version=str(info.get("python", "")),
        sampled_allocations=int(info.get("sampled", sum(alloc))),
        dropped_samples=int(info.get("dropped_samples", 0)),
        notes=notes,
    )
    return HeapProfile(
        frames=list(symbols.frames),
        stack_parent=[k[0] for k in nodes],
        stack_frame=[k[1] for k in nodes],
        stack=[k[0] for k in keys],
        size=[k[1] for k in keys],
        alloc_count=alloc,
        inuse_count=[rows[k][1] for k in keys],
        metadata=meta,
        view="alloc" if default.startswith("alloc") else "inuse",
        processes=processes,
        pid=[k[2] or own for k in keys] if processes else None,
    )
