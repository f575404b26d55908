"""Start-up cost of the PYSAMPLER_PORT hook while the variable is unset.

A throwaway virtualenv (no pip) is created; ``python -c pass`` is timed in
it with and without ``pysampler-hook.pth`` in its site-packages, the two
runs interleaved so machine noise hits both alike. Also reported: the .pth
line alone timed in-process, and the modules ``-X importtime`` sees imported
in both cases (they must be the same: the line imports nothing).

    python benchmarks/hook_startup.py [--runs 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hook_line() -> str:
    """The line setup.py writes into pysampler-hook.pth."""
    namespace: dict[str, object] = {}
    source = (ROOT / "setup.py").read_text()
    start = source.index("HOOK_LINE = ")
    exec(source[start : source.index("\n", start)], namespace)
    return str(namespace["HOOK_LINE"])


def imported(python: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [python, "-X", "importtime", "-c", "pass"], env=env, capture_output=True, text=True
    )
    return sorted(
        line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if "|" in line
    )[:-1]


def child_cpu() -> float:
    """CPU seconds used by finished children (less noisy than wall time on
    a loaded machine); 0 where the OS does not say."""
    try:
        import resource
    except ImportError:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    line = hook_line()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")}
    tmp = Path(tempfile.mkdtemp(prefix="pysampler-bench-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "v")], check=True)
        python = str(tmp / "v" / ("Scripts" if os.name == "nt" else "bin") / "python")
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        pth = Path(purelib) / "pysampler-hook.pth"

        times: dict[str, list[float]] = {"without": [], "with": []}
        cpu: dict[str, list[float]] = {"without": [], "with": []}
        for i in range(args.runs * 2):
            case = ("without", "with")[i % 2]
            if case == "with":
                pth.write_text(line)
            elif pth.exists():
                pth.unlink()
            c0 = child_cpu()
            t0 = time.perf_counter()
            subprocess.run([python, "-c", "pass"], env=env, check=True)
            times[case].append(time.perf_counter() - t0)
            cpu[case].append(child_cpu() - c0)

        pth.unlink(missing_ok=True)
        modules_without = imported(python, env)
        pth.write_text(line)
        modules_with = imported(python, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    os.environ.pop("PYSAMPLER_PORT", None)
    code = compile(line, "pysampler-hook.pth", "exec")
    n = 200_000
    per_line = min(timeit.repeat(lambda: exec(code, {}), number=n, repeat=5)) / n

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "python": sys.version.split()[0],
        "platform": sysconfig.get_platform(),
        "runs_each": args.runs,
        "startup_median_ms": {k: round(v * 1e3, 3) for k, v in med.items()},
        "startup_min_ms": {k: round(min(v) * 1e3, 3) for k, v in times.items()},
        "median_difference_ms": round((med["with"] - med["without"]) * 1e3, 3),
        "cpu_median_ms": {k: round(statistics.median(v) * 1e3, 3) for k, v in cpu.items()},
        "cpu_mean_ms": {k: round(statistics.fmean(v) * 1e3, 3) for k, v in cpu.items()},
        "ratio_with_to_without": round(med["with"] / med["without"], 4),
        "pth_line_alone_us": round(per_line * 1e6, 3),
        "extra_modules_imported": sorted(set(modules_with) - set(modules_without)),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
