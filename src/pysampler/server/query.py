"""Query parameters of the HTTP endpoint: parsed strictly, and every bad
value answered with a 400 naming the parameter."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import parse_qsl

from pysampler import _asyncio, _control, formats
from pysampler import heap as _heap
from pysampler.server import MAX_SAMPLE_BYTES, MIN_SAMPLE_BYTES

#: formats a heap profile can be written in
HEAP_FORMATS = ("heapprofile", "pprof")
# digits only, bounded: rejects "nan", "inf", "1e999", "0x10", "-1", " 5"
_NUMBER = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?\Z")


class HttpError(Exception):
    """An error answered as ``{"error": message[, "parameter": name]}``."""

    def __init__(
        self,
        status: int,
        message: str,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": message}
        if parameter is not None:
            self.body["parameter"] = parameter
        self.body.update(extra)
        self.headers = headers or {}


def parse(query: str, allowed: tuple[str, ...] | None) -> dict[str, str]:
    """Parse a query string; 400 on repeats, and on unknown names when
    ``allowed`` is given (a typo must not silently change a profile)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the query string is not valid UTF-8 form data") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise HttpError(400, f"{name} is given more than once", name)
        if allowed is not None and name not in allowed:
            raise HttpError(
                400,
                f"unknown parameter {name!r}; this path takes: {', '.join(allowed) or 'none'}",
                name,
            )
        out[name] = value
    return out


def number(params: dict[str, str], name: str, low: float, high: float, unit: str) -> float | None:
    """The parameter ``name`` as a number in [low, high]; None if absent."""
    text = params.get(name)
    if text is None:
        return None
    if not _NUMBER.match(text):
        raise HttpError(
            400, f"{name} must be a plain decimal number of {unit}, not {text[:40]!r}", name
        )
    value = float(text)
    if not (math.isfinite(value) and low <= value <= high):
        raise HttpError(400, f"{name} must be from {low:g} to {high:g} {unit}, not {text}", name)
    return value


def duration(
    params: dict[str, str], name: str, max_duration: float, default: float | None
) -> float:
    value = number(params, name, 0.0, math.inf, "seconds")
    if value is None:
        if default is None:
            raise HttpError(400, f"{name} is required (seconds to profile)", name)
        value = min(default, max_duration)
    if value <= 0:
        raise HttpError(400, f"{name} must be more than 0 seconds", name)
    if value > max_duration:
        raise HttpError(
            400,
            f"{name} must be at most {max_duration:g} seconds, this endpoint's maximum "
            f"(PYSAMPLER_MAX_DURATION, or serve(max_duration=...)), not {params[name]}",
            name,
        )
    return value


def rate(params: dict[str, str]) -> tuple[float, str]:
    """(hz, mode) from ``hz``, ``sampling_interval`` (microseconds) and ``mode``."""
    hz = number(params, "hz", _control.MIN_HZ, _control.MAX_HZ, "samples per second")
    interval = number(
        params, "sampling_interval", 1e6 / _control.MAX_HZ, 1e6 / _control.MIN_HZ, "microseconds"
    )
    if hz is not None and interval is not None and not math.isclose(hz, 1e6 / interval):
        raise HttpError(
            400,
            f"hz={params['hz']} and sampling_interval={params['sampling_interval']} disagree; "
            "give one of them",
            "sampling_interval",
        )
    if hz is None:
        hz = 1e6 / interval if interval is not None else float(_control.DEFAULT_HZ)
    mode = params.get("mode", "cpu")
    if mode not in _control.MODES:
        raise HttpError(
            400, f"mode must be one of {', '.join(_control.MODES)}, not {mode!r}", "mode"
        )
    return hz, mode


def flag(params: dict[str, str], name: str) -> bool:
    """A 0/1 parameter, 0 when absent."""
    value = params.get(name, "0")
    if value not in ("0", "1"):
        raise HttpError(400, f"{name} must be 0 or 1, not {value[:50]!r}", name)
    return value == "1"


def asyncio_flag(params: dict[str, str], mode: str) -> bool:
    """``asyncio=1``: also record where waiting asyncio tasks wait (wall mode)."""
    if not flag(params, "asyncio"):
        return False
    if mode != "wall":
        raise HttpError(400, "asyncio=1 needs mode=wall (a waiting task uses no CPU)", "asyncio")
    if not _asyncio.supported():
        raise HttpError(400, "asyncio=1 is not supported on this Python version", "asyncio")
    return True


def output_format(params: dict[str, str], default: str) -> formats.Format:
    name = params.get("format", default)
    try:
        return formats.get(name)
    except ValueError as exc:
        raise HttpError(400, str(exc), "format") from None


def sample_bytes(params: dict[str, str]) -> float:
    """Mean bytes between heap samples from ``sample_bytes``; Go's default if absent."""
    value = number(params, "sample_bytes", MIN_SAMPLE_BYTES, MAX_SAMPLE_BYTES, "bytes")
    return float(_heap.DEFAULT_SAMPLE_BYTES) if value is None else float(int(value))


def heap_format(params: dict[str, str]) -> formats.Format:
    fmt = output_format(params, "heapprofile")
    if fmt.name not in HEAP_FORMATS:
        raise HttpError(
            400,
            f"format must be one of {', '.join(HEAP_FORMATS)} for a heap profile, not {fmt.name!r}",
            "format",
        )
    return fmt


def seconds_label(seconds: float) -> str:
    # 5 -> "5", 0.25 -> "0.25", 12.3456 -> "12.3"
    return f"{seconds:.3g}" if seconds < 100 else str(round(seconds))


def profile_filename(kind: str, started_unix: float, seconds: float, fmt: formats.Format) -> str:
    """The download name of a profile: ``cpu_<unix>_<S>-seconds.pb.gz``."""
    return f"{kind}_{int(started_unix)}_{seconds_label(seconds)}-seconds{fmt.suffixes[0]}"
