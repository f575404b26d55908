"""Collapsed stacks (``root;caller;leaf 42``): flamegraph.pl, speedscope,
inferno and most flame-graph tools read it.

One line per distinct (thread, stack), the thread as the root frame (below
a ``Process <pid>: <role>`` frame in a profile of several processes). The
count is the profile's value in the unit most readers expect as a count:
milliseconds for CPU and wall time (rounded; a stack under half a
millisecond still counts as 1 so that it is not lost). Heap profiles
(:func:`write_heap`) count bytes of the profile's view, with no thread root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pysampler.profile import process_title

if TYPE_CHECKING:
    from pysampler.heap_profile import HeapProfile
    from pysampler.profile import Frame, Profile


def frame_label(frame: Frame) -> str:
    """A frame as one collapsed-stack element: ``name (file:line)``, with
    the separators the format reserves replaced."""
    label = frame.function
    if frame.filename:
        label += f" ({frame.filename}:{frame.line or frame.first_line})"
    return label.replace(";", ":").replace("\n", " ")


def write(profile: Profile) -> bytes:
    """Serialise ``profile`` as collapsed stacks, one line per stack."""
    out = []
    for thread, frames, _count, value in profile.stacks():
        root = profile.threads[thread].name.replace(";", ":").replace(" ", "_")
        names = [root, *(frame_label(profile.frames[f]) for f in frames)]
        process = profile.process_of(thread)
        if process is not None:
            names.insert(0, process_title(process).replace(";", ":"))
        ms = max(1, round(value / 1e6)) if value > 0 else 0
        if ms:
            out.append(f"{';'.join(names)} {ms}\n")
    return "".join(out).encode("utf-8")


def write_heap(profile: HeapProfile) -> bytes:
    """Serialise a heap profile's view (in use or allocated) as collapsed
    stacks, one line per allocating stack, counting estimated bytes."""
    out = []
    for frames, _count, value in profile.stacks():
        size = round(value)
        if size > 0:
            names = ";".join(frame_label(profile.frames[f]) for f in frames)
            out.append(f"{names or '(unknown)'} {size}\n")
    return "".join(out).encode("utf-8")
