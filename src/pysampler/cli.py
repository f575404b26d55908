"""The command line: ``pysampler run|convert|top|record|diff`` (also
``python -m pysampler``).

``run`` profiles a script or module as if Python ran it plainly: same
``sys.argv``, ``__main__``, ``sys.path[0]``, stdout and exit status; the
profile is written however the program ends (normally, by an exception, by
``sys.exit`` or by Ctrl-C). ``convert`` and ``top`` read pprof and
``.cpuprofile`` files, and heap profiles (pprof heap, ``.heapprofile``).
``top URL`` (cli_top.py) watches a live service through its profiling
endpoint, ``record URL`` (cli_record.py) takes one profile through it, and
``diff`` (diff.py) compares two profiles. Errors are one line on stderr and
a non-zero status.
"""

from __future__ import annotations

import _thread
import argparse
import array
import atexit
import builtins
import contextlib
import importlib.machinery
import importlib.util
import io
import os
import runpy
import signal
import sys
import time
import types
from collections.abc import Sequence
from typing import Any, NoReturn

import pysampler
from pysampler import _asyncio, _columns, _control, formats, remote
from pysampler.heap_profile import VIEWS, HeapProfile
from pysampler.profile import Profile

PROG = "pysampler"
EXIT_ERROR = 1
EXIT_USAGE = 2
#: seconds a run lasts before the status line appears (short runs stay quiet)
STATUS_AFTER = 1.0
STATUS_EVERY = 0.5


class CommandError(Exception):
    """A problem to report as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, not argparse's usage block: errors must be easy to read
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _format_list() -> str:
    rows = []
    for name in formats.names():
        fmt = formats.get(name)
        reads = ", readable" if fmt.readable else ""
        rows.append(f"  {name:<11} {' '.join(fmt.suffixes):<24} {fmt.description}{reads}")
    return "\n".join(rows)


def _hz(text: str) -> float:
    """``--hz``: a sampling rate, checked here so the message quotes the flag's text."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not _control.MIN_HZ <= value <= _control.MAX_HZ:  # false for nan too
        raise argparse.ArgumentTypeError(
            f"must be from {_control.MIN_HZ} to {_control.MAX_HZ} samples per second, not {text}"
        )
    return value


def _seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more, not {text}")
    return value


def _add_output_options(cmd: argparse.ArgumentParser, where: str) -> None:
    """``-o`` and ``--format`` of the commands that take a profile."""
    cmd.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the profile here; the format comes from the suffix "
        f"(without -o, a table of the hottest functions is printed{' ' + where if where else ''})",
    )
    cmd.add_argument(
        "--format", choices=formats.names(), help="output format, overriding the suffix"
    )


def _add_endpoint_options(cmd: Any, default_mode: str | None) -> None:
    """Options of the commands that profile through the endpoint (top URL, record)."""
    cmd.add_argument(
        "--mode",
        choices=_control.MODES,
        default=default_mode,
        help="cpu: CPU time per thread; wall: elapsed time of every thread "
        f"(default {default_mode or 'cpu; wall with --asyncio'})",
    )
    cmd.add_argument(
        "--hz",
        type=_hz,
        help=f"samples per second, {_control.MIN_HZ} to {_control.MAX_HZ} "
        f"(default: the endpoint's, {_control.DEFAULT_HZ})",
    )
    cmd.add_argument(
        "--asyncio",
        action="store_true",
        help="wall mode: also where each waiting asyncio task waits (docs/asyncio.md)",
    )
    cmd.add_argument(
        "--pid",
        type=int,
        action="append",
        metavar="PID",
        help="only this process of a group served by one endpoint (repeatable)",
    )
    cmd.add_argument(
        "--token",
        help=f"bearer token of a protected endpoint (default: ${remote.TOKEN_VARIABLE})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pysampler`` command."""
    fmt_class = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="A sampling profiler for Python programs.",
        epilog=f"formats (name, suffixes):\n{_format_list()}\n\n"
        "Run 'pysampler COMMAND --help' for a command's options.",
        formatter_class=fmt_class,
    )
    parser.add_argument("--version", action="version", version=f"pysampler {pysampler.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run a script or module under the profiler",
        description="Run a Python script (or -m module) under the profiler, as 'python' "
        "would run it, and write the profile when it ends, however it ends "
        "(normally, sys.exit, an exception, Ctrl-C). Options for pysampler go before "
        "the script; everything after the script (or after -m MODULE's first "
        "positional argument) is passed to the program. Use '--' before program "
        "arguments that start with '-' when using -m.",
        epilog="examples:\n"
        "  pysampler run -o profile.html myscript.py --its-args\n"
        "  pysampler run -m mypackage.cli -o out.pprof --mode wall --hz 500\n"
        "  pysampler run --duration 30 -o first30s.cpuprofile server.py\n\n"
        f"output formats (name, suffixes):\n{_format_list()}",
        formatter_class=fmt_class,
    )
    _add_output_options(run, "to stderr")
    run.add_argument(
        "--hz",
        type=_hz,
        default=_control.DEFAULT_HZ,
        help=f"samples per second, {_control.MIN_HZ} to {_control.MAX_HZ} "
        f"(default {_control.DEFAULT_HZ})",
    )
    run.add_argument(
        "--mode",
        choices=_control.MODES,
        default=None,
        help="cpu: weight by CPU time used (idle threads record nothing); "
        "wall: elapsed time of every thread (default cpu; wall with --asyncio)",
    )
    run.add_argument(
        "--asyncio",
        action="store_true",
        help="wall mode: also record where each waiting asyncio task waits "
        "(one 'Task: name' stack per task; see docs/asyncio.md)",
    )
    run.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop profiling after this many seconds and write the profile then; "
        "the program keeps running",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="no status line and no messages on stderr"
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    run.add_argument(
        "target", nargs=argparse.REMAINDER, metavar="script.py [args ...]", help=argparse.SUPPRESS
    )

    convert = sub.add_parser(
        "convert",
        help="convert a profile file to another format",
        description="Read a pprof or .cpuprofile file (pysampler's or another tool's) "
        "and write it in another format. Heap profiles (pprof heap, .heapprofile) "
        "convert to pprof, .heapprofile, HTML and collapsed stacks.",
        epilog="example:\n  pysampler convert out.pprof -o out.html\n\n"
        f"formats (name, suffixes):\n{_format_list()}",
        formatter_class=fmt_class,
    )
    convert.add_argument("input", metavar="INPUT", help="a pprof, .cpuprofile or .heapprofile file")
    convert.add_argument(
        "-o", "--output", metavar="FILE", required=True, help="where to write; format from suffix"
    )
    convert.add_argument(
        "--format", choices=formats.names(), help="output format, overriding the suffix"
    )
    convert.add_argument(
        "--input-format",
        choices=formats.READABLE,
        help="input format (by default told from the file's contents)",
    )
    convert.add_argument("--view", choices=VIEWS, help=_VIEW_HELP)

    top = sub.add_parser(
        "top",
        help="the hottest functions of a profile file, or of a live service",
        description="Print a table of the hottest functions (self and total share) "
        "of a pprof or .cpuprofile file; for a heap profile (pprof heap, .heapprofile), "
        "the functions holding or having allocated the most bytes. "
        "Given a URL (http://host:port or host:port) instead, watch the service "
        "behind that profiling endpoint live: a short profile about every second, "
        "functions ranked over the last interval and since start (full screen on a "
        "terminal; keys: q quit, p pause, m cpu/wall, s/t sort by self/total, "
        "a last interval/since start, g rows per process, r reset; a table per "
        "interval otherwise). With --diff-base BASE, print what changed from BASE.",
        epilog="examples:\n  pysampler top out.cpuprofile -n 20\n"
        "  pysampler top http://127.0.0.1:9119\n"
        "  pysampler top localhost:9119 --mode wall --pid 4242\n"
        "  pysampler top --diff-base before.pprof after.pprof",
        formatter_class=fmt_class,
    )
    top.add_argument(
        "input", metavar="INPUT", help="a pprof, .cpuprofile or .heapprofile file, or a URL"
    )
    top.add_argument(
        "-n", "--limit", type=_count, default=20, help="rows to show (default 20)", dest="limit"
    )
    top.add_argument(
        "--input-format",
        choices=formats.READABLE,
        help="input format (by default told from the file's contents)",
    )
    top.add_argument("--view", choices=VIEWS, help=_VIEW_HELP)
    top.add_argument(
        "--diff-base",
        metavar="BASE",
        help="print the functions whose share changed most from the profile BASE to INPUT",
    )
    live = top.add_argument_group("live view (INPUT is a URL)")
    _add_endpoint_options(live, "cpu")
    live.add_argument(
        "--interval",
        type=_seconds,
        metavar="SECONDS",
        help="length of each profile, and so the refresh period (default 1)",
    )
    live.add_argument(
        "--count", type=_count, metavar="N", help="stop after N intervals (default: never)"
    )
    live.add_argument(
        "--plain",
        action="store_true",
        help="print a table per interval even on a terminal (the default when stdout is not one)",
    )

    record = sub.add_parser(
        "record",
        help="take one profile of a live service through its endpoint",
        description="Take one profile of a running service through its profiling "
        "endpoint (PYSAMPLER_PORT) and write it in any format, showing progress. "
        "Ctrl-C cancels: the service's session ends at once.",
        epilog="examples:\n"
        "  pysampler record http://127.0.0.1:9119 --duration 30 -o incident.html\n"
        "  pysampler record localhost:9119 --mode wall --asyncio -o tasks.pprof\n"
        "  pysampler record localhost:9119 --heap --duration 60 -o heap.heapprofile\n\n"
        f"formats (name, suffixes):\n{_format_list()}",
        formatter_class=fmt_class,
    )
    record.add_argument("url", metavar="URL", help="the endpoint: http://host:port or host:port")
    _add_output_options(record, "")
    record.add_argument(
        "--duration",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to profile (default 10)",
    )
    _add_endpoint_options(record, None)
    record.add_argument(
        "--heap",
        action="store_true",
        help="a heap profile: what was allocated in the window and is still in use",
    )
    record.add_argument(
        "--sample-bytes",
        type=int,
        metavar="N",
        help="--heap: mean bytes between heap samples (default: the endpoint's, 524288)",
    )
    record.add_argument("--view", choices=VIEWS, help=_VIEW_HELP)
    record.add_argument(
        "-n", "--limit", type=_count, default=20, help="rows printed without -o (default 20)"
    )
    record.add_argument("-q", "--quiet", action="store_true", help="no progress line or messages")

    diff = sub.add_parser(
        "diff",
        help="compare two profiles: what changed from BASE to NEW",
        description="Compare two profiles of one program (any readable format, CPU, "
        "wall or heap): print the functions whose share of the total changed most "
        "(self and total, in percentage points; each profile is normalised by its "
        "own total, so profiles of different length compare) and, with -o, write a "
        "differential flame graph: widths from NEW, red where the share grew, blue "
        "where it shrank. Functions are matched by qualified name and file.",
        epilog="example:\n  pysampler diff before.pprof after.pprof -o diff.html",
        formatter_class=fmt_class,
    )
    diff.add_argument("base", metavar="BASE", help="the profile to compare against (before)")
    diff.add_argument("new", metavar="NEW", help="the profile to look at (after)")
    diff.add_argument(
        "-o", "--output", metavar="FILE.html", help="write the differential flame graph here"
    )
    diff.add_argument("-n", "--limit", type=_count, default=20, help="rows to print (default 20)")
    diff.add_argument(
        "--input-format",
        choices=formats.READABLE,
        help="format of both inputs (by default told from each file's contents)",
    )
    diff.add_argument("--view", choices=VIEWS, help=_VIEW_HELP)
    return parser


_VIEW_HELP = (
    "heap profiles: memory in use, or all allocated since the start "
    "(default: the file's own, in use for .heapprofile)"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pysampler`` command; returns the exit status.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "convert":
            return _convert(args)
        if args.command == "record":
            return _record(args)
        if args.command == "diff":
            return _diff(args)
        return _top(args)
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


# -- convert / top ---------------------------------------------------------


def _load(path: str, input_format: str | None, view: str | None = None) -> Profile | HeapProfile:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        profile = formats.read(data, input_format)
    except ValueError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from None
    if view is not None:
        if not isinstance(profile, HeapProfile):
            raise CommandError(f"--view applies to heap profiles; {path} is a CPU profile")
        profile = profile.with_view(view)
    return profile


#: formats that write heap profiles only
_HEAP_ONLY = ("heapprofile",)


def _writes(fmt: formats.Format, heap: bool) -> bool:
    """Whether ``fmt`` writes heap profiles (``heap``) or CPU/wall ones."""
    if not heap:
        return fmt.name not in _HEAP_ONLY
    return hasattr(importlib.import_module(fmt.module), "write_heap")


def _output_format(path: str, name: str | None, heap: bool | None = False) -> formats.Format:
    """The format to write ``path`` in: ``name`` (--format), else its suffix.
    ``heap``: the profile is a heap profile (True), a CPU or wall one
    (False), or either (None)."""
    what = "heap" if heap else "CPU"
    usable = [f for f in formats.FORMATS.values() if heap is None or _writes(f, heap)]
    if name:
        fmt = formats.get(name)
    else:
        try:
            fmt = formats.for_path(path)
        except ValueError:
            suffixes = ", ".join(s for f in usable for s in f.suffixes)
            raise CommandError(
                f"cannot tell the format of {path!r} from its suffix; use one of "
                f"{suffixes}, or --format NAME"
            ) from None
    if fmt not in usable:
        names = ", ".join(f.name for f in usable)
        raise CommandError(
            f"cannot write {path}: the {fmt.name} format does not write {what} profiles "
            f"(it writes {'CPU' if heap else 'heap'} profiles; for a {what} profile use {names})"
        )
    return fmt


def _write(profile: Profile | HeapProfile, path: str, fmt: formats.Format) -> None:
    try:
        data = fmt.write(profile) if isinstance(profile, Profile) else profile.to_bytes(fmt.name)
    except ValueError as exc:  # a format that writes no heap profiles
        raise CommandError(f"cannot write {path}: {exc}") from None
    _write_bytes(data, path)


def _write_bytes(data: bytes, path: str) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _convert(args: argparse.Namespace) -> int:
    _output_format(args.output, args.format, heap=None)  # a bad suffix before a long read
    profile = _load(args.input, args.input_format, args.view)
    fmt = _output_format(args.output, args.format, heap=isinstance(profile, HeapProfile))
    _write(profile, args.output, fmt)
    return 0


def _top(args: argparse.Namespace) -> int:
    if args.diff_base is not None:
        base = _load(args.diff_base, args.input_format, args.view)
        new = _load(args.input, args.input_format, args.view)
        return _print_diff(base, new, args.diff_base, args.input, args.limit)
    if remote.is_url(args.input):
        from pysampler import cli_top

        endpoint = _endpoint(args.input, args)
        if args.asyncio and args.mode != "wall":
            raise CommandError("--asyncio needs --mode wall (a waiting task uses no CPU)")
        return cli_top.run(args, endpoint)
    live = [f"--{n}" for n in ("mode", "hz", "interval", "count", "token") if _given(args, n)]
    live += ["--pid"] * bool(args.pid) + ["--asyncio"] * args.asyncio + ["--plain"] * args.plain
    if live:
        raise CommandError(
            f"{live[0]} applies to a live view; {args.input!r} is a file (give http://host:port)"
        )
    profile = _load(args.input, args.input_format, args.view)
    print(profile.top(args.limit))
    return 0


def _given(args: argparse.Namespace, name: str) -> bool:
    default = {"mode": "cpu"}.get(name)
    return getattr(args, name) not in (None, default)


def _endpoint(text: str, args: argparse.Namespace) -> remote.Endpoint:
    try:
        return remote.parse(text, args.token)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _record(args: argparse.Namespace) -> int:
    from pysampler import cli_record

    endpoint = _endpoint(args.url, args)
    if args.mode is None:
        args.mode = "wall" if args.asyncio else "cpu"
    if args.asyncio and args.mode != "wall":
        raise CommandError("--asyncio needs --mode wall (a waiting task uses no CPU)")
    if args.format and not args.output:
        raise CommandError("--format needs -o/--output")
    fmt = _output_format(args.output, args.format, heap=args.heap) if args.output else None
    return cli_record.run(args, endpoint, fmt)


def _diff(args: argparse.Namespace) -> int:
    from pysampler import diff

    if args.output and _output_format(args.output, None).name != "html":
        raise CommandError(f"cannot write {args.output}: diff writes HTML (.html)")
    base = _load(args.base, args.input_format, args.view)
    new = _load(args.new, args.input_format, args.view)
    status = _print_diff(base, new, args.base, args.new, args.limit)
    if args.output:
        page = diff.write_html(base, new, os.path.basename(args.base), os.path.basename(args.new))
        _write_bytes(page, args.output)
        print(f"{PROG}: wrote {args.output}", file=sys.stderr)
    return status


def _print_diff(
    base: Profile | HeapProfile,
    new: Profile | HeapProfile,
    base_name: str,
    new_name: str,
    limit: int,
) -> int:
    from pysampler import diff

    try:
        print(diff.table(base, new, limit, base_name, new_name))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return 0


# -- run -------------------------------------------------------------------


class _Program:
    """What ``run`` executes: a script path or a module name, with its argv."""

    def __init__(self, module: str | None, target: list[str]) -> None:
        if target and target[0] == "--":
            target = target[1:]
        self.module = module
        if module is None:
            if not target:
                raise CommandError("no script given (pysampler run [options] script.py [args])")
            self.path: str | None = target[0]
            self.argv = list(target)
            if not os.path.exists(self.path):
                raise CommandError(f"can't open file {self.path!r}: no such file")
        else:
            self.path = None
            self.argv = [module, *target]
            # look the module up where ``python -m`` would: from the current
            # directory (the console script's own folder is sys.path[0] now)
            sys.path[0] = os.getcwd()
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError) as exc:
                raise CommandError(f"no module named {module!r} ({exc})") from None
            if spec is None:
                raise CommandError(f"no module named {module!r}")

    def execute(self) -> None:
        """Run the program in this process as ``__main__``, with its argv and
        ``sys.path[0]`` set as the interpreter sets them."""
        sys.argv[:] = self.argv
        if self.path is not None:
            sys.path[0] = os.path.dirname(os.path.abspath(self.path))
            _run_script(self.path)
        else:
            assert self.module is not None
            sys.path[0] = os.getcwd()
            runpy.run_module(self.module, run_name="__main__", alter_sys=True)


def _run_script(path: str) -> None:
    """Run a script file as ``python path`` does: in a fresh ``__main__``
    module, ``__file__`` absolute, ``sys.argv[0]`` as given."""
    abspath = os.path.abspath(path)
    if not os.path.isfile(abspath):  # a directory or zip file with __main__.py
        runpy.run_path(path, run_name="__main__")
        return
    with io.open_code(abspath) as f:
        source = f.read()
    code = compile(source, abspath, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=abspath,
        __cached__=None,
        __builtins__=builtins,
        __loader__=importlib.machinery.SourceFileLoader("__main__", abspath),
    )
    # the program's module stays __main__ until exit, as it would (atexit
    # handlers and pickling look it up there)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _strip_launcher(profile: Profile, launcher_files: set[str]) -> Profile:
    """The profile with the frames above the program's own removed: the
    console script, this module and runpy, which Python running the
    program plainly would not have on its stack."""
    strip = {i for i, f in enumerate(profile.frames) if f.filename in launcher_files}
    if not strip:
        return profile
    nodes: dict[tuple[int, int], int] = {}
    new_id = array.array("i")
    in_prefix: list[bool] = []
    for parent, frame in zip(profile.column("stack_parent"), profile.column("stack_frame")):
        prefix = frame in strip and (parent < 0 or in_prefix[parent])
        in_prefix.append(prefix)
        if prefix:
            # a sample taken in launcher code alone keeps its innermost frame
            new_id.append(nodes.setdefault((-1, frame), len(nodes)))
        else:
            new_parent = -1 if parent < 0 or in_prefix[parent] else new_id[parent]
            new_id.append(nodes.setdefault((new_parent, frame), len(nodes)))
    return Profile(
        frames=profile.frames,
        stack_parent=[k[0] for k in nodes],
        stack_frame=[k[1] for k in nodes],
        stack=_columns.take(new_id, profile.column("stack")),
        thread=profile.column("thread"),
        time_ns=profile.column("time_ns"),
        cpu_ns=profile.column("cpu_ns"),
        wall_ns=profile.column("wall_ns"),
        threads=profile.threads,
        metadata=profile.metadata,
        count=profile.column("count"),
    )


def _launcher_files() -> set[str]:
    files = {__file__, runpy.__file__ or "", "<frozen runpy>", sys.argv[0]}
    files.add(os.path.abspath(sys.argv[0]))
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__file__", None):
        files.add(str(main.__file__))  # the console script or pysampler/__main__.py
    return files


class _Session:
    """One profiling session of ``run``: writes the profile exactly once,
    at the end of the program or when ``--duration`` runs out."""

    def __init__(self, args: argparse.Namespace, fmt: formats.Format | None) -> None:
        self.args = args
        self.fmt = fmt
        self.started = time.monotonic()
        self.done = False
        self.lock = _thread.allocate_lock()
        # held while the session runs; the helper thread waits on it, so
        # releasing it wakes the helper at once
        self.running = _thread.allocate_lock()
        self.running.acquire()
        self.helper_ident: int | None = None
        self.helper_exited = _thread.allocate_lock()
        self.status_shown = False
        self.launcher_files = _launcher_files()

    def start(self) -> None:
        pysampler.start(self.args.hz, self.args.mode, asyncio=self.args.asyncio)
        want_status = not self.args.quiet and _isatty(sys.stderr)
        if want_status or self.args.duration is not None:
            self.helper_exited.acquire()
            # a bare native thread, not a threading.Thread, so the program
            # sees no extra thread in threading.enumerate()
            _thread.start_new_thread(self._helper, (want_status,))

    def _helper(self, want_status: bool) -> None:
        self.helper_ident = _thread.get_ident()
        try:
            deadline = None
            if self.args.duration is not None:
                deadline = self.started + self.args.duration
            while True:
                wait = STATUS_EVERY
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                if self.running.acquire(timeout=wait):
                    self.running.release()
                    return
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.finish()
                    return
                if want_status and now - self.started >= STATUS_AFTER:
                    self._status(now)
        except Exception:  # never disturb the program for a status line
            return
        finally:
            self.helper_exited.release()

    def _status(self, now: float) -> None:
        from pysampler import _sampler

        samples = _sampler.sample_count()
        sys.stderr.write(
            f"\r{PROG}: {now - self.started:6.1f} s, {samples} samples "
            f"({self.args.mode}, {self.args.hz:g} Hz)\x1b[K"
        )
        sys.stderr.flush()
        self.status_shown = True

    def finish(self) -> None:
        """Stop profiling and write the profile (the first call only)."""
        with self.lock:
            if self.done:
                return
            self.done = True
            try:
                profile = pysampler.stop()
            except pysampler.ProfilerNotRunning:
                # the program stopped the session itself: nothing left to write
                print(f"{PROG}: the program stopped the profiler; no profile", file=sys.stderr)
                self.write_failed = True
                profile = None
        if profile is None:
            return
        if self.running.locked():
            self.running.release()
        if self.status_shown:
            sys.stderr.write("\r\x1b[K")
        profile = _without_thread(profile, self.helper_ident)
        profile = _strip_launcher(profile, self.launcher_files)
        self._save(profile)

    def close(self) -> None:
        """At the program's end: write the profile if not yet written and
        wait for the helper thread to be gone."""
        self.finish()
        if self.helper_exited.locked() and self.helper_ident != _thread.get_ident():
            self.helper_exited.acquire(timeout=60)

    def _save(self, profile: Profile) -> None:
        quiet = self.args.quiet
        if self.fmt is None:
            print(profile.top(15), file=sys.stderr)
            return
        try:
            _write(profile, self.args.output, self.fmt)
        except CommandError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            self.write_failed = True
            return
        if not quiet:
            print(
                f"{PROG}: wrote {self.args.output} ({self.fmt.name}, "
                f"{profile.sample_count} samples, {profile.metadata.duration:.2f} s)",
                file=sys.stderr,
            )

    write_failed = False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _without_thread(profile: Profile, ident: int | None) -> Profile:
    """The profile without the samples of our own helper thread."""
    if ident is None:
        return profile
    ours = [i for i, t in enumerate(profile.threads) if t.ident == ident]
    if not ours:
        return profile
    drop = ours[0]
    thread = profile.column("thread")
    keep = array.array("q", [i for i, t in enumerate(thread) if t != drop])
    if len(keep) == len(thread):
        return profile
    # renumber thread indexes past the removed one
    kept_thread = array.array("i", [t - (t > drop) for t in _columns.take(thread, keep)])
    threads = [t for i, t in enumerate(profile.threads) if i != drop]
    return Profile(
        frames=profile.frames,
        stack_parent=profile.column("stack_parent"),
        stack_frame=profile.column("stack_frame"),
        stack=_columns.take(profile.column("stack"), keep),
        thread=kept_thread,
        time_ns=_columns.take(profile.column("time_ns"), keep),
        cpu_ns=_columns.take(profile.column("cpu_ns"), keep),
        wall_ns=_columns.take(profile.column("wall_ns"), keep),
        threads=threads,
        metadata=profile.metadata,
        count=_columns.take(profile.column("count"), keep),
    )


def _run(args: argparse.Namespace) -> int:
    if args.mode is None:
        args.mode = "wall" if args.asyncio else "cpu"
    if args.asyncio and args.mode != "wall":
        raise CommandError("--asyncio needs --mode wall (a waiting task uses no CPU)")
    if args.asyncio and not _asyncio.supported():
        raise CommandError("--asyncio is not supported on this Python version (docs/asyncio.md)")
    try:
        _control.validate(args.hz, args.mode)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.duration is not None and not args.duration > 0:
        raise CommandError(f"--duration must be a positive number of seconds, not {args.duration}")
    if args.format and not args.output:
        raise CommandError("--format needs -o/--output")
    fmt = _output_format(args.output, args.format) if args.output else None
    if args.output:
        folder = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(folder):
            raise CommandError(f"cannot write {args.output}: no such directory {folder}")
    program = _Program(args.module, list(args.target))

    session = _Session(args, fmt)
    try:
        session.start()
    except pysampler.PysamplerError as exc:
        raise CommandError(str(exc)) from None
    # before the program runs, so it runs after the program's own handlers
    atexit.register(_die_by_sigint)
    try:
        program.execute()
    except SystemExit as exc:
        session.close()
        if session.write_failed and not exc.code:
            return EXIT_ERROR
        raise
    except KeyboardInterrupt as exc:
        # Ctrl-C: keep what was collected, then end as Python would: the
        # program's traceback, its atexit handlers, then death by SIGINT so
        # the shell sees it. Re-raising would print our frames too (an
        # exception gains a traceback entry per frame it leaves).
        session.close()
        tb = _program_traceback(exc.__traceback__)
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        _interrupted.append(True)
        return STATUS_CONTROL_C_EXIT if sys.platform == "win32" else 128 + signal.SIGINT
    except BaseException as exc:
        session.close()
        # as the interpreter reports an uncaught exception: through
        # sys.excepthook (the program may have set its own), status 1
        # (the default hook prints the exception's own __traceback__, so
        # the trimmed one is set on it)
        tb = _program_traceback(exc.__traceback__)
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 1
    session.close()
    return EXIT_ERROR if session.write_failed else 0


#: set when the program ended by Ctrl-C; :func:`_die_by_sigint` reads it
_interrupted: list[bool] = []
#: what a Windows process interrupted by Ctrl-C exits with (Python's too)
STATUS_CONTROL_C_EXIT = 0xC000013A


def _die_by_sigint() -> None:
    """At exit, after the program's atexit handlers: end by SIGINT, as
    Python does when a KeyboardInterrupt ends the program."""
    if not _interrupted or sys.platform == "win32":
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _program_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback from the program's first frame on: ours and runpy's
    frames are left out, as they would not be there had Python run it."""
    first = tb
    skip = (__file__, runpy.__file__, "<frozen runpy>")
    while first is not None and first.tb_frame.f_code.co_filename in skip:
        first = first.tb_next
    return first if first is not None else tb


def console_main() -> NoReturn:
    """Entry point of the ``pysampler`` console script."""
    sys.exit(main())
