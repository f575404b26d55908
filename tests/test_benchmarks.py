"""The overhead suite's runner end to end, on one tiny workload: the shape of
what it writes, never how fast anything was (speed is for benchmarks/)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import repo_path

# the suite reads resource usage (getrusage): POSIX only
pytest.importorskip("resource")

RUNNER = repo_path("benchmarks/run.py")


def test_runner_writes_results_for_each_configuration(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--workloads",
            "deep_recursion",
            "--configs",
            "none,pysampler-import,pysampler-cpu-1000",
            "--reps",
            "2",
            "--seconds",
            "0.05",
            "--micro",
            "none",
            "--no-chart",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        # the installed package (an editable build or a wheel), whichever
        # this interpreter has
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "results.json").read_text())

    assert [c["name"] for c in data["configs"]] == [
        "none",
        "pysampler-import",
        "pysampler-cpu-1000",
    ]
    assert all(c["available"] and c["reason"] is None for c in data["configs"])
    assert data["workloads"]["deep_recursion"]["loops"] >= 1
    assert len(data["meta"]["loadavg_before"]) == 3
    assert data["meta"]["reps"] == 2

    # interleaved: every (config, rep) ran once, no failures
    runs = data["runs"]
    assert sorted((r["config"], r["rep"]) for r in runs) == [
        ("none", 0),
        ("none", 1),
        ("pysampler-cpu-1000", 0),
        ("pysampler-cpu-1000", 1),
        ("pysampler-import", 0),
        ("pysampler-import", 1),
    ]
    for r in runs:
        assert "error" not in r, r
        assert r["wall_s"] > 0 and r["cpu_s"] >= 0 and r["tree_cpu_s"] > 0
        assert r["tree_cpu_s"] >= r["cpu_s"] * 0.9  # the tree includes the timed body
        assert isinstance(r["load1"], float)

    # pysampler reports what it delivered, from Profile.metadata
    sampled = [r for r in runs if r["config"] == "pysampler-cpu-1000"]
    for r in sampled:
        assert r["profiler"]["hz_requested"] == 1000
        assert r["profiler"]["sampling_events"] > 0
        assert 0 < r["profiler"]["hz_delivered"] <= 1100
        assert r["start_s"] > 0 and r["stop_s"] > 0

    row = data["results"]["deep_recursion"]
    assert row["none"]["wall_ratio"] == 1.0
    assert len(row["pysampler-cpu-1000"]["wall_ratios"]) == 2
    assert row["pysampler-cpu-1000"]["wall_ratio"] > 0
    summary = data["summary"]["pysampler-cpu-1000"]
    assert math.isfinite(summary["geomean_wall_ratio"])
    assert summary["hz_requested"] == 1000
    assert data["targets"]["pysampler-cpu-1000"]["max_overhead"] == 0.03
    assert data["chart"] is None  # --no-chart

    # the import and the sampling, apart: import-only against none, the
    # session against import-only
    assert all(r["profiler"] is None for r in runs if r["config"] == "pysampler-import")
    split = data["split"]
    assert split["columns"] == ["import", "pysampler-cpu-1000"]
    row = split["per_workload"]["deep_recursion"]
    assert row["import"] > 0 and row["pysampler-cpu-1000"] > 0
    assert data["targets"]["pysampler-import"]["max_overhead"] == 0.01

    table = (out / "results.md").read_text()
    assert "| pysampler-cpu-1000 |" in table
    assert "| deep_recursion |" in table
    assert "## pysampler: import cost and sampling cost" in table


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="--pin needs Linux and two CPUs",
)
def test_pinned_runs_keep_the_program_and_the_profiler_apart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            *("--workloads", "threads8", "--configs", "none,pysampler-cpu-1000"),
            *("--reps", "1", "--seconds", "0.05", "--micro", "none", "--no-chart"),
            *("--pin", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "results.json").read_text())
    pin = data["meta"]["pin"]
    assert pin["work"] != pin["tool"]
    by_config = {r["config"]: r for r in data["runs"]}
    assert by_config["none"]["pinned"] == {"program": [pin["work"]], "profiler_threads": []}
    sampled = by_config["pysampler-cpu-1000"]["pinned"]
    assert sampled["program"] == [pin["work"]]
    # pysampler's native threads (timer, writer), moved to the other CPU
    assert sampled["profiler_threads"] and all(
        cpus == [pin["tool"]] for cpus in sampled["profiler_threads"]
    )
    assert "Pinned (`--pin`)" in (out / "results.md").read_text()


def test_runner_rejects_unknown_names(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--configs", "no-such-profiler", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no-such-profiler" in proc.stderr
    assert not (tmp_path / "results.json").exists()


def run_benchmark(script: str, *args: str) -> None:
    """Run ``benchmarks/<script>`` with this interpreter; it must succeed."""
    proc = subprocess.run(
        [sys.executable, str(repo_path(f"benchmarks/{script}")), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYSAMPLER_")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_output_benchmark_times_each_format(tmp_path: Path) -> None:
    out = tmp_path / "build.json"
    size = ("--seconds", "2", "--hz", "100", "--threads", "2", "--nodes", "300")
    run_benchmark(
        "build_output.py",
        *size,
        "--rounds",
        "1",
        "--formats",
        "pprof,cpuprofile",
        "--json",
        str(out),
    )
    data = json.loads(out.read_text())
    assert data["rows"] == 2 * 100 * 2
    assert set(data["table"]) == {"pprof", "cpuprofile"}
    for row in data["table"].values():
        (cell,) = row.values()  # one interpreter: this one
        assert cell["total_s"] >= cell["build_s"] > 0


def test_hook_startup_benchmark_reports_the_idle_endpoint(tmp_path: Path) -> None:
    out = tmp_path / "hook.json"
    run_benchmark("hook_startup.py", "--runs", "1", "--enabled-runs", "2", "--json", str(out))
    idle = json.loads(out.read_text())["idle_endpoint"]
    assert idle["runs_each"] == 2
    assert idle["threads_difference"] == 1  # the endpoint's accept thread
    assert idle["numpy_loaded"] is False
    assert set(idle["startup_median_ms"]) == {"with", "without"}
    assert idle["rss_difference_mib"] is not None
