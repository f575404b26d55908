"""Differential profiles: what changed between two profiles of one program.

Each profile is normalised by its own total, so profiles of different
lengths or rates compare: a function's share of BASE against its share of
NEW, in percentage points. Functions are matched by qualified name and file
(not by line, which an edit moves); the flame graph's call paths by their
sequence of functions from the root, across threads.

- :func:`changes` / :func:`table`: per function, self and total share in
  each profile and the change, biggest change first (``pysampler diff``,
  ``pysampler top --diff-base``).
- :func:`tree_data` / :func:`write_html`: the call tree of NEW (box widths
  from NEW) with each path's share in BASE, for the HTML flame graph page,
  which colours each box by the change (red grew, blue shrank).

Works on any two CPU or wall profiles, or any two heap profiles (in their
current view), whatever file format each was read from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Union

from pysampler.heap_profile import HeapProfile
from pysampler.profile import Frame, Profile

AnyProfile = Union[Profile, HeapProfile]
#: how functions are matched: (qualified name, file)
FunctionKey = tuple[str, str]
#: changes smaller than this (a share, 0.05 percentage points) print as 0.0
SHOWN_CHANGE = 0.0005


@dataclass(frozen=True)
class Change:
    """One function's shares (0 to 1) of each profile's total."""

    function: str
    filename: str
    first_line: int  #: in NEW, or in BASE for a function NEW lacks
    base_self: float
    new_self: float
    base_total: float
    new_total: float

    @property
    def self_change(self) -> float:
        return self.new_self - self.base_self

    @property
    def total_change(self) -> float:
        return self.new_total - self.base_total


def what(profile: AnyProfile) -> str:
    """What a profile's values measure: ``cpu``, ``wall``, ``heap inuse`` or
    ``heap alloc``; only profiles measuring the same thing compare well."""
    if isinstance(profile, HeapProfile):
        return f"heap {profile.view}"
    return profile.metadata.mode


def check(base: AnyProfile, new: AnyProfile) -> list[str]:
    """Warnings about comparing ``base`` with ``new``.

    Raises:
        ValueError: one is a heap profile and the other is not.
    """
    if isinstance(base, HeapProfile) != isinstance(new, HeapProfile):
        raise ValueError("cannot compare a heap profile with a CPU or wall profile")
    if what(base) != what(new):
        return [f"BASE measures {what(base)} and NEW {what(new)}: shares compare, values do not"]
    return []


def _stacks(profile: AnyProfile) -> list[tuple[list[Frame], int, float]]:
    """(frames root first, sample count, value) per distinct stack, threads merged."""
    frames = profile.frames
    if isinstance(profile, HeapProfile):
        return [([frames[f] for f in path], n, v) for path, n, v in profile.stacks()]
    return [([frames[f] for f in path], n, float(v)) for _t, path, n, v in profile.stacks()]


def _key(frame: Frame) -> FunctionKey:
    return (frame.function, frame.filename)


def _shares(
    profile: AnyProfile,
) -> tuple[dict[FunctionKey, float], dict[FunctionKey, float], dict[FunctionKey, int]]:
    """Self and total share per function, and its first line."""
    selfs: dict[FunctionKey, float] = {}
    totals: dict[FunctionKey, float] = {}
    lines: dict[FunctionKey, int] = {}
    stacks = _stacks(profile)
    grand = sum(v for _f, _n, v in stacks)
    if grand <= 0:
        return selfs, totals, lines
    for frames, _n, value in stacks:
        if not frames or value <= 0:
            continue
        share = value / grand
        leaf = _key(frames[-1])
        selfs[leaf] = selfs.get(leaf, 0.0) + share
        for key in {_key(f) for f in frames}:  # once per stack, however deep it recurses
            totals[key] = totals.get(key, 0.0) + share
        for f in frames:
            lines.setdefault(_key(f), f.first_line)
    return selfs, totals, lines


def changes(base: AnyProfile, new: AnyProfile) -> list[Change]:
    """Every function of either profile with its shares, biggest change
    first: the larger of its self and total change, then the self change
    (so a function that grew comes before the callers that grew with it).

    Args:
        base: the profile compared against (before).
        new: the profile looked at (after).
    """
    b_self, b_total, b_lines = _shares(base)
    n_self, n_total, n_lines = _shares(new)
    out = [
        Change(
            key[0],
            key[1],
            n_lines.get(key, b_lines.get(key, 0)),
            b_self.get(key, 0.0),
            n_self.get(key, 0.0),
            b_total.get(key, 0.0),
            n_total.get(key, 0.0),
        )
        for key in {**b_total, **n_total}
    ]
    out.sort(
        key=lambda c: (
            -round(max(abs(c.self_change), abs(c.total_change)), 9),
            -abs(c.self_change),
            c.function,
            c.filename,
        )
    )
    return out


def _describe(label: str, profile: AnyProfile) -> str:
    if isinstance(profile, HeapProfile):
        total = float(profile.values.sum())
        samples = int(profile.counts.sum())
        amount = f"{total / 1048576:.1f} MiB {'in use' if profile.view == 'inuse' else 'allocated'}"
    else:
        total = float(profile.total_ns)
        samples = profile.sample_count
        amount = f"{total / 1e9:.2f} s {'CPU' if profile.mode == 'cpu' else 'wall'} time"
    return f"{label}: {amount}, {samples} samples"


def table(
    base: AnyProfile,
    new: AnyProfile,
    limit: int = 20,
    base_name: str = "BASE",
    new_name: str = "NEW",
) -> str:
    """A text table of the ``limit`` functions whose share changed most.

    Args:
        base: the profile compared against.
        new: the profile looked at.
        limit: rows to show at most.
        base_name: how to call BASE in the heading (a file name).
        new_name: how to call NEW.
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    lines = [
        f"pysampler diff: each function's share of its profile's total ({what(new)})",
        _describe(f"BASE {base_name}", base),
        _describe(f"NEW  {new_name}", new),
        *(f"warning: {w}" for w in check(base, new)),
    ]
    rows = [
        c
        for c in changes(base, new)
        if abs(c.self_change) >= SHOWN_CHANGE or abs(c.total_change) >= SHOWN_CHANGE
    ]
    if not rows:
        lines.append("no change: no function's share moved by 0.05 percentage points or more")
        return "\n".join(lines)
    lines.append(f"{'self %':^23}  {'total %':^23}  (change in percentage points, NEW - BASE)")
    lines.append(
        f"{'base':>7}{'new':>7}{'change':>9}  {'base':>7}{'new':>7}{'change':>9}  "
        f"{'function':<40} location"
    )
    for c in rows[:limit]:
        where = f"{os.path.normpath(c.filename)}:{c.first_line}" if c.filename else ""
        lines.append(
            f"{100 * c.base_self:7.1f}{100 * c.new_self:7.1f}{100 * c.self_change:+9.1f}  "
            f"{100 * c.base_total:7.1f}{100 * c.new_total:7.1f}{100 * c.total_change:+9.1f}  "
            f"{c.function:<40} {where}"
        )
    if len(rows) > limit:
        more = len(rows) - limit
        lines.append(
            f"({more} more {'function' if more == 1 else 'functions'} changed; -n shows more)"
        )
    return "\n".join(lines)


def tree_data(
    base: AnyProfile, new: AnyProfile, base_name: str = "BASE", new_name: str = "NEW"
) -> dict[str, Any]:
    """The differential call tree, as JSON-ready data for the flame graph page.

    Node 0 is the root (all threads merged); further nodes are call paths of
    NEW, ``fn`` indexing ``functions`` ([name, file, first line]). Per node:
    ``value``/``samples``/``self`` are NEW's total, sample count and self
    value; ``base``/``baseSelf`` the same path's total and self value in
    BASE (0 where BASE never took it); ``gone`` BASE's value in calls from
    this path that NEW never made. Shares are each value over its root's
    (``value[0]``, ``base[0]``). Children come heaviest first in NEW.
    """
    warnings = check(base, new)
    functions: dict[FunctionKey, int] = {}
    lines: list[int] = []
    parent = [-1]
    fn = [-1]
    value = [0.0]
    samples = [0]
    own = [0.0]
    children: dict[tuple[int, int], int] = {}
    for frames, count, weight in _stacks(new):
        if weight <= 0:
            continue
        node = 0
        value[0] += weight
        samples[0] += count
        for frame in frames:
            key = _key(frame)
            f = functions.get(key)
            if f is None:
                f = functions[key] = len(functions)
                lines.append(frame.first_line)
            child = children.get((node, f))
            if child is None:
                child = children[(node, f)] = len(parent)
                parent.append(node)
                fn.append(f)
                value.append(0.0)
                samples.append(0)
                own.append(0.0)
            node = child
            value[node] += weight
            samples[node] += count
        own[node] += weight

    n = len(parent)
    base_value = [0.0] * n
    base_own = [0.0] * n
    gone = [0.0] * n
    for frames, _count, weight in _stacks(base):
        if weight <= 0:
            continue
        node = 0
        base_value[0] += weight
        for frame in frames:
            f = functions.get(_key(frame))
            child = children.get((node, f)) if f is not None else None
            if child is None:
                gone[node] += weight
                break
            node = child
            base_value[node] += weight
        else:
            base_own[node] += weight

    # renumber so that parents come first and children heaviest first
    kids: dict[int, list[int]] = {}
    for node in range(1, n):
        kids.setdefault(parent[node], []).append(node)
    order = [0]
    for node in order:  # grows while iterating: a breadth-first walk
        order.extend(sorted(kids.get(node, ()), key=lambda c: -value[c]))
    new_id = {old: i for i, old in enumerate(order)}
    unit = "ns"
    if isinstance(new, HeapProfile):
        unit = "bytes"
    names = {"cpu": "CPU time", "wall": "wall time"}
    heap_names = {"heap inuse": "in-use space", "heap alloc": "allocated space"}
    return {
        "kind": "diff",
        "mode": what(new),
        "unit": unit,
        "unitName": names.get(what(new)) or heap_names.get(what(new), what(new)),
        "newName": new_name,
        "baseName": base_name,
        "duration": round(new.metadata.duration, 3),
        "baseDuration": round(base.metadata.duration, 3),
        "baseSamples": _sample_count(base),
        "warnings": warnings,
        "threads": [],
        "functions": [[k[0], k[1], lines[i]] for i, k in enumerate(functions)],
        "parent": [new_id[parent[o]] if o else -1 for o in order],
        "fn": [fn[o] for o in order],
        "value": [round(value[o]) for o in order],
        "samples": [samples[o] for o in order],
        "self": [round(own[o]) for o in order],
        "base": [round(base_value[o]) for o in order],
        "baseSelf": [round(base_own[o]) for o in order],
        "gone": [round(gone[o]) for o in order],
    }


def _sample_count(profile: AnyProfile) -> int:
    if isinstance(profile, HeapProfile):
        return int(profile.counts.sum())
    return profile.sample_count


def write_html(
    base: AnyProfile, new: AnyProfile, base_name: str = "BASE", new_name: str = "NEW"
) -> bytes:
    """The self-contained HTML page of the differential flame graph."""
    from pysampler.formats import html

    return html.write_diff(tree_data(base, new, base_name, new_name))
