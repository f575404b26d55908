"""Small helpers to look into a Profile in tests."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pysampler import Profile

#: Instruction emulation: scripts/matrix/in-chroot.sh sets PYSAMPLER_EMULATED=1
#: in a chroot of another architecture (the matrix's arm64 cell, run by
#: qemu-user on amd64). Every instruction is translated there, 10-50x slower
#: than on the hardware, and the emulator adds threads and memory of its own to
#: the process. Tests whose time limits or native-cost assumptions cannot hold
#: under emulation read this, and each says what it changes and why.
EMULATED = os.environ.get("PYSAMPLER_EMULATED") == "1"

#: how much longer waits and windows last under emulation
EMULATION_SLOWDOWN = 10


def scaled(seconds: float) -> float:
    """``seconds`` on hardware; :data:`EMULATION_SLOWDOWN` times that when
    :data:`EMULATED`. For waits and time windows, never for measured figures."""
    return seconds * EMULATION_SLOWDOWN if EMULATED else seconds


def function_share(
    profile: Profile, name: str, thread: str | None = None, self_only: bool = True
) -> float:
    """Share of value (in [0, 1]) with ``name`` as the leaf (self) or anywhere (total)."""
    mask = np.ones(len(profile.values), dtype=bool)  # rows (a row may count several samples)
    if thread is not None:
        idx = [i for i, t in enumerate(profile.threads) if t.name == thread]
        mask = np.isin(profile.thread, idx)
    values = profile.values[mask]
    total = values.sum()
    if total == 0:
        return 0.0
    hit = np.array(
        [_matches(profile, int(node), name, self_only) for node in profile.stack[mask]],
        dtype=bool,
    )
    return float(values[hit].sum() / total)


def _matches(profile: Profile, node: int, name: str, self_only: bool) -> bool:
    frames = profile.stack_of(node)
    if self_only:
        return profile.frames[frames[-1]].function == name
    return any(profile.frames[f].function == name for f in frames)


def thread_value(profile: Profile, name: str) -> tuple[int, int]:
    """(samples, value ns) of the thread called ``name``."""
    totals = profile.thread_totals()
    count = value = 0
    for i, t in enumerate(profile.threads):
        if t.name == name:
            c, v = totals[i]
            count += c
            value += v
    return count, value


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (with tests/ importable) and
    assert it exits 0, so a crash is a failing test with its output."""
    here = os.path.dirname(__file__)
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def endpoint_url(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """The address a process's start-up hook printed on its stderr (it does
    so for PYSAMPLER_PORT=0)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(0.5):
                line = proc.stderr.readline()
                match = re.search(r"profiling endpoint on (http://\S+)", line)
                if match:
                    return match.group(1)
                assert line, f"the process exited: {proc.communicate(timeout=60)}"
    raise AssertionError("the endpoint did not start")


def stderr_on_a_terminal(cmd: list[str], **popen: object) -> tuple[int, str]:
    """Run ``cmd`` with its stderr on a pseudo-terminal (stdout a pipe);
    (exit status, everything it wrote to stderr)."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=follower, **popen)  # type: ignore[call-overload]
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.communicate(timeout=60)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    return proc.returncode, b"".join(chunks).decode()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without our variables (a child would start an
    endpoint of its own) and without proxies for loopback, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


GO = shutil.which("go")
#: a row of ``go tool pprof -top``: flat value with its unit, then flat%
PPROF_ROW = re.compile(r"^\s*[\d.]+\w*\s+[\d.]+%")


def go_pprof(target: str, tmp_path: Path, *flags: str) -> str:
    """The output of ``go tool pprof FLAGS TARGET`` (a file or URL). Skips
    when go is missing, except under CI where the test setup installs it."""
    if GO is None:
        if os.environ.get("CI"):
            raise RuntimeError("go (Debian golang-go) is required to test pprof output")
        pytest.skip("go tool pprof is not installed")
    # our own variables would start the endpoint inside go's children too
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")}
    env.update(PPROF_TMPDIR=str(tmp_path), HOME=str(tmp_path), NO_PROXY="*", no_proxy="*")
    out = subprocess.run(
        [GO, "tool", "pprof", *flags, target],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def go_pprof_top(target: str, tmp_path: Path, *flags: str) -> tuple[str, list[list[str]]]:
    """``go tool pprof -top`` on a file or URL: (its output, the table's rows
    split into fields)."""
    text = go_pprof(target, tmp_path, *flags, "-top")
    return text, [ln.split() for ln in text.splitlines() if PPROF_ROW.match(ln)]


ROOT = Path(__file__).resolve().parent.parent


def test_sources() -> list[str]:
    """``[tool.cibuildwheel] test-sources``: all of the repository a wheel's
    test step has (tests/run_installed.py runs there, from a copy)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"^test-sources\s*=\s*\[([^\]]*)\]", text, re.MULTILINE)
    assert match, "pyproject.toml has no [tool.cibuildwheel] test-sources"
    return re.findall(r'"([^"]+)"', match.group(1))


def repo_path(relative: str) -> Path:
    """A file of the repository, outside tests/, that a test reads.

    Wheels are tested from a copy of ``test-sources`` only, so reading
    anything else passes here and fails in every wheel job of the release.
    This fails at once instead, in the source tree too.
    """
    top = relative.split("/", 1)[0]
    sources = test_sources()
    assert top in sources, (
        f"{relative} is outside [tool.cibuildwheel] test-sources {sources}: add {top!r} "
        "there, or the wheels' test step cannot find it"
    )
    manifest = ROOT / "MANIFEST.in"  # absent from a wheel's test copy
    if manifest.exists() and top not in ("tests", "pyproject.toml"):
        # wheels are built, and their tests copied, from the sdist
        assert re.search(rf"^graft {re.escape(top)}\s*$", manifest.read_text(), re.MULTILINE), (
            f"MANIFEST.in does not graft {top}: the sdist, and so the wheels' tests, lack it"
        )
    return ROOT / relative
