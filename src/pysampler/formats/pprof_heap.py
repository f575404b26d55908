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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pysampler.formats._protobuf import Message
from pysampler.formats.pprof import Strings, finish, write_symbols

if TYPE_CHECKING:
    from pysampler.heap_profile import HeapProfile

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

    columns = np.rint(
        np.column_stack(
            [
                profile.alloc_objects,
                profile.alloc_space,
                profile.inuse_objects,
                profile.inuse_space,
            ]
        )
    ).astype(np.int64)
    bytes_key = strings("bytes")
    paths: dict[int, list[int]] = {}
    for row in range(len(profile.stack)):
        if not columns[row].any():
            continue
        node = int(profile.stack[row])
        if node not in paths:
            paths[node] = profile.stack_of(node)
        sample = Message()
        # location ids are frame ids + 1, listed leaf first
        sample.packed(1, (f + 1 for f in reversed(paths[node])))
        sample.packed(2, columns[row].tolist())
        sample.sub(3, Message().uint(1, bytes_key).uint(3, int(profile.size[row])))
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
    tail.packed(13, [strings(comment)])
    tail.uint(14, strings("inuse_space" if profile.view == "inuse" else "alloc_space"))

    return finish(body, strings, tail)
