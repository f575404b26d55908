"""pprof (profile.proto, gzip-compressed): go tool pprof, Pyroscope, Grafana.

Layout of what we write:
  - sample types ``samples/count`` and ``cpu/nanoseconds`` (or
    ``wall/nanoseconds``); period type and period = one sampling interval;
  - one Function per (qualified name, file, first line), one Location per
    (function, line), all in a single Mapping that declares functions,
    file names and line numbers present, so no reader tries to symbolise;
  - one Sample per distinct (thread, stack), labelled ``thread_id`` and
    ``thread_name``, and ``task_name`` for an asyncio task's stack;
  - string table entry 0 is "" as the format requires.
"""

from __future__ import annotations

import gzip
from typing import TYPE_CHECKING

from pysampler.formats._protobuf import Message

if TYPE_CHECKING:
    from pysampler.profile import Profile


class _Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        return self.index.setdefault(s, len(self.index))


def write(profile: Profile) -> bytes:
    """Serialise ``profile`` as gzip-compressed profile.proto."""
    meta = profile.metadata
    strings = _Strings()
    out = Message()

    value_type = "cpu" if meta.mode == "cpu" else "wall"
    for type_, unit in (("samples", "count"), (value_type, "nanoseconds")):
        out.sub(1, Message().uint(1, strings(type_)).uint(2, strings(unit)))

    thread_id_key = strings("thread_id")
    thread_name_key = strings("thread_name")
    task_name_key = strings("task_name")
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
        out.sub(2, sample)

    nframes = len(profile.frames)
    out.sub(
        3,
        Message()
        .uint(1, 1)
        .uint(2, 1)
        .uint(3, nframes + 2)
        .uint(5, strings("python"))
        .flag(7, True)
        .flag(8, True)
        .flag(9, True),
    )

    function_ids: dict[tuple[str, str, int], int] = {}
    functions = Message()
    for i, frame in enumerate(profile.frames):
        key = frame.function_key
        fid = function_ids.get(key)
        if fid is None:
            fid = function_ids[key] = len(function_ids) + 1
            name = strings(frame.function)
            functions.sub(
                5,
                Message()
                .uint(1, fid)
                .uint(2, name)
                .uint(3, name)
                .uint(4, strings(frame.filename))
                .uint(5, max(0, frame.first_line)),
            )
        line = Message().uint(1, fid).uint(2, max(0, frame.line))
        out.sub(4, Message().uint(1, i + 1).uint(2, 1).uint(3, i + 1).sub(4, line))
    body = out.encode() + functions.encode()

    tail = Message()
    tail.uint(9, int(meta.start_time * 1e9))
    tail.uint(10, int(meta.duration * 1e9))
    tail.sub(11, Message().uint(1, strings(value_type)).uint(2, strings("nanoseconds")))
    tail.uint(12, round(1e9 / meta.hz_requested) if meta.hz_requested > 0 else 0)
    comment = (
        f"pysampler mode={meta.mode} hz={meta.hz_requested:g} "
        f"delivered_hz={meta.hz_delivered:.1f} pid={meta.pid} python={meta.python_version} "
        f"dropped_samples={meta.dropped_samples}"
    )
    tail.packed(13, [strings(comment)])
    tail.uint(14, strings(value_type))

    table = Message()
    for s in strings.index:  # insertion order is index order
        table.text(6, s)
    return gzip.compress(body + table.encode() + tail.encode(), mtime=0)
