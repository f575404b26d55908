"""``pysampler top URL``: a live view of a running service, through its
profiling endpoint.

About once a second a background thread takes a short profile of the
service (``/profile/cpu?duration=1&format=pprof``, one timed request, so
the service holds a session only while a request is open) and reads it
back with our pprof reader. The view ranks functions by their self and
total share over the last interval and since the view started, and shows
the sampling rate the service delivered and what sampling cost it (the
time its sampler spent recording, from the profile's metadata).

On a terminal the view is full-screen (curses, plain ASCII, fits 80x24;
keys below); otherwise, or with ``--plain``, a table is printed per
interval. Quitting (``q``, Ctrl-C) cancels the request in flight, which
ends the service's session at once.

Profiles of several processes (samples labelled ``pid``) get a ``PID``
column; ``--pid N`` asks the endpoint for those processes only (and
filters here too, so it also works against a single-process endpoint).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from pysampler import formats, remote
from pysampler.cli import CommandError, _isatty
from pysampler.profile import Profile, function_stats

#: seconds between a failed request and the next try
RETRY_DELAY = 1.0
#: what the key line says; the keys are handled in :meth:`View.key`
KEYS = "q quit  p pause  m cpu/wall  s/t sort self/total  a last/all  g by pid  r reset"

#: name prefix of the endpoint's threads, left out of the view
ENDPOINT_THREADS = "pysampler-http"
#: (pid, function, file, first line): a row of the view; pid 0 = merged
Key = tuple[int, str, str, int]


@dataclass
class Tally:
    """Self and total value per (pid, function), and the total per pid."""

    self_ns: dict[Key, float] = field(default_factory=dict)
    total_ns: dict[Key, float] = field(default_factory=dict)
    pid_total: dict[int, float] = field(default_factory=dict)

    @classmethod
    def of(cls, profile: Profile) -> Tally:
        """The tally of one profile, per process."""
        out = cls()
        if not profile.sample_count:
            return out
        pids = sample_pids(profile)
        values = profile.values
        # as Profile.top ranks them: asyncio waits under the coroutine that
        # waits, a task awaiting another not counted twice
        ranked, counted = profile.ranked()
        stack = np.frombuffer(ranked, dtype=np.int32)
        theirs = service_samples(profile) & (np.frombuffer(counted, dtype=np.int32) != 0)
        parents, node_frames = profile.column("stack_parent"), profile.column("stack_frame")
        for pid in np.unique(pids[theirs]).tolist():
            mask = (pids == pid) & theirs
            out.pid_total[pid] = float(values[mask].sum())
            for row in function_stats(
                profile.frames,
                parents,
                node_frames,
                _column("i", stack[mask]),
                _column("q", values[mask]),
                _column("q", profile.count[mask]),
            ):
                key = (pid, row.function, row.filename, row.first_line)
                out.self_ns[key] = row.self_value
                out.total_ns[key] = row.total_value
        return out

    def add(self, other: Tally) -> None:
        _add(self.self_ns, other.self_ns)
        _add(self.total_ns, other.total_ns)
        _add(self.pid_total, other.pid_total)

    def select(self, pid: int | None, by_pid: bool) -> Tally:
        """Only process ``pid`` (None: all), with rows per process or merged."""
        out = Tally()
        keep = (lambda p: p == pid) if pid is not None else (lambda p: True)
        for mine, theirs in ((out.self_ns, self.self_ns), (out.total_ns, self.total_ns)):
            for key, value in theirs.items():
                if keep(key[0]):
                    k = key if by_pid else (0, *key[1:])
                    mine[k] = mine.get(k, 0.0) + value
        for p, value in self.pid_total.items():
            if keep(p):
                out.pid_total[p] = value
        return out

    @property
    def total(self) -> float:
        return sum(self.pid_total.values())


def _add(into: dict[Any, float], more: dict[Any, float]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0.0) + value


def _column(typecode: str, values: np.ndarray[Any, Any]) -> array.array[int]:
    """A numpy column as the ``array.array`` the Profile layer takes."""
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values, dtype=np.dtype(typecode)).tobytes())
    return out


def service_samples(profile: Profile) -> np.ndarray[Any, Any]:
    """Which samples are the service's own: the endpoint's threads (waiting
    for the window to end, writing the answer) are the profiler's."""
    ours = [i for i, t in enumerate(profile.threads) if t.name.startswith(ENDPOINT_THREADS)]
    keep: np.ndarray[Any, Any] = ~np.isin(profile.thread, ours)
    return keep


def sample_pids(profile: Profile) -> np.ndarray[Any, Any]:
    """The process of each sample: its thread's ``pid`` (set when the
    profile covers several processes), else the profile's own."""
    own = profile.metadata.pid
    per_thread = np.array(
        [getattr(t, "pid", 0) or own for t in profile.threads] or [own], dtype=np.int64
    )
    pids: np.ndarray[Any, Any] = per_thread[profile.thread]
    return pids


@dataclass
class Snapshot:
    """One interval's profile, reduced to what the view shows."""

    mode: str
    tally: Tally
    duration: float
    samples: int
    threads: int
    hz_requested: float
    hz_delivered: float
    sampling_ns: int
    #: seconds from the end of the profile's window to the answer's arrival
    reply_after: float
    received: float

    @classmethod
    def of(cls, mode: str, profile: Profile, reply_after: float) -> Snapshot:
        m = profile.metadata
        theirs = service_samples(profile)
        return cls(
            mode=mode,
            tally=Tally.of(profile),
            duration=m.duration,
            samples=int(theirs.sum()),
            threads=sum(
                not profile.threads[i].is_pseudo for i in np.unique(profile.thread[theirs]).tolist()
            ),
            hz_requested=m.hz_requested,
            hz_delivered=m.hz_delivered,
            sampling_ns=m.sampling_ns,
            reply_after=max(0.0, reply_after),
            received=time.time(),
        )

    @property
    def overhead(self) -> float | None:
        """Share of one core the service's sampler spent recording, or None
        when the profile does not say."""
        if not self.sampling_ns or self.duration <= 0:
            return None
        return self.sampling_ns / (self.duration * 1e9)


@dataclass
class Failure:
    """A request that failed; fatal ones end the view."""

    message: str
    fatal: bool


Result = Union[Snapshot, Failure]


@dataclass
class Row:
    pid: int
    function: str
    filename: str
    first_line: int
    last_self: float
    last_total: float
    all_self: float
    all_total: float


class View:
    """What the screen shows, and what the keys change. No I/O here."""

    def __init__(self, where: str, mode: str, pid: int | None = None) -> None:
        self.where = where
        self.mode = mode
        self.paused = False
        self.sort = "self"  # or "total"
        self.basis = "last"  # or "all": since the view started
        self.by_pid = True  # rows per process when there are several
        self.pid = pid  # show this process only
        self.last: dict[str, Snapshot] = {}
        self.cumulative: dict[str, Tally] = {}
        self.intervals: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.error: str | None = None
        self.started = time.time()

    # -- data --------------------------------------------------------
    def apply(self, result: Result) -> None:
        if isinstance(result, Failure):
            self.error = result.message
            return
        self.error = None
        mode = result.mode
        self.last[mode] = result
        self.cumulative.setdefault(mode, Tally()).add(result.tally)
        self.intervals[mode] = self.intervals.get(mode, 0) + 1
        self.seconds[mode] = self.seconds.get(mode, 0.0) + result.duration

    def reset(self) -> None:
        self.cumulative.pop(self.mode, None)
        self.intervals.pop(self.mode, None)
        self.seconds.pop(self.mode, None)

    def pids(self) -> list[int]:
        tally = self.cumulative.get(self.mode)
        return sorted(tally.pid_total) if tally else []

    @property
    def several(self) -> bool:
        return len(self.pids()) > 1

    def rows(self) -> list[Row]:
        """Every function seen in this mode, in the chosen order; shares in %."""
        by_pid = self.by_pid and self.several and self.pid is None
        snap = self.last.get(self.mode)
        last = snap.tally.select(self.pid, by_pid) if snap else Tally()
        everything = self.cumulative.get(self.mode, Tally()).select(self.pid, by_pid)
        lt, at = last.total, everything.total

        def pct(value: float, of: float) -> float:
            return 100.0 * value / of if of > 0 else 0.0

        rows = [
            Row(
                key[0],
                key[1],
                key[2],
                key[3],
                pct(last.self_ns.get(key, 0.0), lt),
                pct(last.total_ns.get(key, 0.0), lt),
                pct(everything.self_ns.get(key, 0.0), at),
                pct(everything.total_ns.get(key, 0.0), at),
            )
            for key in everything.total_ns
        ]
        basis = "last_" if self.basis == "last" else "all_"
        then = "total" if self.sort == "self" else "self"
        other = ("all_" if self.basis == "last" else "last_") + self.sort
        rows.sort(
            key=lambda r: (
                -getattr(r, basis + self.sort),
                -getattr(r, basis + then),
                -getattr(r, other),
                r.function,
            )
        )
        return rows

    # -- keys --------------------------------------------------------
    def key(self, ch: str) -> str | None:
        """Apply a key; returns "quit", "mode" (switched), "pause" (toggled) or None."""
        if ch in ("q", "Q"):
            return "quit"
        if ch in ("p", " "):
            self.paused = not self.paused
            return "pause"
        if ch == "m":
            self.mode = "wall" if self.mode == "cpu" else "cpu"
            return "mode"
        if ch == "s":
            self.sort = "self"
        elif ch == "t":
            self.sort = "total"
        elif ch == "a":
            self.basis = "all" if self.basis == "last" else "last"
        elif ch == "g":
            self.by_pid = not self.by_pid
        elif ch == "r":
            self.reset()
        return None

    # -- text --------------------------------------------------------
    def header(self) -> list[str]:
        """The lines above the table: what is watched and how it is sampled."""
        state = "paused" if self.paused else "live"
        what = f"pid {self.pid}" if self.pid is not None else ""
        title = f"pysampler top {self.where} - {self.mode} - {state}"
        if what:
            title += f" - {what}"
        snap = self.last.get(self.mode)
        if snap is None:
            facts = "waiting for the first profile..."
            rate = ""
        else:
            seconds = snap.tally.total / 1e9
            if self.mode == "cpu":
                used = f"{seconds / snap.duration:.2f} cores" if snap.duration > 0 else "0 cores"
            else:
                used = f"{seconds:.1f} s wall"
            pids = sorted(snap.tally.pid_total)
            facts = (
                f"last {snap.duration:.1f} s: {used}, {snap.samples} samples, "
                f"{_plural(snap.threads, 'thread')}"
                + (f", {len(pids)} processes" if len(pids) > 1 else "")
                + (f", pid {pids[0]}" if len(pids) == 1 and pids[0] else "")
            )
            overhead = snap.overhead
            cost = f"sampler {100 * overhead:.2f}% of a core" if overhead is not None else ""
            rate = (
                f"sampling {snap.hz_delivered:.0f} Hz ({snap.hz_requested:g} asked)"
                + (f", {cost}" if cost else "")
                + f", reply +{1000 * snap.reply_after:.0f} ms"
            )
        n = self.intervals.get(self.mode, 0)
        basis = "over the last interval" if self.basis == "last" else "since start"
        seconds = self.seconds.get(self.mode, 0.0)
        since = (
            f"since start: {_plural(n, 'interval')}, {seconds:.0f} s; sorted by {self.sort} {basis}"
        )
        return [title, facts, rate, since]

    def table(self, width: int | None, limit: int) -> list[str]:
        """The column heads and up to ``limit`` rows, each at most ``width``
        wide (None: as wide as the names and paths need)."""
        show_pid = self.several and self.by_pid and self.pid is None
        rows = self.rows()[: max(0, limit)]
        pid_w = 8 if show_pid else 0
        numbers = 32  # "  SELF  TOTAL |   SELF  TOTAL | "
        if width is None:
            fn_w = min(60, max([8, *(len(r.function) for r in rows)]))
            loc_w = max([8, *(len(_location(r)) for r in rows)])
        else:
            rest = max(10, width - pid_w - numbers)
            loc_w = min(30, rest // 3) if rest >= 40 else 0
            fn_w = rest - loc_w - (1 if loc_w else 0)
        heads = [
            " " * pid_w + f"{'last interval':^13} | {'since start':^13} |",
            ("     PID" if show_pid else "")
            + f"{_head('SELF', self, 'last', 'self')} {_head('TOTAL', self, 'last', 'total')} | "
            + f"{_head('SELF', self, 'all', 'self')} {_head('TOTAL', self, 'all', 'total')} | "
            + "FUNCTION".ljust(fn_w)
            + (" LOCATION" if loc_w else ""),
        ]
        lines = []
        for row in rows:
            text = (f"{row.pid:>7} " if show_pid else "") + (
                f"{row.last_self:6.1f} {row.last_total:6.1f} | "
                f"{row.all_self:6.1f} {row.all_total:6.1f} | "
            )
            text += _fit(row.function, fn_w).ljust(fn_w)
            if loc_w:
                text += " " + _fit_location(row, loc_w)
            lines.append(text.rstrip())
        if width is None:
            return heads + lines
        return [h[:width] for h in heads] + [ln[:width] for ln in lines]


def _head(label: str, view: View, basis: str, sort: str) -> str:
    mark = "*" if (view.basis, view.sort) == (basis, sort) else ""
    return (mark + label).rjust(6)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _location(row: Row) -> str:
    if not row.filename:
        return ""
    return f"{os.path.normpath(row.filename)}:{row.first_line}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def _fit_location(row: Row, width: int) -> str:
    """file:line in ``width``: the whole path if it fits, else the file's
    name (what matters most), else its end."""
    text = _location(row)
    if len(text) > width:
        text = f"{os.path.basename(row.filename)}:{row.first_line}"
    return text if len(text) <= width else "..." + text[len(text) - width + 3 :]


# -- fetching ---------------------------------------------------------------


@dataclass
class Options:
    interval: float
    hz: float | None
    asyncio: bool
    pids: list[int]


class Fetcher:
    """Takes one profile after another in a background thread and puts a
    :class:`Snapshot` (or a :class:`Failure`) on ``results`` for each."""

    def __init__(self, endpoint: remote.Endpoint, options: Options, mode: str) -> None:
        self.endpoint = endpoint
        self.options = options
        self.mode = mode
        self.paused = False
        self.results: queue.Queue[Result] = queue.Queue()
        #: whether to send pid= (dropped if the endpoint does not take it)
        self.send_pids = bool(options.pids)
        self._lock = threading.Lock()
        self._request: remote.Request | None = None
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pysampler-top", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def params(self, mode: str) -> list[tuple[str, str]]:
        opts = self.options
        params = [("duration", remote.plain_number(opts.interval)), ("mode", mode)]
        if opts.hz is not None:
            params.append(("hz", remote.plain_number(opts.hz)))
        if opts.asyncio and mode == "wall":
            params.append(("asyncio", "1"))
        params.append(("format", "pprof"))
        if self.send_pids:
            params += [("pid", str(p)) for p in opts.pids]
        return params

    def _loop(self) -> None:
        while not self._stopping:
            if self.paused:
                self._wake.wait()
                self._wake.clear()
                continue
            mode = self.mode
            request = remote.Request(
                self.endpoint, "/profile/cpu", self.params(mode), self.options.interval
            )
            with self._lock:
                if self._stopping:
                    return
                self._request = request
            began = time.monotonic()
            try:
                body = request.send()
            except remote.Cancelled:
                continue
            except remote.EndpointError as exc:
                if exc.parameter == "pid" and exc.status == 400 and self.send_pids:
                    # an endpoint that takes no pid= at all: filter here instead
                    self.send_pids = False
                    continue
                self.results.put(Failure(str(exc), fatal=not exc.retry))
                if not exc.retry:
                    return
                self._wake.wait(RETRY_DELAY)
                self._wake.clear()
                continue
            finally:
                with self._lock:
                    self._request = None
            reply_after = time.monotonic() - began - self.options.interval
            try:
                profile = formats.read(body)
            except ValueError as exc:
                self.results.put(Failure(f"unreadable answer: {exc}", fatal=True))
                return
            if not isinstance(profile, Profile):
                self.results.put(Failure("the endpoint answered with a heap profile", True))
                return
            self.results.put(Snapshot.of(mode, profile, reply_after))

    def _interrupt(self) -> None:
        with self._lock:
            request = self._request
        if request is not None:
            request.cancel()
        self._wake.set()

    def set_mode(self, mode: str) -> None:
        """Profile in ``mode`` from now on (the request in flight is cancelled)."""
        self.mode = mode
        self._interrupt()

    def set_paused(self, paused: bool) -> None:
        """Pause (no request, so no session in the service) or resume."""
        self.paused = paused
        self._interrupt()

    def stop(self) -> None:
        """Cancel the request in flight (the service ends its session) and
        wait for the thread to finish."""
        with self._lock:
            self._stopping = True
        self._interrupt()
        self._thread.join(timeout=5.0)


# -- the command --------------------------------------------------------------


def run(args: argparse.Namespace, endpoint: remote.Endpoint) -> int:
    """``pysampler top URL``: returns the exit status (130 after Ctrl-C).

    Raises:
        CommandError: a failure retrying cannot mend (401, 400, 404, an
            unreadable answer).
    """
    if args.interval is None:
        args.interval = 1.0
    options = Options(args.interval, args.hz, args.asyncio, list(args.pid or ()))
    pid = options.pids[0] if len(options.pids) == 1 else None
    view = View(endpoint.display, args.mode, pid)
    fetcher = Fetcher(endpoint, options, args.mode)
    fetcher.start()
    try:
        if not args.plain and _isatty(sys.stdout) and _isatty(sys.stdin):
            try:
                return _full_screen(view, fetcher, args.count)
            except _NoTerminal:
                pass
        return _plain(view, fetcher, args.count, args.limit, options.pids)
    except KeyboardInterrupt:
        return 130
    finally:
        fetcher.stop()


def _keep(pids: Sequence[int], snap: Snapshot) -> Snapshot:
    """With ``--pid``: only those processes' samples (the endpoint may not filter)."""
    if not pids:
        return snap
    tally = Tally()
    for pid in pids:
        tally.add(snap.tally.select(pid, by_pid=True))
    snap.tally = tally
    return snap


def _plain(view: View, fetcher: Fetcher, count: int | None, limit: int, pids: Sequence[int]) -> int:
    shown = 0
    last_error = None
    while count is None or shown < count:
        result = fetcher.results.get()
        if isinstance(result, Failure):
            if result.fatal:
                raise CommandError(result.message)
            if result.message != last_error:
                print(f"pysampler: {result.message}; retrying", file=sys.stderr, flush=True)
            last_error = result.message
            continue
        last_error = None
        view.apply(_keep(pids, result))
        shown += 1
        print(_report(view, limit), flush=True)
    return 0


def _report(view: View, limit: int) -> str:
    """The plain-text table of one interval."""
    stamp = time.strftime("%H:%M:%S")
    head = view.header()
    lines = [f"[{stamp}] {head[0]}", *head[1:3]]
    lines += view.table(None, limit)
    return "\n".join(line for line in lines if line) + "\n"


class _NoTerminal(Exception):
    """curses cannot drive this terminal (TERM unknown or dumb)."""


def _full_screen(view: View, fetcher: Fetcher, count: int | None) -> int:
    import curses

    try:
        curses.setupterm()
    except curses.error:
        raise _NoTerminal from None
    outcome: list[int] = []
    curses.wrapper(lambda screen: outcome.append(_screen_loop(screen, view, fetcher, count)))
    return outcome[0] if outcome else 0


def _screen_loop(screen: Any, view: View, fetcher: Fetcher, count: int | None) -> int:
    import curses

    with contextlib.suppress(curses.error):
        curses.curs_set(0)
    screen.timeout(200)
    shown = 0
    dirty = True
    drawn_at = 0.0
    while True:
        while True:
            try:
                result = fetcher.results.get_nowait()
            except queue.Empty:
                break
            if isinstance(result, Failure) and result.fatal:
                raise CommandError(result.message)
            if isinstance(result, Snapshot):
                _keep(fetcher.options.pids, result)
                shown += 1
            view.apply(result)
            dirty = True
        if dirty or time.monotonic() - drawn_at >= 1.0:
            _draw(screen, view)
            dirty = False
            drawn_at = time.monotonic()
        if count is not None and shown >= count:
            return 0
        ch = screen.getch()
        if ch == -1:
            continue
        if ch == curses.KEY_RESIZE:
            dirty = True
            continue
        action = view.key(chr(ch) if 0 <= ch < 256 else "")
        if action == "quit":
            return 0
        if action == "mode":
            fetcher.set_mode(view.mode)
        elif action == "pause":
            fetcher.set_paused(view.paused)
        dirty = True


def _draw(screen: Any, view: View) -> None:
    import curses

    height, width = screen.getmaxyx()
    screen.erase()
    head = view.header()
    status = view.error or ""
    top = [
        (head[0] + time.strftime("  %H:%M:%S").rjust(max(0, width - len(head[0]) - 1)), "title"),
        (head[1], ""),
        (head[2], ""),
        (head[3], "dim"),
        (status, "error"),
    ]
    table = view.table(width - 1, max(0, height - len(top) - 3))
    lines = top + [(table[0], "dim"), (table[1], "head")] + [(ln, "") for ln in table[2:]]
    attrs = {
        "title": curses.A_REVERSE | curses.A_BOLD,
        "head": curses.A_REVERSE,
        "error": curses.A_BOLD,
        "dim": curses.A_DIM,
        "": curses.A_NORMAL,
    }
    for y, (text, kind) in enumerate(lines[: max(0, height - 1)]):
        _put(
            screen,
            y,
            text.ljust(width - 1) if kind in ("title", "head") else text,
            width,
            attrs[kind],
        )
    _put(screen, height - 1, KEYS, width, curses.A_DIM)
    screen.refresh()


def _put(screen: Any, y: int, text: str, width: int, attr: int) -> None:
    import curses

    # never the last column: writing there on the last line is an error
    with contextlib.suppress(curses.error):
        screen.addnstr(y, 0, text, max(0, width - 1), attr)
