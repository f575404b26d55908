"""How a member sends its profile to the leader: the Profile's own tables,
as they are, rather than a file format.

A JSON part (frames, threads, metadata) and the columns' raw bytes
(``Profile.column``, ``array.array``), rebuilt as ``array.array``: a copy,
no parsing, no numpy. Both ends run on one host,
so native byte order is fine. Measured against pprof as the alternative
(each member writes it, the leader reads it back with our reader): a 3 s
profile of 4 busy threads (309 samples) takes 0.06 ms to encode and
decode against 0.5 ms; a large one (100,000 samples, 20,000 stack nodes)
2 ms against 5.3 s (pprof keeps no per-sample rows, so reading it builds
one per counted sample, and loses the timestamps a ``.cpuprofile``
needs). The price is size, 3.4 MB against 1.0 MB, on a local socket.
"""

from __future__ import annotations

import dataclasses
import json
from array import array
from typing import Any, Union

from pysampler.heap_profile import COLUMNS as HEAP_COLUMNS
from pysampler.heap_profile import HeapMetadata, HeapProfile
from pysampler.profile import SAMPLE_COLUMNS, TREE_COLUMNS, Frame, Metadata, Profile, ThreadInfo

AnyProfile = Union[Profile, HeapProfile]

#: a Profile's columns; a HeapProfile's but ``pid`` (a member sends its own)
_CPU_COLUMNS = (*TREE_COLUMNS, *SAMPLE_COLUMNS)
_HEAP_COLUMNS = tuple(name for name in HEAP_COLUMNS if name != "pid")
_TYPECODES = {4: "i", 8: "q"}


def encode(profile: AnyProfile) -> bytes:
    """The profile's tables as bytes for :func:`decode`."""
    heap = isinstance(profile, HeapProfile)
    names = _HEAP_COLUMNS if heap else _CPU_COLUMNS
    views = [memoryview(profile.column(name)) for name in names]
    head: dict[str, Any] = {
        "kind": "heap" if heap else "cpu",
        "frames": [list(f) for f in profile.frames],
        "metadata": dataclasses.asdict(profile.metadata),
        "columns": [[name, v.itemsize, v.nbytes] for name, v in zip(names, views)],
    }
    if isinstance(profile, HeapProfile):
        head["view"] = profile.view
    else:
        head["threads"] = [list(t) for t in profile.threads]
    text = json.dumps(head, separators=(",", ":")).encode()
    return b"".join([len(text).to_bytes(4, "little"), text, *(v.cast("B") for v in views)])


def decode(data: bytes) -> AnyProfile:
    """A Profile or HeapProfile from :func:`encode`'s bytes.

    Raises:
        ValueError: the bytes are not a well-formed profile.
    """
    try:
        size = int.from_bytes(data[:4], "little")
        head = json.loads(data[4 : 4 + size])
        pos = 4 + size
        columns: dict[str, array[int]] = {}
        for name, itemsize, nbytes in head["columns"]:
            col = array(_TYPECODES[itemsize])
            col.frombytes(data[pos : pos + nbytes])
            if len(col) * itemsize != nbytes:
                raise ValueError(f"column {name} is cut short")
            columns[name] = col
            pos += nbytes
        frames = [Frame(*f) for f in head["frames"]]
        meta = dict(head["metadata"])
        meta["notes"] = tuple(meta.get("notes", ()))
        c = columns
        if head["kind"] == "heap":
            return HeapProfile(
                frames,
                c["stack_parent"],
                c["stack_frame"],
                c["stack"],
                c["size"],
                c["alloc_count"],
                c["inuse_count"],
                HeapMetadata(**meta),
                head["view"],
            )
        return Profile(
            frames,
            c["stack_parent"],
            c["stack_frame"],
            c["stack"],
            c["thread"],
            c["time_ns"],
            c["cpu_ns"],
            c["wall_ns"],
            [ThreadInfo(*t) for t in head["threads"]],
            Metadata(**meta),
            count=c["count"],
        )
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a profile ({type(exc).__name__}: {exc})") from None
