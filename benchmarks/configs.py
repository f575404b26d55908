"""The profiler configurations compared side by side.

An *in-process* configuration is started and stopped inside the measured
child process, around the timed body (see ``child.py``). An *external* one is
a command that launches the child under an out-of-process sampler (py-spy,
austin), which costs CPU on another core as well; the runner measures that
tool's CPU separately.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    """One column of the results."""

    name: str
    description: str
    #: "none", "import" (pysampler imported, no session), "pysampler",
    #: "inprocess" (a peer) or "external"
    kind: str
    hz: float | None = None  #: sampling rate, where the tool has one
    mode: str | None = None  #: pysampler's "cpu" or "wall"
    prefix: tuple[str, ...] = ()  #: external: command before ``python child.py``
    env: dict[str, str] = field(default_factory=dict)  #: extra environment for the child


def _bin(name: str) -> str:
    """A console script installed beside this interpreter, else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else (shutil.which(name) or name)


#: ddtrace's profiler with no agent: profiles go to a file and nothing else
#: talks to the network (telemetry, remote configuration, tracing off)
DDTRACE_ENV = {
    "DD_PROFILING_OUTPUT_PPROF": "{outdir}/ddtrace.pprof",
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    "DD_TRACE_ENABLED": "false",
}

CONFIGS: tuple[Config, ...] = (
    Config("none", "no profiler", "none"),
    Config(
        "pysampler-import",
        "pysampler imported (start and stop resolved), nothing started: the import cost",
        "import",
    ),
    Config("pysampler-cpu-100", "pysampler, CPU mode, 100 Hz", "pysampler", 100, "cpu"),
    Config("pysampler-cpu-1000", "pysampler, CPU mode, 1000 Hz", "pysampler", 1000, "cpu"),
    Config("pysampler-wall-100", "pysampler, wall mode, 100 Hz", "pysampler", 100, "wall"),
    Config(
        "py-spy",
        "py-spy record, 100 Hz (default: pauses the process per sample)",
        "external",
        100,
        prefix=(
            _bin("py-spy"),
            "record",
            "-r",
            "100",
            "-f",
            "raw",
            "-o",
            "{outdir}/py-spy.txt",
            "--",
        ),
    ),
    Config(
        "py-spy-nonblocking",
        "py-spy record --nonblocking, 100 Hz",
        "external",
        100,
        prefix=(
            _bin("py-spy"),
            "record",
            "--nonblocking",
            "-r",
            "100",
            "-f",
            "raw",
            "-o",
            "{outdir}/py-spy-nb.txt",
            "--",
        ),
    ),
    Config(
        "py-spy-nonblocking-1000",
        "py-spy record --nonblocking, 1000 Hz",
        "external",
        1000,
        prefix=(
            _bin("py-spy"),
            "record",
            "--nonblocking",
            "-r",
            "1000",
            "-f",
            "raw",
            "-o",
            "{outdir}/py-spy-nb1000.txt",
            "--",
        ),
    ),
    Config(
        "austin",
        "austin, 100 Hz (-i 10ms), wall",
        "external",
        100,
        prefix=(_bin("austin"), "-i", "10ms", "-o", "{outdir}/austin.txt"),
    ),
    Config("pyinstrument", "pyinstrument, default 1 ms interval", "inprocess", 1000),
    Config("yappi", "yappi (deterministic, CPU clock, all threads)", "inprocess"),
    Config("cProfile", "cProfile (deterministic)", "inprocess"),
    Config(
        "pyroscope-io",
        "pyroscope-io (py-spy in process), 100 Hz, pushing to an address where nothing listens",
        "inprocess",
        100,
    ),
    Config(
        "ddtrace",
        "ddtrace profiler, defaults, pprof to a file, no agent",
        "inprocess",
        env=DDTRACE_ENV,
    ),
)

BY_NAME = {c.name: c for c in CONFIGS}
#: what ``--quick`` compares
QUICK = (
    "none",
    "pysampler-import",
    "pysampler-cpu-100",
    "pysampler-cpu-1000",
    "pysampler-wall-100",
    "py-spy",
    "py-spy-nonblocking",
    "austin",
    "pyinstrument",
    "yappi",
    "cProfile",
    "ddtrace",
)

_IMPORTS = {
    "pysampler": "pysampler",
    "pyinstrument": "pyinstrument",
    "yappi": "yappi",
    "cProfile": "cProfile",
    "ddtrace": "ddtrace.profiling",
    "pyroscope-io": "pyroscope",
}


def unavailable(config: Config, outdir: str) -> str | None:
    """Why ``config`` cannot run on this machine, or None if it can.

    Each peer is tried for real (a short profiled ``python -c ...``), so a
    binary that does not run here (missing glibc symbol, no ptrace
    permission) is reported with its own error message.
    """
    if config.kind == "none":
        return None
    if config.kind == "external":
        cmd = [a.format(outdir=outdir) for a in config.prefix]
        if not shutil.which(cmd[0]) and not os.path.exists(cmd[0]):
            return f"{os.path.basename(cmd[0])} is not installed"
        try:
            proc = subprocess.run(
                # long enough for the tool to attach before the program ends
                [*cmd, sys.executable, "-c", "import time; time.sleep(0.5)"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{cmd[0]} did not run: {exc}"
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            return f"{os.path.basename(cmd[0])} exited {proc.returncode}: " + (
                err[-1] if err else "no output"
            )
        return None
    module = _IMPORTS["pysampler" if config.kind in ("pysampler", "import") else config.name]
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        return f"import {module} failed: " + (err[-1] if err else "no output")
    return None
