"""speedscope's own file format (https://www.speedscope.app/file-format-schema.json).

One ``sampled`` profile per thread (named with its process's pid in a
profile of several processes), in nanoseconds, over a shared frame
table; frames are per function (name, file, first line), as in the
``.cpuprofile`` writer, so the flame chart merges a function's lines. A
thread's samples keep their time order, with consecutive identical stacks
merged (speedscope's time-order view merges them anyway), so the file
stays small on long runs. The heaviest thread is the one shown first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pysampler import _columns

if TYPE_CHECKING:
    from pysampler.profile import Profile

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def write(profile: Profile) -> bytes:
    """Serialise ``profile`` as a speedscope JSON file."""
    from pysampler import __version__

    frame_index: dict[tuple[str, str, int], int] = {}
    shared: list[dict[str, Any]] = []
    fn_of_frame = []
    for frame in profile.frames:
        key = frame.function_key
        if key not in frame_index:
            frame_index[key] = len(shared)
            entry: dict[str, Any] = {"name": frame.function}
            if frame.filename:
                entry["file"] = frame.filename
            if frame.first_line > 0:
                entry["line"] = frame.first_line
            shared.append(entry)
        fn_of_frame.append(frame_index[key])

    paths: dict[int, list[int]] = {}

    def path(node: int) -> list[int]:
        known = paths.get(node)
        if known is None:
            known = paths[node] = [fn_of_frame[f] for f in profile.stack_of(node)]
        return known

    profiles = []
    weights_of = []
    thread = profile.column("thread")
    order = _columns.order_by(thread, profile.column("time_ns"))  # by thread, then time
    ordered_values = _columns.take(profile.column("values"), order)
    starts, _ = _columns.runs(_columns.take(thread, order), ordered_values)
    stacks = _columns.take(profile.column("stack"), order).tolist()
    values = ordered_values.tolist()
    bounds = [*starts, len(order)]
    for i, start in enumerate(starts):
        t = thread[order[start]]
        info, process = profile.threads[t], profile.process_of(t)
        samples: list[list[int]] = []
        merged: list[int] = []
        last = -2
        for node, weight in zip(stacks[start : bounds[i + 1]], values[start : bounds[i + 1]]):
            if weight <= 0:
                continue
            if node == last:
                merged[-1] += weight
            else:
                samples.append(path(node))
                merged.append(weight)
                last = node
        if not merged:
            continue
        total = int(sum(merged))
        profiles.append(
            {
                "type": "sampled",
                "name": (f"Process {process.pid} " if process else "") + f"Thread: {info.name}",
                "unit": "nanoseconds",
                "startValue": 0,
                "endValue": total,
                "samples": samples,
                "weights": merged,
            }
        )
        weights_of.append(total)

    meta = profile.metadata
    doc = {
        "$schema": SCHEMA,
        "name": f"pysampler {meta.mode} profile"
        + (f" ({meta.hz_requested:g} Hz)" if meta.hz_requested > 0 else ""),
        "exporter": f"pysampler {__version__}",
        "activeProfileIndex": weights_of.index(max(weights_of)) if weights_of else 0,
        "shared": {"frames": shared},
        "profiles": profiles,
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")
