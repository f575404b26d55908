"""Heap profiles read back (pprof heap, ours and Go's; .heapprofile) and
through the command line: `pysampler top` prints bytes, `convert` writes
HTML and collapsed stacks with the same totals."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from heap_workloads import MIB, SAMPLE_BYTES, heap_profile
from pysampler import HeapProfile, Profile, formats


@pytest.fixture(scope="module")
def snap() -> HeapProfile:
    return heap_profile()


def rows(profile: HeapProfile) -> dict[tuple[tuple[str, ...], int], tuple[int, int]]:
    """(function names root first, block size) -> (alloc, in-use sample counts)."""
    out: dict[tuple[tuple[str, ...], int], tuple[int, int]] = {}
    for node, size, a, i in zip(
        profile.stack.tolist(),
        profile.size.tolist(),
        profile.alloc_count.tolist(),
        profile.inuse_count.tolist(),
    ):
        key = (tuple(profile.frames[f].function for f in profile.stack_of(node)), size)
        old = out.get(key, (0, 0))
        out[key] = (old[0] + a, old[1] + i)
    return out


def totals(profile: HeapProfile) -> dict[str, float]:
    return {f.function: f.total_value for f in profile.functions()}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysampler", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pprof_heap_reads_back_as_the_same_heap_profile(snap: HeapProfile) -> None:
    for view in ("inuse", "alloc"):
        back = formats.read(snap.with_view(view).to_bytes("pprof"))
        assert isinstance(back, HeapProfile)
        assert back.view == view  # from the default sample type
        # sample counts come back exactly from the unsampled estimates
        assert rows(back) == rows(snap)
        assert back.metadata.sample_bytes == SAMPLE_BYTES
        assert back.metadata.pid == snap.metadata.pid
        assert back.metadata.sampled_allocations == snap.metadata.sampled_allocations
        assert back.metadata.duration == pytest.approx(snap.metadata.duration, abs=1e-6)
        n = len(snap.stack)
        assert back.inuse_bytes == pytest.approx(snap.inuse_bytes, abs=n)
        assert back.alloc_bytes == pytest.approx(snap.alloc_bytes, abs=n)
        for name, value in totals(snap.with_view(view)).items():
            assert totals(back)[name] == pytest.approx(value, abs=n)


def test_heapprofile_reads_back_with_bytes_per_stack(snap: HeapProfile) -> None:
    data = snap.to_bytes("heapprofile")
    assert formats.sniff(data).name == "heapprofile"
    back = formats.read(data)
    assert isinstance(back, HeapProfile) and back.view == "inuse"
    # one sample in the file per sampled block in use
    assert int(back.inuse_count.sum()) == int(snap.inuse_count.sum())
    samples = int(snap.inuse_count.sum())
    assert back.inuse_bytes == pytest.approx(snap.inuse_bytes, abs=samples)
    theirs = totals(back)
    for name, value in totals(snap).items():
        if value:
            assert theirs[name] == pytest.approx(value, abs=samples), name
    # and what is read back writes the same numbers again
    again = formats.read(back.to_bytes("heapprofile"))
    assert isinstance(again, HeapProfile)
    assert rows(again) == rows(back)


def test_heapprofile_from_v8_keeps_self_sizes() -> None:
    """V8 lists the sampled block sizes; ``selfSize`` is the estimate."""

    def node(
        id_: int, name: str, self_size: int, *children: dict[str, object]
    ) -> dict[str, object]:
        frame = {
            "functionName": name,
            "scriptId": "3",
            "url": "app.js",
            "lineNumber": id_,
            "columnNumber": 4,
        }
        return {"callFrame": frame, "selfSize": self_size, "id": id_, "children": list(children)}

    doc = {
        "head": node(
            1, "(root)", 0, node(2, "main", 0, node(3, "load", 800_000), node(4, "", 4096))
        ),
        "samples": [
            {"size": 64, "nodeId": 3, "ordinal": 1},
            {"size": 32, "nodeId": 3, "ordinal": 2},
            {"size": 4096, "nodeId": 4, "ordinal": 3},
        ],
    }
    # pretty-printed, keys in another order: still told from a .cpuprofile
    data = json.dumps({"samples": doc["samples"], "head": doc["head"]}, indent=2).encode()
    back = formats.read(data)
    assert isinstance(back, HeapProfile)
    assert totals(back) == {"main": 804_096, "load": 800_000, "(anonymous)": 4096}
    load = next(f for f in back.frames if f.function == "load")
    assert (load.filename, load.first_line) == ("app.js", 4)


def test_cli_top_prints_bytes_of_heap_pprof_and_heapprofile(
    snap: HeapProfile, tmp_path: Path
) -> None:
    snap.save(tmp_path / "heap.pprof")
    snap.save(tmp_path / "x.heapprofile")
    for name in ("heap.pprof", "x.heapprofile"):
        out = cli("top", str(tmp_path / name), "-n", "5")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        m = re.match(r"pysampler heap profile \(inuse\): ([\d.]+) MiB in use \(", lines[0])
        assert m, lines[0]
        assert float(m.group(1)) == pytest.approx(snap.inuse_bytes / MIB, abs=0.051)
        first = lines[2].split()
        assert first[1] == "MiB" and first[4] == "keep_big", lines
        assert float(first[0]) == pytest.approx(8.0, abs=1.0)  # 8 MiB kept, sampled
    alloc = cli("top", str(tmp_path / "heap.pprof"), "--view", "alloc")
    assert alloc.returncode == 0, alloc.stderr
    assert " allocated " in alloc.stdout.splitlines()[0]
    assert alloc.stdout.splitlines()[2].split()[4] == "churn"


def test_cli_convert_heap_pprof_to_html_and_collapsed_keeps_totals(
    snap: HeapProfile, tmp_path: Path
) -> None:
    src = tmp_path / "heap.pprof"
    snap.save(src)
    for out in ("heap.html", "heap.collapsed", "again.heapprofile"):
        proc = cli("convert", str(src), "-o", str(tmp_path / out))
        assert proc.returncode == 0, proc.stderr
    n = len(snap.stack)
    page = (tmp_path / "heap.html").read_text()
    m = re.search(r'<script id="profile-data" type="application/json">(.*?)</script>', page, re.S)
    assert m
    data = json.loads(m.group(1))
    assert data["kind"] == "heap" and data["view"] == "inuse_space"
    assert data["value"][0] == pytest.approx(snap.inuse_bytes, abs=n)
    assert data["views"]["alloc_space"]["value"][0] == pytest.approx(snap.alloc_bytes, abs=n)
    assert data["samples"][0] == int(snap.inuse_count.sum())
    lines = (tmp_path / "heap.collapsed").read_text().splitlines()
    assert sum(int(ln.rsplit(" ", 1)[1]) for ln in lines) == pytest.approx(snap.inuse_bytes, abs=n)
    heaviest = max(lines, key=lambda ln: int(ln.rsplit(" ", 1)[1]))
    assert heaviest.rsplit(" ", 1)[0].split(";")[-1].startswith("keep_big (")
    again = formats.read((tmp_path / "again.heapprofile").read_bytes())
    assert isinstance(again, HeapProfile)
    assert again.inuse_bytes == pytest.approx(snap.inuse_bytes, abs=n + int(snap.inuse_count.sum()))
    # a heap profile has no CPU-profile form: one line, status 1
    bad = cli("convert", str(src), "-o", str(tmp_path / "heap.cpuprofile"))
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "does not write heap profiles" in bad.stderr
    assert cli("top", str(src), "--view", "banana").returncode == 2


def test_view_option_refuses_cpu_profiles(tmp_path: Path) -> None:
    import pysampler

    with pysampler.profile(hz=200) as p:
        sum(range(100_000))
    p.save(tmp_path / "cpu.pprof")
    out = cli("top", str(tmp_path / "cpu.pprof"), "--view", "alloc")
    assert out.returncode == 1 and "--view applies to heap profiles" in out.stderr
    assert isinstance(formats.read((tmp_path / "cpu.pprof").read_bytes()), Profile)


GO_HEAP_PROGRAM = """package main

import (
\t"os"
\t"runtime"
\t"runtime/pprof"
)

var kept [][]byte

//go:noinline
func keepBlocks(n, size int) {
\tfor i := 0; i < n; i++ {
\t\tkept = append(kept, make([]byte, size))
\t}
}

//go:noinline
func churn(n, size int) int {
\ttotal := 0
\tfor i := 0; i < n; i++ {
\t\tb := make([]byte, size)
\t\ttotal += len(b)
\t}
\treturn total
}

//go:noinline
func warmUp(n, size int) int {
\ttotal := 0
\tfor i := 0; i < n; i++ {
\t\tb := make([]byte, size)
\t\ttotal += len(b)
\t}
\treturn total
}

func main() {
\truntime.MemProfileRate = 16 * 1024
\t// the next sample was drawn at the default rate (512 KiB): allocate
\t// well past it so that the samples that count are drawn at the new rate
\twarmUp(64, 256*1024)
\tkeepBlocks(256, 32*1024)
\tchurn(512, 32*1024)
\t// the heap profile is as of the last completed collection
\truntime.GC()
\tf, err := os.Create(os.Args[1])
\tif err != nil {
\t\tpanic(err)
\t}
\tif err := pprof.WriteHeapProfile(f); err != nil {
\t\tpanic(err)
\t}
\tf.Close()
\truntime.KeepAlive(kept)
}
"""


def go_tool_flat(go: str, path: Path, index: str) -> dict[str, int]:
    """Bytes per function (flat) as ``go tool pprof -top`` reads the file."""
    out = subprocess.run(
        [
            go,
            "tool",
            "pprof",
            f"-sample_index={index}",
            "-top",
            "-unit=B",
            "-nodecount=1000",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    flat = {}
    for m in re.finditer(
        r"^\s*(\d+)B?\s+[\d.]+%\s+[\d.]+%\s+\d+B?\s+[\d.]+%\s+(\S+)$", out.stdout, re.M
    ):
        flat[m.group(2)] = int(m.group(1))
    return flat


def test_heap_pprof_from_go_runtime(tmp_path: Path) -> None:
    """A heap profile written by Go's runtime/pprof reads as a HeapProfile
    with the numbers go tool pprof reads in it."""
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            raise RuntimeError("go (Debian golang-go) is required")
        pytest.skip("go is not installed")
    (tmp_path / "main.go").write_text(GO_HEAP_PROGRAM)
    out = tmp_path / "go-heap.pprof"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "off"}
    build = subprocess.run(
        [go, "build", "-o", "heapprog", "main.go"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert build.returncode == 0, build.stderr
    # one P: the program's warm-up redraws the next sample of the only one
    proc = subprocess.run(
        [str(tmp_path / "heapprog"), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "GOMAXPROCS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    prof = formats.read(out.read_bytes())
    assert isinstance(prof, HeapProfile)
    assert prof.view == "inuse"
    assert prof.metadata.sample_bytes == 16 * 1024
    inuse = {f.function: f.self_value for f in prof.functions()}
    alloc = {f.function: f.self_value for f in prof.with_view("alloc").functions()}
    # what Go wrote, to a byte per row (Go truncates its estimates)
    for index, ours in (("inuse_space", inuse), ("alloc_space", alloc)):
        for name, value in go_tool_flat(go, out, index).items():
            if value:
                assert ours[name] == pytest.approx(value, abs=len(prof.stack) + 1), (index, name)
    # and what the program did: 8 MiB kept, 16 MiB more allocated and dropped
    assert inuse["main.keepBlocks"] == pytest.approx(8 * MIB, rel=0.25)
    assert inuse.get("main.churn", 0) < 0.05 * 8 * MIB
    assert alloc["main.churn"] == pytest.approx(16 * MIB, rel=0.25)
    top = cli("top", str(out), "-n", "3")
    assert top.returncode == 0, top.stderr
    assert top.stdout.splitlines()[2].split()[4] == "main.keepBlocks"
    conv = cli("convert", str(out), "-o", str(tmp_path / "go-heap.html"))
    assert conv.returncode == 0, conv.stderr
