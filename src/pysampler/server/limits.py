"""How much of the program the endpoint may use: connections, threads, time
to send a request, and memory per profile. The program comes first, so
every resource a client can make the endpoint hold is bounded here, in one
place (docs/http-endpoint.md, "Limits", quotes these numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

#: sample rows one request's profile may hold, 128 MiB of them; more
#: samples than that are dropped and counted, as max_samples does for start()
MAX_REQUEST_SAMPLES = 4_000_000


@dataclass(frozen=True)
class Limits:
    """Bounds on what clients can make the endpoint hold."""

    #: requests being answered at once, each on a thread of its own (a
    #: timed profile holds one for its duration); one more gets a 503
    max_active: int = 16
    #: connections still sending their request line and headers; one more
    #: drops the one waiting longest. Each costs a socket and a buffer,
    #: not a thread, so a slow client holds no thread
    max_pending: int = 64
    #: seconds from accepting a connection to the end of its headers
    #: (a per-read timeout alone lets a client trickle one byte at a time)
    header_deadline: float = 10.0
    #: bytes of request line and headers; more gets a 431
    max_header_bytes: int = 16 * 1024
    #: connections the kernel queues before the endpoint accepts them
    backlog: int = 128
    #: seconds a client has to take each part of the answer
    send_timeout: float = 30.0


def sampling_budget(hz: float, seconds: float, what: str, processes: int = 1) -> None:
    """400 when ``hz`` for ``seconds`` in each of ``processes`` (a process
    group's members sample the same window) asks for more samples than one
    request may hold (each sampling event records at least one row)."""
    events = hz * seconds * processes
    if events > MAX_REQUEST_SAMPLES:
        # imported here: listening (which needs Limits) loads no profiler
        from pysampler import _sampler
        from pysampler.server.query import HttpError

        mib = MAX_REQUEST_SAMPLES * _sampler.SAMPLE_ROW_BYTES >> 20
        where = f" in each of {processes} processes" if processes > 1 else ""
        raise HttpError(
            400,
            f"{hz:g} Hz for {seconds:g} s ({what}){where} asks for up to {events:.0f} samples; "
            f"one request may take {MAX_REQUEST_SAMPLES} ({mib} MiB): lower hz or the duration"
            + (", or name fewer processes with pid=" if processes > 1 else ""),
            "hz",
            max_samples=MAX_REQUEST_SAMPLES,
        )


def member_samples(processes: int) -> int:
    """Sample rows each process of a group request may keep: an equal share
    of one request's, so the merged profile holds no more than a lone
    process's may."""
    return max(1, MAX_REQUEST_SAMPLES // max(1, processes))


def started_session_limit(hz: float, max_duration: float, processes: int = 1) -> float:
    """Seconds a session from /profile/cpu/start (in each of ``processes``)
    may run before it expires: ``max_duration``, or less at a rate that
    would fill the budget sooner."""
    return min(max_duration, MAX_REQUEST_SAMPLES / (hz * processes))
