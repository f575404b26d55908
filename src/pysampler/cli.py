"""The command line: ``pysampler run|convert|top`` (also ``python -m pysampler``).

``run`` profiles a script or module as if Python ran it plainly: same
``sys.argv``, ``__main__``, ``sys.path[0]``, stdout and exit status; the
profile is written however the program ends (normally, by an exception, by
``sys.exit`` or by Ctrl-C). ``convert`` and ``top`` read pprof and
``.cpuprofile`` files, and heap profiles (pprof heap, ``.heapprofile``).
Errors are one line on stderr and a non-zero status.
"""

from __future__ import annotations

import _thread
import argparse
import array
import builtins
import importlib.machinery
import importlib.util
import io
import os
import runpy
import sys
import time
import types
from collections.abc import Sequence
from typing import Any, NoReturn

import pysampler
from pysampler import _asyncio, _columns, _control, formats
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
    run.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the profile here; the format comes from the suffix "
        "(without -o, a table of the hottest functions is printed to stderr)",
    )
    run.add_argument(
        "--format", choices=formats.names(), help="output format, overriding the suffix"
    )
    run.add_argument(
        "--hz",
        type=float,
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
        help="print the hottest functions of a profile file",
        description="Print a table of the hottest functions (self and total share) "
        "of a pprof or .cpuprofile file; for a heap profile (pprof heap, .heapprofile), "
        "the functions holding or having allocated the most bytes.",
        epilog="example:\n  pysampler top out.cpuprofile -n 20",
        formatter_class=fmt_class,
    )
    top.add_argument("input", metavar="INPUT", help="a pprof, .cpuprofile or .heapprofile file")
    top.add_argument(
        "-n", "--limit", type=int, default=20, help="rows to show (default 20)", dest="limit"
    )
    top.add_argument(
        "--input-format",
        choices=formats.READABLE,
        help="input format (by default told from the file's contents)",
    )
    top.add_argument("--view", choices=VIEWS, help=_VIEW_HELP)
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


def _output_format(path: str, name: str | None) -> formats.Format:
    try:
        return formats.get(name) if name else formats.for_path(path)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _write(profile: Profile | HeapProfile, path: str, fmt: formats.Format) -> None:
    try:
        data = fmt.write(profile) if isinstance(profile, Profile) else profile.to_bytes(fmt.name)
    except ValueError as exc:  # a format that writes no heap profiles
        raise CommandError(f"cannot write {path}: {exc}") from None
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _convert(args: argparse.Namespace) -> int:
    fmt = _output_format(args.output, args.format)
    profile = _load(args.input, args.input_format, args.view)
    _write(profile, args.output, fmt)
    return 0


def _top(args: argparse.Namespace) -> int:
    profile = _load(args.input, args.input_format, args.view)
    print(profile.top(args.limit))
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
    try:
        program.execute()
    except SystemExit as exc:
        session.close()
        if session.write_failed and not exc.code:
            return EXIT_ERROR
        raise
    except KeyboardInterrupt as exc:
        # Ctrl-C: keep what was collected, then end as Python would
        # (traceback, and death by SIGINT so the shell sees it)
        session.close()
        raise exc.with_traceback(_program_traceback(exc.__traceback__)) from None
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
