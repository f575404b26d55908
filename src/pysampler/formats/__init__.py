"""Registry of output formats: each is a pure function Profile -> bytes.

Format modules are imported on first use, so importing pysampler does not
pay for formats nobody asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pysampler.profile import Profile


@dataclass(frozen=True)
class Format:
    """A file format pysampler writes."""

    name: str
    suffixes: tuple[str, ...]
    module: str
    description: str

    def write(self, profile: Profile) -> bytes:
        """Serialise ``profile``."""
        mod = importlib.import_module(self.module)
        writer: Callable[[Profile], bytes] = mod.write
        return writer(profile)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "pprof",
            (".pprof", ".pb.gz", ".pb"),
            "pysampler.formats.pprof",
            "gzip-compressed profile.proto (go tool pprof, Pyroscope, Grafana)",
        ),
        Format(
            "cpuprofile",
            (".cpuprofile",),
            "pysampler.formats.cpuprofile",
            "Chrome DevTools Profiler.Profile JSON (Chrome, VS Code, speedscope)",
        ),
        Format(
            "collapsed",
            (".collapsed", ".folded"),
            "pysampler.formats.collapsed",
            "collapsed stacks, one 'a;b;c count' line each (flamegraph.pl, speedscope)",
        ),
        Format(
            "heapprofile",
            (".heapprofile",),
            "pysampler.formats.heapprofile",
            "Chrome DevTools sampling heap profile JSON (heap profiles only)",
        ),
    )
}


def names() -> list[str]:
    """Names of every known format."""
    return sorted(FORMATS)


def get(name: str) -> Format:
    """The format called ``name``; ValueError naming the known ones if none."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown format {name!r}; known formats: {', '.join(names())}") from None


def for_path(path: str) -> Format:
    """The format a file name's suffix implies; ValueError if none does."""
    lower = path.lower()
    best: Format | None = None
    best_len = 0
    for fmt in FORMATS.values():
        for suffix in fmt.suffixes:
            if lower.endswith(suffix) and len(suffix) > best_len:
                best, best_len = fmt, len(suffix)
    if best is None:
        known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
        raise ValueError(
            f"cannot tell the format of {path!r} from its suffix; use one of {known} "
            f"or pass format= (one of: {', '.join(names())})"
        )
    return best
