"""A row may stand for several samples (``Profile.count``): every sample
count a format or the API shows counts them, while a row's value stays its
CPU or wall time."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pysampler import Frame, Metadata, Profile, ThreadInfo, formats
from pysampler.formats import _protobuf as pb
from pysampler.formats import html

GO = shutil.which("go")


def merged() -> Profile:
    """Two threads; the first row of ``main`` stands for 3 samples."""
    frames = [
        Frame("main", "app.py", 1, 2),
        Frame("slow", "app.py", 10, 11),
        Frame("fast", "app.py", 20, 21),
    ]
    return Profile(
        frames=frames,
        stack_parent=[-1, 0, 0],
        stack_frame=[0, 1, 2],
        stack=[1, 2, 1],
        thread=[0, 0, 1],
        time_ns=[0, 30_000_000, 30_000_000],
        cpu_ns=[30_000_000, 10_000_000, 10_000_000],
        wall_ns=[30_000_000, 10_000_000, 10_000_000],
        count=[3, 1, 1],
        threads=[ThreadInfo(1, 11, "main"), ThreadInfo(2, 12, "worker")],
        metadata=Metadata("cpu", 100.0, 100.0, 1.7e9, 0.04),
    )


def with_count(p: Profile, count: list[int] | None) -> Profile:
    """``p``'s rows with another ``count`` (the default when None)."""
    names = ("stack_parent", "stack_frame", "stack", "thread", "time_ns", "cpu_ns", "wall_ns")
    columns = [p.column(n) for n in names]
    return Profile(p.frames, *columns, p.threads, p.metadata, count=count)


def test_count_defaults_to_one_sample_a_row() -> None:
    same = with_count(merged(), None)
    assert same.column("count").tolist() == [1, 1, 1]
    assert same.sample_count == 3


def test_api_counts_samples_not_rows() -> None:
    p = merged()
    assert p.sample_count == 5 and len(p.column("stack")) == 3
    assert p.thread_totals() == {0: (4, 40_000_000), 1: (1, 10_000_000)}
    assert sorted(p.stacks()) == [(0, [0, 1], 3, 30_000_000), (0, [0, 2], 1, 10_000_000),
                                  (1, [0, 1], 1, 10_000_000)]  # fmt: skip
    slow = next(f for f in p.functions() if f.function == "slow")
    assert (slow.self_samples, slow.self_value) == (4, 40_000_000)
    assert p.top().startswith("pysampler cpu profile: 5 samples,")


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        with_count(merged(), [3, -1, 1])


def _pprof_samples(data: bytes) -> list[list[int]]:
    out = []
    for field, _wire, value in pb.fields(gzip.decompress(data)):
        if field == 2 and isinstance(value, bytes):
            for f, _w, v in pb.fields(value):
                if f == 2:
                    out.append(pb.unpack(v))
    return out


def test_pprof_samples_count_is_the_rows_count(tmp_path: Path) -> None:
    data = merged().to_bytes("pprof")
    assert sorted(_pprof_samples(data)) == [
        [1, 10_000_000],
        [1, 10_000_000],
        [3, 30_000_000],
    ]
    back = formats.read(data)
    assert isinstance(back, Profile)
    assert back.sample_count == 5 and back.total_ns == 50_000_000
    if GO is None:
        return
    path = tmp_path / "merged.pprof"
    path.write_bytes(data)
    out = subprocess.run(
        [GO, "tool", "pprof", "-raw", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ).stdout
    # go's own reading: samples/count 3 for the merged row (locations slow, main)
    assert re.search(r"^\s*3\s+30000000: 1 2\s*$", out, re.MULTILINE), out


def test_cpuprofile_hit_counts_count_samples() -> None:
    doc = json.loads(merged().to_bytes("cpuprofile"))
    hits = {n["callFrame"]["functionName"]: 0 for n in doc["nodes"]}
    for n in doc["nodes"]:
        hits[n["callFrame"]["functionName"]] += n["hitCount"]
    assert hits["slow"] == 4 and hits["fast"] == 1
    ticks = [t for n in doc["nodes"] for t in n.get("positionTicks", ())]
    assert sum(t["ticks"] for t in ticks) == 5
    # the timeline still lasts what the rows' values say
    assert sum(doc["timeDeltas"]) + 10_000 == doc["endTime"] - doc["startTime"]


def test_cpuprofile_read_back_keeps_the_sample_count() -> None:
    prof = merged()
    back = formats.read(prof.to_bytes("cpuprofile"))
    assert back.sample_count == prof.sample_count == 5
    assert back.total_ns == prof.total_ns
    assert {f.function: f.self_samples for f in back.functions()} == {
        f.function: f.self_samples for f in prof.functions()
    }


def test_flame_graph_sample_counts_count_samples() -> None:
    tree = html.tree_data(merged())
    assert tree["samples"][0] == 5  # the root: every sample
    assert tree["value"][0] == 50_000_000
