"""Registry of output formats: each is a pure function Profile -> bytes.

Format modules are imported on first use, so importing pysampler does not
pay for formats nobody asked for.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pysampler.heap_profile import HeapProfile
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

    @property
    def readable(self) -> bool:
        """Whether pysampler can also read this format (see :func:`read`)."""
        return self.name in READABLE

    def read(self, data: bytes) -> Profile | HeapProfile:
        """Parse ``data`` written in this format; ValueError if it cannot be.
        Heap profiles (pprof heap, ``.heapprofile``) come back as HeapProfile."""
        if not self.readable:
            raise ValueError(f"pysampler cannot read {self.name} files")
        mod = importlib.import_module(self.module)
        reader: Callable[[bytes], Profile | HeapProfile] = mod.read
        return reader(data)


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

# Formats added after the first three, kept apart so the table above stays as it was.
FORMATS.update(
    (f.name, f)
    for f in (
        Format(
            "html",
            (".html", ".htm"),
            "pysampler.formats.html",
            "self-contained HTML flame graph (any browser, works offline from file://)",
        ),
        Format(
            "speedscope",
            (".speedscope.json", ".speedscope"),
            "pysampler.formats.speedscope",
            "speedscope JSON, one profile per thread (speedscope.app, npm speedscope)",
        ),
    )
)

#: formats whose module also has ``read(data: bytes) -> Profile``
READABLE: tuple[str, ...] = ("pprof", "cpuprofile")
#: ... and those whose ``read`` returns a HeapProfile
READABLE += ("heapprofile",)
#: a key only a sampling heap profile's nodes have (``.cpuprofile`` nodes
#: have ``hitCount`` instead)
_HEAP_NODE_KEY = re.compile(rb'"selfSize"\s*:')


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


def sniff(data: bytes) -> Format:
    """The readable format ``data`` looks like, from its first bytes (and,
    for JSON, whether its nodes have the ``selfSize`` of a heap profile).

    Raises:
        ValueError: the data is in no format pysampler reads.
    """
    head = data[:64].lstrip()
    if data[:2] == b"\x1f\x8b":
        return FORMATS["pprof"]  # gzip: pprof is the only gzip format we read
    if head.startswith(b"{") and _HEAP_NODE_KEY.search(data):
        return FORMATS["heapprofile"]
    if head.startswith(b"{"):
        return FORMATS["cpuprofile"]
    if data[:1] in (b"\x0a", b"\x12", b"\x1a", b"\x22", b"\x32"):
        return FORMATS["pprof"]  # uncompressed profile.proto starts with a field key
    raise ValueError(
        "not a profile pysampler can read (expected pprof, a Chrome .cpuprofile or .heapprofile)"
    )


def read(data: bytes, format: str | None = None) -> Profile | HeapProfile:
    """Parse a profile file's contents into a Profile, or a HeapProfile for
    heap profiles (pprof heap, ``.heapprofile``).

    Args:
        data: the file's bytes.
        format: ``"pprof"``, ``"cpuprofile"`` or ``"heapprofile"``; by
            default told from the data.

    Raises:
        ValueError: unknown format, or data that is not a valid profile.
    """
    fmt = get(format) if format is not None else sniff(data)
    return fmt.read(data)
