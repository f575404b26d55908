"""Start-up cost of the PYSAMPLER_PORT hook: unset, and with an idle endpoint.

Unset: a throwaway virtualenv (no pip) is created; ``python -c pass`` is
timed in it with and without ``pysampler-hook.pth`` in its site-packages,
the two runs interleaved so machine noise hits both alike. Also reported:
the .pth line alone timed in-process, and the modules ``-X importtime``
sees imported in both cases (they must be the same: the line imports
nothing).

Idle endpoint: this interpreter (pysampler installed, hook included) is
started ``--enabled-runs`` times with ``PYSAMPLER_PORT=0`` and as many
times without, interleaved; each start runs a probe that reports its RSS,
its thread count (both read from /proc on Linux) and whether numpy is
loaded. Reported: medians of start-up (wall time of the whole process) and
RSS, and the thread counts, with and without, and their differences; and
the modules the endpoint imports (``-X importtime``), slowest first.

    python benchmarks/hook_startup.py [--runs 200] [--enabled-runs 30] [--json out.json]
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
    """The line setup.py writes into pysampler-hook.pth; without a source
    tree (a wheel under test), the line the installed file holds."""
    if not (ROOT / "setup.py").exists():
        installed = Path(sysconfig.get_paths()["purelib"], "pysampler-hook.pth")
        return installed.read_text()
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


#: what each start of the idle-endpoint comparison runs: its own footprint
PROBE = """
import json, os, sys
rss = threads = None
try:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
except OSError:
    pass
print(json.dumps({"rss_kb": rss, "threads": threads, "numpy": "numpy" in sys.modules}))
"""


def enabled(runs: int) -> dict[str, object]:
    """Idle endpoint against no endpoint, in this interpreter."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")}
    envs = {"without": base, "with": {**base, "PYSAMPLER_PORT": "0"}}
    seen: dict[str, list[dict[str, object]]] = {"without": [], "with": []}
    wall: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}
    for i in range(runs * 2):
        # ABBA order, so that drift in the machine's load hits both alike
        case = ("without", "with")[i % 2 if (i // 2) % 2 == 0 else 1 - i % 2]
        c0 = child_cpu()
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", PROBE],
            env=envs[case],
            capture_output=True,
            text=True,
            check=True,
        )
        wall[case].append(time.perf_counter() - t0)
        cpu[case].append(child_cpu() - c0)
        seen[case].append(json.loads(out.stdout))
    med = {k: statistics.median(v) * 1e3 for k, v in wall.items()}
    rss = {
        k: statistics.median(int(str(r["rss_kb"])) for r in v) if v[0]["rss_kb"] else None
        for k, v in seen.items()
    }
    threads = {k: statistics.median(int(str(r["threads"])) for r in v) for k, v in seen.items()}
    # the fastest of a few runs per module: other jobs only ever add time
    best: dict[str, int] = {}
    for _ in range(5):
        timing = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "pass"],
            env=envs["with"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        for line in timing.splitlines():
            if "|" in line and not line.startswith("import time: self"):
                _, _self_us, cumulative_us, name = (
                    x.strip() for x in line.replace(":", "|", 1).split("|")
                )
                best[name] = min(best.get(name, 1 << 62), int(cumulative_us))
    hook_tree = [(name, 0, us) for name, us in best.items()]
    hook = next((t for t in hook_tree if t[0] == "_pysampler_hook"), None)
    return {
        "runs_each": runs,
        "startup_median_ms": {k: round(v, 2) for k, v in med.items()},
        "startup_difference_ms": round(med["with"] - med["without"], 2),
        # CPU time of the whole process: less disturbed by other jobs than wall time
        "cpu_median_ms": {k: round(statistics.median(v) * 1e3, 2) for k, v in cpu.items()},
        "cpu_difference_ms": round(
            (statistics.median(cpu["with"]) - statistics.median(cpu["without"])) * 1e3, 2
        ),
        "rss_median_kib": rss,
        "rss_difference_mib": (
            round((rss["with"] - rss["without"]) / 1024, 2) if rss["with"] is not None else None
        ),
        "threads_median": threads,
        "threads_difference": threads["with"] - threads["without"],
        "numpy_loaded": any(bool(r["numpy"]) for r in seen["with"]),
        "hook_import_ms": round(hook[2] / 1e3, 2) if hook else None,
        "slowest_imports_ms": [
            (name, round(cumulative / 1e3, 2))
            for name, _, cumulative in sorted(hook_tree, key=lambda t: -t[2])[:12]
        ],
    }


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
    parser.add_argument("--enabled-runs", type=int, default=30)
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
        "idle_endpoint": enabled(args.enabled_runs) if args.enabled_runs > 0 else None,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
