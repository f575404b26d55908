"""pprof output, read back by the real reader: go tool pprof."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import pysampler
from pysampler import Profile
from pysampler.formats import _protobuf as pb
from workloads import Worker, busy_until, hot_and_cold, running_threads, spin_cpu

ROW = re.compile(r"^\s*[\d.]+\w*\s+[\d.]+%")
GO = shutil.which("go")
if GO is None:
    if os.environ.get("CI"):
        raise RuntimeError("go (Debian golang-go) is required to test pprof output")
    pytest.skip("go tool pprof is not installed", allow_module_level=True)


def pprof(*args: str) -> str:
    out = subprocess.run(
        [GO, "tool", "pprof", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def profile() -> Profile:
    with running_threads({"side": busy_until}), pysampler.profile(hz=500) as p:
        hot_and_cold(0.6, 0.75)
        Worker().crunch(0.2)
    return p.profile


def test_go_tool_pprof_top_shows_hot_function(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "out.pprof"
    profile.save(path)
    out = pprof("-top", "-nodecount=50", str(path))
    assert "Type: cpu" in out
    assert re.search(r"Duration: [\d.]+m?s", out)
    rows = [ln.split() for ln in out.splitlines() if ROW.match(ln)]
    flat_first = rows[0][-1]
    assert flat_first == "spin_cpu"
    names = {r[-1] for r in rows}
    assert {"hot", "cold", "Worker.crunch", "hot_and_cold", "busy_until"} <= names
    # "<module>" frames keep a name instead of the mapping's "[python]"
    assert "\u2039module\u203a" in names and "[python]" not in names


def test_go_tool_pprof_raw_totals_match_profile(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "out.pb.gz"
    profile.save(path)
    raw = pprof("-raw", str(path))
    assert "PeriodType: cpu nanoseconds" in raw
    assert "samples/count cpu/nanoseconds" in raw
    samples = re.findall(r"^\s+(\d+)\s+(\d+): [\d ]+$", raw, re.M)
    assert sum(int(c) for c, _ in samples) == profile.sample_count
    assert sum(int(v) for _, v in samples) == profile.total_ns
    assert "thread_name:[side]" in raw and "thread_name:[MainThread]" in raw


def test_go_tool_pprof_lists_real_lines(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "out.pprof"
    profile.save(path)
    out = pprof("-traces", str(path))
    assert re.search(r"Worker\.crunch\s*$", out, re.M)
    lines = pprof("-top", "-lines", str(path))
    found = [int(n) for n in re.findall(r"spin_cpu .*workloads\.py:(\d+)", lines)]
    first = spin_cpu.__code__.co_firstlineno
    assert found and all(first < n <= first + 8 for n in found), (found, first)


def test_go_tool_pprof_tags_filter_by_thread(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "out.pprof"
    profile.save(path)
    out = pprof("-top", "-tagfocus=thread_name=side", str(path))
    names = {ln.split()[-1] for ln in out.splitlines() if ROW.match(ln)}
    assert "busy_until" in names and "hot" not in names


def test_wall_mode_writes_wall_sample_type(tmp_path: Path) -> None:
    with pysampler.profile(mode="wall", hz=200) as p:
        Worker().crunch(0.1)
    path = tmp_path / "wall.pprof"
    p.save(path)
    assert "Type: wall" in pprof("-top", str(path))


def test_pprof_structure(profile: Profile) -> None:
    data = gzip.decompress(profile.to_bytes("pprof"))
    strings: list[str] = []
    functions, locations, samples, mappings = [], [], [], []
    for field, _, value in pb.fields(data):
        if field == 6:
            assert isinstance(value, bytes)
            strings.append(value.decode())
        elif field == 5:
            functions.append(value)
        elif field == 4:
            locations.append(value)
        elif field == 2:
            samples.append(value)
        elif field == 3:
            mappings.append(value)
    assert strings[0] == ""
    assert len(mappings) == 1
    assert len(locations) == len(profile.frames)
    names = set()
    for f in functions:
        assert isinstance(f, bytes)
        d = {k: v for k, _, v in pb.fields(f)}
        name, system_name = strings[d[2]], strings[d[3]]  # type: ignore[index]
        names.add(system_name)
        # go tool pprof strips "<...>" from names: the shown name keeps
        # the text in single angle quotation marks
        assert name == system_name.replace("<", "\u2039").replace(">", "\u203a")
    assert "Worker.crunch" in names
    assert "<module>" in names
