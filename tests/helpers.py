"""Small helpers to look into a Profile in tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pysampler import Profile


def function_share(
    profile: Profile, name: str, thread: str | None = None, self_only: bool = True
) -> float:
    """Share of value (in [0, 1]) with ``name`` as the leaf (self) or anywhere (total)."""
    mask = np.ones(profile.sample_count, dtype=bool)
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
