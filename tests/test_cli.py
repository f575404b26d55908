"""The command line, end to end in subprocesses: `pysampler run|convert|top`."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import helpers
from pysampler import Profile, formats

PROGRAM = textwrap.dedent(
    """
    import sys, time

    def hot_loop(seconds):
        end = time.thread_time() + seconds
        n = 0
        while time.thread_time() < end:
            n += 1
        return n

    def main():
        print("argv", sys.argv[1:], "name", __name__, "path0", sys.path[0] == HERE)
        hot_loop(float(sys.argv[1]) if len(sys.argv) > 1 else 0.3)
        what = sys.argv[2] if len(sys.argv) > 2 else ""
        if what == "raise":
            raise RuntimeError("boom from the program")
        if what == "loop":
            print("ready", flush=True)
            while True:
                hot_loop(0.05)
        if what.startswith("exit"):
            sys.exit(int(what[4:]))
        print("done")

    import os
    HERE = os.path.dirname(os.path.abspath(__file__))
    main()
    """
)


def pysampler(
    *args: str, cwd: Path, timeout: float = 60, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysampler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,  # type: ignore[call-overload]
    )


def plain(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "prog.py"
    path.write_text(PROGRAM)
    return path


def read_profile(path: Path) -> Profile:
    return formats.read(path.read_bytes())


def hottest(profile: Profile) -> str:
    return profile.functions()[0].function


def test_run_script_keeps_stdout_exit_code_and_argv(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pprof"
    ours = pysampler("run", "-o", str(out), "prog.py", "0.3", "exit3", "--flag", cwd=tmp_path)
    theirs = plain("prog.py", "0.3", "exit3", "--flag", cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 3
    assert ours.stdout == theirs.stdout
    assert "argv ['0.3', 'exit3', '--flag'] name __main__ path0 True" in ours.stdout
    assert f"wrote {out}" in ours.stderr
    profile = read_profile(out)
    assert hottest(profile) == "hot_loop"
    # the launcher (pysampler, runpy) is not on the program's stack: the
    # program's <module> is the root of every stack it is in
    program_stacks = 0
    for node in set(profile.stack.tolist()):
        frames = [profile.frames[f] for f in profile.stack_of(node)]
        if any(f.filename == str(script) for f in frames):
            program_stacks += 1
            assert (frames[0].function, frames[0].filename) == ("<module>", str(script))
        assert not any("runpy" in f.filename or "pysampler" in f.filename for f in frames[1:])
    assert program_stacks


def test_run_module_with_options_after_it(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(PROGRAM)
    out = tmp_path / "out.cpuprofile"
    ours = pysampler(
        "run", "-m", "mypkg.cli", "-o", str(out), "--mode", "wall", "--hz", "500", "-q",
        "0.3", "exit0",
        cwd=tmp_path,
    )  # fmt: skip
    theirs = plain("-m", "mypkg.cli", "0.3", "exit0", cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
    assert ours.stderr == ""  # -q
    profile = read_profile(out)
    assert hottest(profile) == "hot_loop"
    assert profile.sample_count > 50  # 500 Hz over at least 0.3 s


def test_console_script_runs_module_from_current_directory(tmp_path: Path) -> None:
    (tmp_path / "localmod.py").write_text(PROGRAM)
    exe = Path(sys.executable).with_name("pysampler")
    if not exe.exists():
        pytest.skip("the pysampler console script is not installed beside this Python")
    out = tmp_path / "out.collapsed"
    proc = subprocess.run(
        [str(exe), "run", "-q", "-o", str(out), "-m", "localmod", "0.2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "path0 True" in proc.stdout
    assert "hot_loop" in out.read_text()


def test_profile_written_when_program_raises(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pprof"
    ours = pysampler("run", "-o", str(out), "prog.py", "0.2", "raise", cwd=tmp_path)
    theirs = plain("prog.py", "0.2", "raise", cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stdout == theirs.stdout
    # the traceback is the program's own, as Python prints it
    tail = theirs.stderr.strip().splitlines()
    assert ours.stderr.strip().splitlines()[-len(tail) :] == tail
    assert "cli.py" not in ours.stderr and "runpy" not in ours.stderr
    assert hottest(read_profile(out)) == "hot_loop"


def test_profile_written_on_sigint(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.speedscope.json"
    cmd = [sys.executable, "-m", "pysampler", "run", "-o", str(out), "prog.py", "0.1", "loop"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert "ready" in proc.stdout.readline() + proc.stdout.readline()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    # as Python ends on an uncaught KeyboardInterrupt: by SIGINT, after
    # the program's own traceback (none of pysampler's or runpy's frames)
    assert proc.returncode == -signal.SIGINT, err
    lines = err.splitlines()
    assert lines[0].startswith("pysampler: wrote "), err
    assert lines[1] == "Traceback (most recent call last):", err
    assert lines[2].startswith(f'  File "{tmp_path / "prog.py"}"'), err
    assert lines[-1] == "KeyboardInterrupt"
    assert "cli.py" not in err and "runpy" not in err and "__main__.py" not in err
    assert out.exists()
    assert '"hot_loop"' in out.read_text()


def test_duration_writes_profile_while_program_keeps_running(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pprof"
    ours = pysampler("run", "--duration", "0.3", "-o", str(out), "prog.py", "1.0", cwd=tmp_path)
    assert ours.returncode == 0
    assert "done" in ours.stdout  # the program ran to its end
    profile = read_profile(out)
    assert 0.2 < profile.metadata.duration < 0.8
    assert hottest(profile) == "hot_loop"


def test_status_line_on_a_terminal_counts_samples(script: Path, tmp_path: Path) -> None:
    status, err = helpers.stderr_on_a_terminal(
        [sys.executable, "-m", "pysampler", "run", "prog.py", "1.6", "exit0"], cwd=tmp_path
    )
    assert status == 0
    counts = [
        int(part.split(" samples")[0].split()[-1]) for part in err.split("\r") if " samples" in part
    ]
    assert counts, err
    assert max(counts) > 0
    # without -o the table of hottest functions goes to stderr
    assert "hot_loop" in err
    # -q: no status line
    quiet = pysampler("run", "-q", "-o", str(tmp_path / "q.pprof"), "prog.py", "0.2", cwd=tmp_path)
    assert quiet.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py"], "can't open file 'missing.py'"),
        (["run", "-m", "no_such_module_here"], "no module named 'no_such_module_here'"),
        (["run", "-o", "out.svgz", "prog.py"], "cannot tell the format"),
        (["run", "-o", "out.txt", "prog.py"], ".speedscope, or --format NAME"),
        (["run", "-o", "out.heapprofile", "prog.py"], "does not write CPU profiles"),
        (
            ["run", "--hz", "0", "prog.py"],
            "--hz: must be from 1 to 10000 samples per second, not 0",
        ),
        (["run", "--mode", "idle", "prog.py"], "invalid choice: 'idle'"),
        (["run"], "no script given"),
        (["convert", "prog.py", "-o", "x.html"], "cannot read prog.py"),
        (["convert", "nothing.pprof", "-o", "x.html"], "cannot read nothing.pprof"),
        (["convert", "in.pprof", "-o", "x.pprof", "--format", "svg"], "invalid choice: 'svg'"),
        (["top", "nothing.pprof"], "cannot read nothing.pprof"),
    ],
)
def test_errors_are_one_line_without_traceback(
    script: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    proc = pysampler(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_help_for_every_command(tmp_path: Path) -> None:
    main = pysampler("--help", cwd=tmp_path)
    assert main.returncode == 0
    for command in ("run", "convert", "top"):
        assert command in main.stdout
        sub = pysampler(command, "--help", cwd=tmp_path)
        assert sub.returncode == 0
        assert f"usage: pysampler {command}" in sub.stdout
    run_help = pysampler("run", "--help", cwd=tmp_path).stdout
    for option in ("--output", "--format", "--hz", "--mode", "--duration", "--quiet", "-m"):
        assert option in run_help


def test_convert_and_top_read_our_files(script: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.pprof"
    assert pysampler("run", "-q", "-o", str(src), "prog.py", "0.3", cwd=tmp_path).returncode == 0
    original = read_profile(src)
    for name in ("x.cpuprofile", "x.collapsed", "x.speedscope.json", "x.html", "x.pb"):
        proc = pysampler("convert", str(src), "-o", str(tmp_path / name), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / name).stat().st_size > 0
    back = read_profile(tmp_path / "x.pb")
    assert back.total_ns == original.total_ns
    again = read_profile(tmp_path / "x.cpuprofile")
    assert abs(again.total_ns - original.total_ns) <= 1000 * again.sample_count
    top = pysampler("top", str(tmp_path / "x.cpuprofile"), "-n", "3", cwd=tmp_path)
    assert top.returncode == 0
    rows = top.stdout.splitlines()
    assert rows[0].startswith("pysampler cpu profile:")
    assert "hot_loop" in rows[2]
    assert len(rows) <= 5


ASYNC_PROGRAM = textwrap.dedent(
    """
    import asyncio

    async def wait_for_db():
        await asyncio.sleep(0.6)

    async def handler():
        await wait_for_db()

    async def main():
        await asyncio.gather(*(asyncio.create_task(handler(), name=f"req-{i}") for i in range(3)))

    asyncio.run(main())
    """
)


def test_run_asyncio_records_where_tasks_wait(tmp_path: Path) -> None:
    (tmp_path / "aprog.py").write_text(ASYNC_PROGRAM)
    proc = pysampler("run", "--asyncio", "-q", "-o", "out.collapsed", "aprog.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "out.collapsed").read_text().splitlines()
    waits = [ln for ln in lines if ";Task: req-" in ln and "wait_for_db" in ln]
    assert waits, lines[:5]
    assert all("(awaiting" in ln.rsplit(" ", 1)[0].split(";")[-1] for ln in waits)
    assert {ln.split(";Task: ")[1].split(";")[0] for ln in waits} == {"req-0", "req-1", "req-2"}


def test_run_asyncio_refuses_cpu_mode(tmp_path: Path) -> None:
    (tmp_path / "aprog.py").write_text(ASYNC_PROGRAM)
    proc = pysampler("run", "--asyncio", "--mode", "cpu", "aprog.py", cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "pysampler: error: --asyncio needs --mode wall (a waiting task uses no CPU)"
    )


def test_top_headers_say_only_what_the_file_knows(script: Path, tmp_path: Path) -> None:
    # a .cpuprofile records no requested rate; a script reached through ..
    (tmp_path / "sub").mkdir()
    out = tmp_path / "out.cpuprofile"
    ran = pysampler("run", "-q", "-o", str(out), "sub/../prog.py", "0.3", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    head, _, first = pysampler("top", str(out), "-n", "1", cwd=tmp_path).stdout.splitlines()
    assert ", 1 thread, " in head and "requested" not in head, head
    assert f"{tmp_path / 'prog.py'}:" in first and ".." not in first
    # a .heapprofile records no duration
    import pysampler as api

    api.heap.start(4096)
    kept = [bytearray(1000) for _ in range(200)]
    heap = api.heap.stop()
    heap.save(tmp_path / "h.heapprofile")
    del kept
    head = pysampler("top", "h.heapprofile", cwd=tmp_path).stdout.splitlines()[0]
    assert head.endswith(" samples)"), head  # no "over 0.00 s"
    with pytest.raises(ValueError, match="0 or more, not -1"):
        read_profile(out).top(-1)
    with pytest.raises(ValueError, match="0 or more, not -1"):
        heap.top(-1)
