"""``pysampler record URL``: one profile of a live service, taken through
its profiling endpoint (docs/http-endpoint.md), written in any format.

The request is one timed GET (``/profile/cpu?duration=S`` or
``/profile/heap?duration=S``). Formats the endpoint writes itself (pprof,
``.cpuprofile``, collapsed stacks; pprof and ``.heapprofile`` for heap)
are asked for as such and written unchanged; the others (HTML,
speedscope) are converted here from pprof, so the service only ever
writes a compact file. While waiting, a progress line counts the seconds
on a terminal; Ctrl-C closes the connection, which ends the service's
session at once.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Union

from pysampler import formats, remote
from pysampler.cli import CommandError, _isatty, _write, _write_bytes
from pysampler.heap_profile import HeapProfile
from pysampler.profile import Profile

#: what the endpoint writes itself, per kind of profile
SERVED = {"cpu": ("pprof", "cpuprofile", "collapsed"), "heap": ("pprof", "heapprofile")}
#: seconds between two updates of the progress line
PROGRESS_EVERY = 0.25


def _check(args: argparse.Namespace) -> None:
    if args.heap:
        cpu_only = [f"--{n}" for n in ("hz",) if getattr(args, n) is not None]
        cpu_only += ["--asyncio"] * args.asyncio + ["--mode"] * (args.mode != "cpu")
        if cpu_only:
            raise CommandError(f"{cpu_only[0]} applies to CPU and wall profiles, not to --heap")
    else:
        if args.sample_bytes is not None:
            raise CommandError("--sample-bytes applies to heap profiles (--heap)")
        if args.view is not None:
            raise CommandError("--view applies to heap profiles (--heap)")


def request(args: argparse.Namespace, endpoint: remote.Endpoint, ask: str) -> remote.Request:
    """The request for the profile ``args`` describe, in format ``ask``."""
    params = [("duration", remote.plain_number(args.duration))]
    if args.heap:
        route = "/profile/heap"
        if args.sample_bytes is not None:
            params.append(("sample_bytes", str(args.sample_bytes)))
    else:
        route = "/profile/cpu"
        params.append(("mode", args.mode))
        if args.hz is not None:
            params.append(("hz", remote.plain_number(args.hz)))
        if args.asyncio:
            params.append(("asyncio", "1"))
    params.append(("format", ask))
    params += [("pid", str(p)) for p in args.pid or ()]
    return remote.Request(endpoint, route, params, args.duration)


def run(args: argparse.Namespace, endpoint: remote.Endpoint, fmt: formats.Format | None) -> int:
    """``pysampler record``: returns the exit status (130 when interrupted).

    Raises:
        CommandError: the profile could not be taken or written (one line).
    """
    _check(args)
    kind = "heap" if args.heap else "cpu"
    direct = fmt is not None and fmt.name in SERVED[kind] and args.view is None
    ask = fmt.name if direct and fmt is not None else "pprof"
    req = request(args, endpoint, ask)
    what = "heap" if args.heap else args.mode + (f", {args.hz:g} Hz" if args.hz else "")
    outcome: list[Union[bytes, BaseException]] = []

    def fetch() -> None:
        try:
            outcome.append(req.send())
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)

    worker = threading.Thread(target=fetch, name="pysampler-record", daemon=True)
    progress = _Progress(endpoint.display, what, args.duration, quiet=args.quiet)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(PROGRESS_EVERY)
            progress.show()
    except KeyboardInterrupt:
        req.cancel()
        worker.join(5.0)
        progress.clear()
        print("pysampler: cancelled; the service's session was ended", file=sys.stderr)
        return 130
    progress.clear()
    result = outcome[0]
    if isinstance(result, remote.EndpointError):
        if result.parameter == "pid" and result.status == 400:
            raise CommandError(
                f"{endpoint.display} profiles one process: it takes no pid= (drop --pid)"
            )
        raise CommandError(str(result))
    if isinstance(result, BaseException):
        raise result
    return _save(args, result, fmt, direct)


def _save(args: argparse.Namespace, body: bytes, fmt: formats.Format | None, direct: bool) -> int:
    profile: Profile | HeapProfile | None = None
    if not direct or (fmt is not None and fmt.readable):
        try:
            profile = formats.read(body)
        except ValueError as exc:
            raise CommandError(f"the endpoint's answer is not a profile ({exc})") from None
        if isinstance(profile, HeapProfile) and args.view:
            profile = profile.with_view(args.view)
    if fmt is None:
        assert profile is not None
        print(profile.top(args.limit))
        return 0
    if direct:
        _write_bytes(body, args.output)
    else:
        assert profile is not None
        _write(profile, args.output, fmt)
    if not args.quiet:
        print(f"pysampler: wrote {args.output} ({_summary(fmt, profile)})", file=sys.stderr)
    return 0


def _summary(fmt: formats.Format, profile: Profile | HeapProfile | None) -> str:
    if profile is None:
        return fmt.name
    samples = profile.sample_count if isinstance(profile, Profile) else int(profile.counts.sum())
    seconds = profile.metadata.duration
    return f"{fmt.name}, {samples} samples" + (f", {seconds:.2f} s" if seconds > 0 else "")


class _Progress:
    """The progress line on stderr: a counter on a terminal, one line otherwise."""

    def __init__(self, where: str, what: str, seconds: float, quiet: bool) -> None:
        self.where = where
        self.what = what
        self.seconds = seconds
        self.started = time.monotonic()
        self.tty = not quiet and _isatty(sys.stderr)
        self.shown = False
        if not quiet and not self.tty:
            print(
                f"pysampler: recording {where} for {seconds:g} s ({what})",
                file=sys.stderr,
                flush=True,
            )

    def show(self) -> None:
        if not self.tty:
            return
        elapsed = time.monotonic() - self.started
        if elapsed < self.seconds:
            text = f"recording {self.where} ({self.what}): {elapsed:5.1f} of {self.seconds:g} s"
        else:
            text = f"recording {self.where} ({self.what}): waiting for the profile"
        sys.stderr.write(f"\rpysampler: {text}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False
