"""Reading profiles back (for `convert` and `top`): pprof and .cpuprofile,
ours and other tools'; round trips keep totals."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pysampler
from pysampler import Profile, formats
from pysampler.formats import _protobuf as pb
from workloads import Worker, busy_until, hot_and_cold, running_threads


@pytest.fixture(scope="module")
def profile() -> Profile:
    with running_threads({"side": busy_until}), pysampler.profile(hz=500) as p:
        hot_and_cold(0.3, 0.75)
        Worker().crunch(0.1)
    return p.profile


def by_function(profile: Profile) -> dict[str, tuple[int, int]]:
    return {f.function: (f.self_samples, round(f.total_value)) for f in profile.functions()}


def test_pprof_round_trip_keeps_everything_a_profile_reports(profile: Profile) -> None:
    back = formats.read(profile.to_bytes("pprof"))
    assert back.total_ns == profile.total_ns
    assert back.sample_count == profile.sample_count
    assert back.mode == profile.mode
    assert by_function(back) == by_function(profile)
    names = {t.name: v for t, v in zip(back.threads, back.thread_totals().values())}
    assert names == {t.name: v for t, v in zip(profile.threads, profile.thread_totals().values())}
    assert {t.ident for t in back.threads} <= {t.ident for t in profile.threads}
    m, b = profile.metadata, back.metadata
    assert (b.hz_requested, b.pid, b.python_version) == (m.hz_requested, m.pid, m.python_version)
    assert b.hz_delivered == pytest.approx(m.hz_delivered, abs=0.05)
    assert b.duration == pytest.approx(m.duration, abs=1e-6)
    assert b.start_time == pytest.approx(m.start_time, abs=1e-6)
    # and what is read back writes the same pprof samples again
    again = formats.read(back.to_bytes("pprof"))
    assert by_function(again) == by_function(profile)


def test_wall_mode_survives_pprof_round_trip() -> None:
    with pysampler.profile(hz=200, mode="wall") as p:
        time.sleep(0.1)
    back = formats.read(p.profile.to_bytes("pprof"))
    assert back.mode == "wall"
    assert back.total_ns == p.profile.total_ns


def test_cpuprofile_round_trip_keeps_totals_per_thread(profile: Profile) -> None:
    back = formats.read(profile.to_bytes("cpuprofile"))
    # the format counts whole microseconds
    assert abs(back.total_ns - profile.total_ns) <= 1000 * profile.sample_count
    assert back.sample_count == profile.sample_count
    ours = {t.name: v for t, (_, v) in zip(profile.threads, profile.thread_totals().values()) if v}
    theirs = {t.name: v for t, (_, v) in zip(back.threads, back.thread_totals().values())}
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        assert abs(theirs[name] - value) <= 1000 * profile.sample_count
    top = back.functions()[0]
    assert top.function == "spin_cpu"


def test_pprof_convert_to_html_and_collapsed_keeps_totals(profile: Profile, tmp_path: Path) -> None:
    src = tmp_path / "in.pprof"
    profile.save(src)
    for out in ("out.html", "out.collapsed"):
        proc = subprocess.run(
            [sys.executable, "-m", "pysampler", "convert", str(src), "-o", str(tmp_path / out)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "out.html").read_text()
    m = re.search(r'<script id="profile-data" type="application/json">(.*?)</script>', page, re.S)
    assert m
    data = json.loads(m.group(1))
    assert data["value"][0] == profile.total_ns
    assert data["samples"][0] == profile.sample_count
    lines = (tmp_path / "out.collapsed").read_text().splitlines()
    total_ms = sum(int(line.rsplit(" ", 1)[1]) for line in lines)
    assert (tmp_path / "out.collapsed").read_bytes() == profile.to_bytes("collapsed")
    assert abs(total_ms - profile.total_ns / 1e6) <= len(lines)


def _value_type(strings: dict[str, int], type_: str, unit: str) -> pb.Message:
    for s in (type_, unit):
        strings.setdefault(s, len(strings))
    return pb.Message().uint(1, strings[type_]).uint(2, strings[unit])


def test_foreign_pprof_several_types_inlined_frames_and_no_lines() -> None:
    """A profile as another tool might write it: alloc and cpu types with
    cpu not first, microseconds, an inlined call, a location without line
    information, no thread labels, no gzip."""
    strings: dict[str, int] = {"": 0}

    def s(text: str) -> int:
        return strings.setdefault(text, len(strings))

    msg = pb.Message()
    msg.sub(1, _value_type(strings, "alloc_space", "bytes"))
    msg.sub(1, _value_type(strings, "samples", "count"))
    msg.sub(1, _value_type(strings, "cpu", "microseconds"))
    # stack leaf first: location 2 (inlined: inner() within outer()), then 1 (main)
    msg.sub(2, pb.Message().packed(1, [2, 1]).packed(2, [4096, 3, 30_000]))
    msg.sub(2, pb.Message().packed(1, [3, 1]).packed(2, [0, 1, 10_000]))
    msg.sub(3, pb.Message().uint(1, 1).uint(5, s("/usr/lib/libfoo.so")))
    msg.sub(4, pb.Message().uint(1, 1).uint(2, 1).sub(4, pb.Message().uint(1, 1).uint(2, 10)))
    msg.sub(
        4,
        pb.Message()
        .uint(1, 2)
        .uint(2, 1)
        .sub(4, pb.Message().uint(1, 3).uint(2, 7))  # innermost first
        .sub(4, pb.Message().uint(1, 2).uint(2, 21)),
    )
    msg.sub(4, pb.Message().uint(1, 3).uint(2, 1).uint(3, 0xBEEF))  # no lines
    for fid, name in ((1, "main"), (2, "outer"), (3, "inner")):
        msg.sub(
            5,
            pb.Message().uint(1, fid).uint(2, s(name)).uint(4, s("app.go")).uint(5, fid * 100),
        )
    msg.uint(10, 2_000_000_000)
    table = pb.Message()
    for text in strings:
        table.text(6, text)
    data = msg.encode() + table.encode()

    prof = formats.read(data)
    assert prof.mode == "cpu"
    assert prof.total_ns == 40_000_000  # microseconds -> ns, the cpu type chosen
    assert prof.sample_count == 4  # samples/count honoured
    assert [t.name for t in prof.threads] == ["all"]
    stacks = {
        tuple(prof.frames[f].function for f in frames): value
        for _, frames, _, value in prof.stacks()
    }
    assert stacks == {("main", "outer", "inner"): 30_000_000, ("main", "0xbeef"): 10_000_000}
    inner = next(f for f in prof.frames if f.function == "inner")
    assert (inner.filename, inner.first_line, inner.line) == ("app.go", 300, 7)
    unknown = next(f for f in prof.frames if f.function == "0xbeef")
    assert unknown.filename == "/usr/lib/libfoo.so"


def test_pprof_from_go_runtime(tmp_path: Path) -> None:
    """A CPU profile written by Go's runtime/pprof."""
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            raise RuntimeError("go (Debian golang-go) is required")
        pytest.skip("go is not installed")
    (tmp_path / "main.go").write_text(GO_PROGRAM)
    out = tmp_path / "go.pprof"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "off"}
    proc = subprocess.run(
        [go, "run", "main.go", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert gzip.decompress(out.read_bytes())
    prof = formats.read(out.read_bytes())
    assert prof.mode == "cpu"
    assert prof.sample_count > 10
    totals = {f.function: f.total_value for f in prof.functions()}
    assert totals["main.hotLoop"] >= 0.8 * prof.total_ns
    top = subprocess.run(
        [sys.executable, "-m", "pysampler", "top", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert top.returncode == 0 and "main.hotLoop" in top.stdout


GO_PROGRAM = """package main

import (
\t"os"
\t"runtime/pprof"
\t"time"
)

//go:noinline
func hotLoop(d time.Duration) int {
\tn := 0
\tfor end := time.Now().Add(d); time.Now().Before(end); {
\t\tn++
\t}
\treturn n
}

func main() {
\tf, err := os.Create(os.Args[1])
\tif err != nil {
\t\tpanic(err)
\t}
\tpprof.StartCPUProfile(f)
\thotLoop(400 * time.Millisecond)
\tpprof.StopCPUProfile()
\tf.Close()
}
"""


def test_unreadable_data_is_a_value_error() -> None:
    for data in (b"", b"hello", b"\x1f\x8bnot gzip", b"{not json", b'{"nodes": 3}'):
        with pytest.raises(ValueError):
            formats.read(data)
    with pytest.raises(ValueError, match="cannot read html"):
        formats.get("html").read(b"<html>")
