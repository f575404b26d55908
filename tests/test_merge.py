"""Profiles of several processes: merging, the members' wire format, and
what each writer and reader makes of a pid per thread."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import helpers
import pysampler
from pysampler import ProcessInfo, Profile
from pysampler.formats import cpuprofile, html, pprof
from pysampler.group import wire
from pysampler.merge import merge_heap_profiles, merge_profiles
from pysampler.profile import SAMPLE_COLUMNS, TREE_COLUMNS
from workloads import spin_cpu

A = ProcessInfo(101, 1.7e9, "founder", "python app.py")
B = ProcessInfo(202, 1.7e9 + 1, "forked from 101", 'python app.py --name "x"')


@pytest.fixture(scope="module")
def one() -> Profile:
    with pysampler.profile(hz=500) as p:
        spin_cpu(0.3)
    return p.profile


@pytest.fixture(scope="module")
def merged(one: Profile) -> Profile:
    return merge_profiles([(A, one), (B, wire.decode(wire.encode(one)))], ["pid 303: lost"])


def test_wire_round_trip_keeps_every_table(one: Profile) -> None:
    back = wire.decode(wire.encode(one))
    assert isinstance(back, Profile)
    assert back.frames == one.frames
    assert back.threads == one.threads
    assert back.metadata == one.metadata
    for name in (*TREE_COLUMNS, *SAMPLE_COLUMNS):
        assert back.column(name) == one.column(name), name
    with pytest.raises(ValueError):
        wire.decode(wire.encode(one)[:-3])


def test_merge_keeps_every_sample_with_its_process(one: Profile, merged: Profile) -> None:
    assert merged.sample_count == 2 * one.sample_count
    assert merged.total_ns == 2 * one.total_ns
    assert merged.processes == (A, B)
    assert [t.pid for t in merged.threads] == [101] * len(one.threads) + [202] * len(one.threads)
    assert len(merged.frames) == len(one.frames)  # shared, not repeated
    assert merged.functions()[0].function == "spin_cpu"
    assert merged.metadata.notes == ("pid 303: lost",)
    assert merged.metadata.pid == 0
    with pytest.raises(ValueError, match="twice"):
        merge_profiles([(A, one), (A, one)])


def test_pprof_labels_every_sample_with_its_pid_and_reads_it_back(
    merged: Profile, tmp_path: Path
) -> None:
    data = pprof.write(merged)
    back = pprof.read(data)
    assert isinstance(back, Profile)
    assert back.processes == (A._replace(start_time=round(A.start_time, 3)), B)
    assert {t.pid for t in back.threads} == {101, 202}
    assert back.metadata.notes == ("pid 303: lost",)
    path = tmp_path / "group.pb.gz"
    path.write_bytes(data)
    tags = helpers.go_pprof(str(path), tmp_path, "-tags")
    pids = tags.split("pid: Total")[1].split("\n\n")[0]
    assert set(re.findall(r"\): (\d+)$", pids, re.M)) == {"101", "202"}
    comments = helpers.go_pprof(str(path), tmp_path, "-comments")
    assert 'pysampler process pid=202 start=1700000001.000 role="forked from 101"' in comments
    assert "pysampler note: pid 303: lost" in comments


def test_a_lone_profile_has_no_pid_label(one: Profile) -> None:
    assert b"pysampler process" not in pprof.write(one)
    back = pprof.read(pprof.write(one))
    assert isinstance(back, Profile)
    assert not back.processes
    assert {t.pid for t in back.threads} == {0}


def test_cpuprofile_has_a_root_per_process_with_its_threads(merged: Profile) -> None:
    doc = json.loads(cpuprofile.write(merged))
    nodes = {n["id"]: n for n in doc["nodes"]}
    root = nodes[1]
    tops = [nodes[c]["callFrame"]["functionName"] for c in root["children"]]
    assert "Process 101: founder" in tops
    assert "Process 202: forked from 101" in tops
    for c in root["children"]:
        name = nodes[c]["callFrame"]["functionName"]
        if name.startswith("Process "):
            kids = [nodes[k]["callFrame"]["functionName"] for k in nodes[c]["children"]]
            assert kids and all(k.startswith("Thread: ") for k in kids)
    back = cpuprofile.read(cpuprofile.write(merged))
    assert {p.pid for p in back.processes} == {101, 202}
    assert {t.pid for t in back.threads} == {101, 202}
    assert back.functions()[0].function == "spin_cpu"


def test_html_tree_has_a_process_level(merged: Profile) -> None:
    tree = html.tree_data(merged)
    n_threads = len(tree["threads"])
    tops = [i for i, p in enumerate(tree["parent"]) if p == 0]
    assert sorted(-1 - tree["fn"][i] - n_threads for i in tops) == [0, 1]
    assert tree["processes"] == ["Process 101: founder", "Process 202: forked from 101"]
    for i, p in enumerate(tree["parent"]):
        if p in tops:
            assert -1 - tree["fn"][i] < n_threads  # a thread under its process


def test_collapsed_and_speedscope_name_the_process(merged: Profile) -> None:
    lines = merged.to_bytes("collapsed").decode().splitlines()
    assert lines and all(ln.startswith(("Process 101: founder;", "Process 202: ")) for ln in lines)
    doc = json.loads(merged.to_bytes("speedscope"))
    assert {p["name"].split(" Thread")[0] for p in doc["profiles"]} == {
        "Process 101",
        "Process 202",
    }


def test_heap_profiles_merge_with_a_pid_per_row() -> None:
    pysampler.heap.start(4096)
    keep = [bytearray(1000) for _ in range(2000)]
    one = pysampler.heap.stop()
    del keep
    merged = merge_heap_profiles([(A, one), (B, wire.decode(wire.encode(one)))])
    assert merged.inuse_bytes == pytest.approx(2 * one.inuse_bytes)
    assert set(merged.pid.tolist()) == {101, 202}
    back = pprof.read(merged.to_bytes("pprof"))
    assert {p.pid for p in back.processes} == {101, 202}  # type: ignore[union-attr]
    doc = json.loads(merged.to_bytes("heapprofile"))
    tops = [c["callFrame"]["functionName"] for c in doc["head"]["children"]]
    assert sorted(tops) == ["Process 101: founder", "Process 202: forked from 101"]
    assert {s["nodeId"] for s in doc["samples"]}
    tree = html.heap_tree_data(merged)
    tops = [i for i, p in enumerate(tree["parent"]) if p == 0]
    assert sorted(tree["fn"][i] for i in tops) == [-2, -1]
    assert tree["processes"] == ["Process 101: founder", "Process 202: forked from 101"]
    per_process = [tree["views"]["inuse_space"]["value"][i] for i in tops]
    assert per_process[0] == pytest.approx(per_process[1], rel=1e-6)
    assert back.inuse_bytes == pytest.approx(merged.inuse_bytes, rel=1e-3)  # type: ignore[union-attr]


def test_rows_standing_for_several_samples_keep_their_count(one: Profile) -> None:
    # a pprof file keeps one row per (thread, stack) with its count of samples
    counted = pprof.read(one.to_bytes("pprof"))
    assert isinstance(counted, Profile)
    assert max(counted.column("count")) > 1
    sent = wire.decode(wire.encode(counted))
    assert isinstance(sent, Profile)
    assert sent.column("count") == counted.column("count")
    merged = merge_profiles([(A, counted), (B, sent)])
    assert merged.sample_count == 2 * one.sample_count
    assert merged.column("count") == counted.column("count") * 2
    assert merged.functions()[0].self_samples == 2 * counted.functions()[0].self_samples
    back = pprof.read(merged.to_bytes("pprof"))
    assert isinstance(back, Profile)
    assert back.sample_count == merged.sample_count


def test_merging_sending_and_writing_load_no_numpy() -> None:
    helpers.run_python(
        """
        import sys
        import pysampler, pysampler.heap
        from pysampler import ProcessInfo
        from pysampler.group import wire
        from pysampler.merge import merge_heap_profiles, merge_profiles
        from workloads import spin_cpu

        with pysampler.profile(hz=500) as p:
            spin_cpu(0.2)
        pysampler.heap.start(4096)
        kept = [bytearray(1000) for _ in range(500)]
        heap = pysampler.heap.stop()
        a, b = ProcessInfo(1, 0.0, "a", ""), ProcessInfo(2, 0.0, "b", "")
        cpu = merge_profiles([(a, p.profile), (b, wire.decode(wire.encode(p.profile)))])
        mem = merge_heap_profiles([(a, heap), (b, wire.decode(wire.encode(heap)))])
        for name in ("pprof", "cpuprofile", "collapsed", "speedscope", "html"):
            assert cpu.to_bytes(name)
        for name in ("pprof", "heapprofile", "collapsed", "html"):
            assert mem.to_bytes(name)
        cpu.top(3), mem.top(3)
        assert "numpy" not in sys.modules, "numpy was imported"
        """
    )
