"""Start pysampler's HTTP endpoint at interpreter start-up.

Imported by the one-line ``pysampler-hook.pth`` in site-packages, and only
when ``PYSAMPLER_PORT`` is set, so an interpreter started without it pays
for one dictionary look-up. Settings come from the environment:

- ``PYSAMPLER_PORT``: TCP port (0 picks a free one and prints it).
- ``PYSAMPLER_HOST``: address to bind (default ``127.0.0.1``).
- ``PYSAMPLER_TOKEN``: when set, requests need ``Authorization: Bearer <token>``.
- ``PYSAMPLER_ALLOWED_HOSTS``: comma-separated host names requests may
  address besides IP literals and ``localhost`` (``*``: any).
- ``PYSAMPLER_MAX_DURATION``: longest profile in seconds (default 600).
- ``PYSAMPLER_HEAP``: ``1`` keeps a heap profiling session running from
  start-up, for ``/debug/pprof/heap`` (default off).
- ``PYSAMPLER_HEAP_SAMPLE_BYTES``: mean bytes between heap samples (default
  524288).

The first process with ``PYSAMPLER_PORT`` founds a process group and
serves the port; processes that inherit its ``PYSAMPLER_GROUP`` join it
(see pysampler.group).

Nothing here may stop the program from starting: every failure becomes a
warning that names the port, and the program runs on without the endpoint.
It imports what listening needs, and typing (see _start), and nothing
more (see pysampler.server): an idle endpoint costs a process one thread,
about 1.7 MiB and a few ms (a group member that would not import typing
otherwise: 1.3 MiB and 10 ms more).
"""

import os
import sys


def _warn(message: str, outcome: str = "the profiling endpoint is off") -> None:
    text = f"pysampler: {message}; {outcome}"
    try:
        import warnings

        # No source line to point at: name the hook instead of this file.
        warnings.warn_explicit(text, RuntimeWarning, "<pysampler start-up hook>", 0)
    except Exception:
        # ``-W error`` turns the warning into an exception: say it plainly.
        try:
            sys.stderr.write(text + "\n")
        except Exception:
            return  # no stderr either: nowhere left to say it


def _start() -> None:
    port_text = os.environ.get("PYSAMPLER_PORT", "").strip()
    if not port_text:
        return
    host = os.environ.get("PYSAMPLER_HOST", "").strip() or "127.0.0.1"
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        _warn(f"PYSAMPLER_PORT={port_text!r} is not a port number (0-65535)")
        return
    max_text = os.environ.get("PYSAMPLER_MAX_DURATION", "").strip()
    try:
        max_duration = float(max_text) if max_text else 600.0
    except ValueError:
        _warn(f"PYSAMPLER_MAX_DURATION={max_text!r} is not a number of seconds")
        return
    token = os.environ.get("PYSAMPLER_TOKEN") or None
    allowed_hosts = [h for h in os.environ.get("PYSAMPLER_ALLOWED_HOSTS", "").split(",") if h]
    heap_text = os.environ.get("PYSAMPLER_HEAP", "").strip()
    if heap_text not in ("", "0", "1"):
        _warn(f"PYSAMPLER_HEAP={heap_text!r} is not 0 or 1")
        return
    rate_text = os.environ.get("PYSAMPLER_HEAP_SAMPLE_BYTES", "").strip()
    try:
        sample_bytes = int(rate_text) if rate_text else 512 * 1024
    except ValueError:
        _warn(f"PYSAMPLER_HEAP_SAMPLE_BYTES={rate_text!r} is not a whole number of bytes")
        return
    settings = {
        "host": host,
        "token": token,
        "max_duration": max_duration,
        "heap": heap_text == "1",
        "heap_sample_bytes": sample_bytes,
        "allowed_hosts": tuple(allowed_hosts),
    }
    group_dir = os.environ.get("PYSAMPLER_GROUP", "")
    try:
        # Our request threads import on first use, and a request can come
        # while the program's main thread is still importing (a fleet
        # profile reaching a worker that just started). A module in the
        # middle of its import is visible in sys.modules to every thread,
        # and dataclasses reads typing from there without importing it: a
        # spawned uvicorn worker died in @dataclass ("partially initialized
        # module 'typing'") while a profile request imported typing. Import
        # it here, before the program starts (the server's modules import it
        # anyway; a member pays about 10 ms and 1.3 MiB, none for a program
        # that imports typing itself, as web frameworks do).
        import typing  # noqa: F401

        server, founded = _serve(port, group_dir, settings)
    except OSError as exc:
        if type(exc).__name__ == "NotPrivate":
            _warn(f"cannot join the process group in {group_dir} ({exc})")
        else:
            _warn(f"cannot listen on {host} port {port} ({exc.strerror or exc})")
        return
    except Exception as exc:
        _warn(f"cannot start on {host} port {port} ({type(exc).__name__}: {exc})")
        return
    if server is not None and founded and port == 0:
        # The caller asked for any free port and has no other way to learn it.
        sys.stderr.write(f"pysampler: profiling endpoint on {server.url}\n")


def _serve(port: int, group_dir: str, settings: "dict[str, object]") -> "tuple[object, bool]":
    """Found a process group (serving the port), join the group named by
    ``PYSAMPLER_GROUP``, or, where groups are not supported (Windows),
    serve this process alone. Returns (the Server or None, founded)."""
    from pysampler import group

    if not group.supported():
        from pysampler.server import serve

        return serve(port, **settings), True
    from pysampler.group import member

    config = member.Settings(port, **settings)
    if group_dir:
        return member.join(group_dir, config), False
    try:
        return member.found(config), True
    except member.rundir.NotPrivate as exc:
        # e.g. another user made $TMPDIR/pysampler-<uid> first: no group,
        # but this process is still served
        _warn(f"cannot make a process group ({exc})", "serving this process alone")
        from pysampler.server import serve

        return serve(port, **settings), True


_start()
