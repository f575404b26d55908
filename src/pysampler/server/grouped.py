"""The routes' side of process groups: ``?pid=N`` and answering a request
that concerns other processes of the group (pysampler.group does the
work; this module turns it into HTTP answers).

Requests reach this module only from the route handlers, after the
endpoint's checks (Host, cross-origin, token) and within its limits
(a handler thread from the listener, the sample budget, which a group
request shares among its processes). A request for this process alone,
in a group or not, is left to the lone-process routes, so a
single-process program behaves as without groups.
"""

from __future__ import annotations

import datetime
import html
import os
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from pysampler import formats
from pysampler.heap_profile import HeapProfile
from pysampler.server import limits, query
from pysampler.server.query import HttpError

if TYPE_CHECKING:
    from pysampler.group.leader import Endpoint, Merged
    from pysampler.server.routes import _Handler

_PID = re.compile(r"[0-9]{1,10}\Z")


def split_pids(query_text: str) -> tuple[list[int], str]:
    """The ``pid`` values of a query string (the one parameter that may be
    repeated) and the query string without them."""
    try:
        pairs = parse_qsl(query_text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return [], query_text  # query.parse answers it with a 400
    pids: list[int] = []
    rest = []
    for name, value in pairs:
        if name != "pid":
            rest.append((name, value))
            continue
        for part in value.split(","):
            if not _PID.match(part):
                raise HttpError(400, f"pid must be a process id, not {part[:40]!r}", "pid")
            if int(part) not in pids:
                pids.append(int(part))
    if not pids:
        return [], query_text
    return pids, urlencode(rest)


def endpoint(handler: _Handler) -> Endpoint | None:
    """The group's side of this endpoint, if it serves a group."""
    group = handler.server.group
    return None if group is None else group.endpoint()


def targets(handler: _Handler) -> list[int] | None:
    """The processes a profile request is for; None for this one alone.

    Raises:
        HttpError: 404 for a ``pid`` that is neither this process nor a
            member of its group.
    """
    group = endpoint(handler)
    if group is not None:
        return group.targets(handler.pids)
    own = os.getpid()
    others = [p for p in handler.pids if p != own]
    if others:
        raise HttpError(
            404, f"no process {others[0]} here; this endpoint profiles process {own}", "pid"
        )
    return None


def _send(handler: _Handler, merged: Merged, fmt: formats.Format, filename: str) -> None:
    handler._send_profile(merged.profile, fmt, filename, merged.headers())


def timed_cpu(
    handler: _Handler,
    pids: list[int],
    seconds: float,
    fields: dict[str, Any],
    fmt: formats.Format,
    filename: str | None,
) -> None:
    group = endpoint(handler)
    assert group is not None
    # every process samples the window: the budget is the request's, shared
    limits.sampling_budget(fields["hz"], seconds, "the window", len(pids))
    fields = {**fields, "max_samples": limits.member_samples(len(pids))}
    merged = group.timed("cpu", pids, seconds, fields, handler.connection, handler.server.closing)
    if merged is not None:
        name = filename or query.profile_filename("cpu", merged.started_unix, seconds, fmt)
        _send(handler, merged, fmt, name)


def timed_heap(
    handler: _Handler,
    pids: list[int],
    seconds: float,
    sample_bytes: float,
    view: str,
    fmt: formats.Format,
    filename: str | None,
) -> None:
    group = endpoint(handler)
    assert group is not None
    merged = group.timed(
        "heap",
        pids,
        seconds,
        {"sample_bytes": sample_bytes},
        handler.connection,
        handler.server.closing,
    )
    if merged is not None:
        assert isinstance(merged.profile, HeapProfile)
        merged.profile = merged.profile.with_view(view)
        name = filename or query.profile_filename("heap", merged.started_unix, seconds, fmt)
        _send(handler, merged, fmt, name)


def heap_now(handler: _Handler, pids: list[int], view: str, filename: str) -> None:
    group = endpoint(handler)
    assert group is not None
    try:
        merged = group.heap_now(pids)
    except HttpError as exc:
        if exc.status != 409:
            raise
        raise HttpError(
            409,
            "no heap profiling session is running in any process of the group: ask for a "
            "window with ?seconds=S, or start the program with PYSAMPLER_HEAP=1",
            pids=exc.body.get("pids", []),
        ) from None
    assert isinstance(merged.profile, HeapProfile)
    merged.profile = merged.profile.with_view(view)
    _send(handler, merged, formats.get("pprof"), filename)


def heap_snapshot(handler: _Handler, collect: bool) -> bool:
    """Answer /profile/heap_snapshot for another process of the group, named
    by ``?pid=N``; whether it did (False: this process's own, the default).
    Object graphs of several processes do not merge, so a snapshot is of
    one process.

    Raises:
        HttpError: 400 for more than one pid, 404 for one not in the group,
            and what the member answered instead of a snapshot.
    """
    if len(handler.pids) > 1:
        raise HttpError(
            400, "a heap snapshot is of one process: give one pid (or none, for this one)", "pid"
        )
    pids = targets(handler)
    group = endpoint(handler)
    if pids is None or group is None:
        return False
    started = int(time.time())
    answer = group.heap_snapshot(pids[0], collect, handler.connection)
    if answer is None:
        return True  # the client hung up
    head, call = answer
    try:
        handler._responded = True
        handler.send_response(200)
        length = int(head["length"])
        for name, value in (
            ("Content-Type", "application/json"),
            ("Content-Length", str(length)),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            (
                "Content-Disposition",
                f'attachment; filename="heap_{started}_pid{pids[0]}.heapsnapshot"',
            ),
            ("X-Pysampler-Pause-Ms", f"{float(head['pause_ms']):.1f}"),
            ("X-Pysampler-Nodes", str(int(head["nodes"]))),
            ("X-Pysampler-Edges", str(int(head["edges"]))),
            ("X-Pysampler-Pids", str(pids[0])),
        ):
            handler.send_header(name, value)
        handler.end_headers()
        call.copy_to(handler.wfile, length)
    finally:
        call.close()
    return True


def start(handler: _Handler, pids: list[int], fields: dict[str, Any]) -> None:
    group = endpoint(handler)
    assert group is not None
    n = len(pids)
    limit = limits.started_session_limit(fields["hz"], handler.server.max_duration, n)
    manual = group.start(pids, {**fields, "max_samples": limits.member_samples(n)}, limit)
    handler._send_json(
        200,
        {
            "status": "started",
            **fields,
            "started_at": manual.started_unix,
            "expires_in": limit,
            "pids": [c.pid for c in manual.calls],
            "missing": {str(p): why for p, why in manual.missing.items()},
            "stop": "/profile/cpu/stop",
            "cancel": "/profile/cancel",
        },
    )


def stop(handler: _Handler, fmt: formats.Format) -> bool:
    """Answer /profile/cpu/stop if a group session runs; whether one did."""
    group = endpoint(handler)
    if group is None or not group.manual_running:
        return False
    merged, elapsed = group.stop()
    _send(handler, merged, fmt, query.profile_filename("cpu", merged.started_unix, elapsed, fmt))
    return True


def cancel(handler: _Handler) -> bool:
    """Cancel the group's sessions started over HTTP; whether any ran."""
    group = endpoint(handler)
    return group is not None and group.cancel()


def index_html(handler: _Handler) -> str:
    """The index page's table of the group's processes ("" without a group)."""
    group = endpoint(handler)
    if group is None:
        return ""
    rows = []
    for m in group.members():
        when = m.get("start_time")
        started = (
            datetime.datetime.fromtimestamp(when, tz=datetime.timezone.utc).isoformat(
                timespec="seconds"
            )
            if isinstance(when, (int, float))
            else ""
        )
        role = str(m.get("role", "")) + (" (serves this port)" if m.get("leader") else "")
        rows.append(
            f"<tr><td>{int(m['pid'])}</td><td>{html.escape(started)}</td>"
            f"<td>{html.escape(role)}</td><td><code>{html.escape(str(m.get('command', '')))}"
            "</code></td></tr>\n"
        )
    return (
        "<h2>Processes of this group</h2>\n<p>Every profile covers all of them; "
        "add <code>&amp;pid=N</code> (repeatable) for some only; a heap snapshot is of "
        "this process, or of the one <code>pid=N</code> names.</p>\n"
        "<table>\n<tr><th>pid</th><th>started</th><th>role</th><th>command</th></tr>\n"
        f"{''.join(rows)}</table>\n"
    )
