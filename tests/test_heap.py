"""Heap profiling: accuracy of the in-use and allocation estimates, the API,
and the outputs read back by their readers (go tool pprof; the DevTools
sampling-heap-profile rules for .heapprofile)."""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pysampler
from pysampler import HeapProfile, ProfilerAlreadyRunning, ProfilerNotRunning, _sampler
from pysampler.formats import _protobuf as pb
from pysampler.profile import TRUNCATED_FUNCTION

MIB = 1 << 20
TARGET = 64 * MIB
#: 64 KiB between samples gives ~1000 samples of 64 MiB: a relative standard
#: error near 3%, so +-10% is a >3-sigma bound (the default 512 KiB gives
#: ~130 samples, +-9% one sigma: right for production, too loose for a test)
RATE = 64 * 1024


def plan_mixed(total: int = TARGET, seed: int = 5) -> list[tuple[str, int]]:
    """Objects of mixed kinds and sizes (8 B to 256 KiB, log-uniform)
    whose sizes add up to about ``total`` bytes."""
    rng = random.Random(seed)
    sizeof = {"b": 33, "s": 49, "a": 57}
    out: list[tuple[str, int]] = []
    acc = 0
    while acc < total:
        n = int(math.exp(rng.uniform(math.log(8), math.log(256 * 1024))))
        kind = rng.choice("bsat")
        out.append((kind, n))
        acc += 40 + 8 * (n // 8) if kind == "t" else n + sizeof[kind]
    return out


def keep_mixed(items: list[tuple[str, int]]) -> list[Any]:
    """Allocate and keep bytes, str, bytearray and tuple objects."""
    kept: list[Any] = []
    for kind, n in items:
        if kind == "b":
            kept.append(bytes(n))
        elif kind == "s":
            kept.append("x" * n)
        elif kind == "a":
            kept.append(bytearray(n))
        else:
            kept.append((None,) * (n // 8))
    return kept


def by_function(profile: HeapProfile) -> dict[str, float]:
    return {f.function: f.total_value for f in profile.functions()}


def test_kept_64_mib_reported_in_use_then_freed_but_still_allocated() -> None:
    items = plan_mixed()
    pysampler.heap.start(sample_bytes=RATE)
    try:
        kept = keep_mixed(items)
        true = sum(sys.getsizeof(o) for o in kept) + sys.getsizeof(kept)
        snap = pysampler.heap.snapshot()
        del kept
        after = pysampler.heap.snapshot()
    finally:
        final = pysampler.heap.stop()
    assert abs(true - TARGET) < 0.05 * TARGET, true  # the workload is what it says
    inuse = by_function(snap)["keep_mixed"]
    assert abs(inuse - TARGET) <= 0.10 * TARGET, (inuse / MIB, snap.top())
    assert snap.view == "inuse" and snap.metadata.sample_bytes == RATE
    assert snap.metadata.dropped_samples == 0
    # freed: in use drops back, allocated still shows them
    assert by_function(after).get("keep_mixed", 0.0) < 0.02 * TARGET
    alloc = by_function(after.with_view("alloc"))["keep_mixed"]
    assert abs(alloc - TARGET) <= 0.10 * TARGET, alloc / MIB
    assert final.view == "alloc"
    assert abs(by_function(final)["keep_mixed"] - TARGET) <= 0.10 * TARGET
    assert by_function(final.with_view("inuse")).get("keep_mixed", 0.0) < 0.02 * TARGET
    assert final.metadata.frees_matched > 0


def test_each_sample_stands_for_its_unsampling_weight() -> None:
    pysampler.heap.start(sample_bytes=RATE)
    kept = [bytes(1000) for _ in range(20000)]
    prof = pysampler.heap.stop().with_view("inuse")
    del kept
    rows = prof.inuse_count > 0
    expected = 1 / (1 - np.exp(-prof.size[rows] / RATE))
    assert np.allclose(prof.weight[rows], expected)
    assert np.allclose(prof.inuse_space[rows], prof.inuse_count[rows] * expected * prof.size[rows])
    # blocks far larger than the interval are (almost) always sampled, weight ~1
    pysampler.heap.start(sample_bytes=1024)
    blobs = [bytes(1 << 20) for _ in range(8)]
    p = pysampler.heap.stop()
    del blobs
    assert p.with_view("inuse").functions()[0].self_samples >= 8
    held = by_function(p.with_view("inuse"))["test_each_sample_stands_for_its_unsampling_weight"]
    assert held == pytest.approx(8 * ((1 << 20) + 33), rel=0.01)


def test_allocation_lines_are_recorded() -> None:
    def allocate_here() -> list[bytes]:
        return [bytes(4096) for _ in range(4096)]  # the allocating line

    line = allocate_here.__code__.co_firstlineno + 1
    pysampler.heap.start(sample_bytes=RATE)
    kept = allocate_here()
    prof = pysampler.heap.stop()
    del kept
    # allocate_here and (before 3.12) its list comprehension's own frame
    lines = {
        prof.frames[f].line
        for node in prof.stack[prof.alloc_count > 0].tolist()
        for f in prof.stack_of(node)
        if "allocate_here" in prof.frames[f].function
    }
    assert lines == {line}, lines


def test_api_errors_and_state() -> None:
    assert not pysampler.heap.is_running()
    with pytest.raises(ProfilerNotRunning):
        pysampler.heap.stop()
    with pytest.raises(ProfilerNotRunning):
        pysampler.heap.snapshot()
    assert pysampler.heap.cancel() is False
    for bad in (0, -5, float("nan"), "1k", True, 2**41):
        with pytest.raises(ValueError, match="sample_bytes"):
            pysampler.heap.start(sample_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_depth"):
        pysampler.heap.start(max_depth=0)
    assert not _sampler.heap_hooked()
    pysampler.heap.start()
    try:
        assert pysampler.heap.is_running() and _sampler.heap_hooked()
        with pytest.raises(ProfilerAlreadyRunning):
            pysampler.heap.start()
    finally:
        assert pysampler.heap.cancel() is True
    assert not _sampler.heap_hooked()


def test_heap_and_cpu_profiling_run_together() -> None:
    from workloads import spin_cpu

    pysampler.start(hz=500)
    pysampler.heap.start(sample_bytes=RATE)
    kept = [bytes(2000) for _ in range(20000)]
    spin_cpu(0.2)
    heap = pysampler.heap.stop()
    cpu = pysampler.stop()
    del kept
    assert cpu.sample_count > 20
    assert heap.inuse_bytes > 0  # alloc view at stop; in-use still known


def deep_alloc(depth: int) -> list[bytes]:
    if depth <= 1:
        return [bytes(512) for _ in range(200)]
    return deep_alloc(depth - 1)


def test_depth_cap_marks_truncated_stacks() -> None:
    pysampler.heap.start(sample_bytes=256, max_depth=8)
    deep_alloc(40)
    prof = pysampler.heap.stop()
    assert prof.metadata.truncated_stacks > 0
    root_nodes = np.flatnonzero(prof.stack_parent < 0)
    roots = {prof.frames[prof.stack_frame[n]].function for n in root_nodes}
    assert TRUNCATED_FUNCTION in roots


def test_top_shows_the_allocating_function() -> None:
    pysampler.heap.start(sample_bytes=RATE)
    kept = keep_mixed(plan_mixed(8 * MIB))
    snap = pysampler.heap.snapshot()
    pysampler.heap.stop()
    del kept
    text = snap.top(5)
    assert text.startswith("pysampler heap profile (inuse): ")
    first = text.splitlines()[2]
    assert "keep_mixed" in first and "MiB" in first, text


def test_cpu_profile_cannot_be_saved_as_heapprofile(tmp_path: Path) -> None:
    with pysampler.profile(hz=100) as p:
        pass
    with pytest.raises(ValueError, match="heap"):
        p.save(tmp_path / "x.heapprofile")
    pysampler.heap.start()
    prof = pysampler.heap.stop()
    with pytest.raises(ValueError, match="does not write heap profiles"):
        prof.to_bytes("cpuprofile")


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def snap() -> HeapProfile:
    pysampler.heap.start(sample_bytes=RATE)
    try:
        kept = keep_mixed(plan_mixed(16 * MIB))
        prof = pysampler.heap.snapshot()
        del kept
    finally:
        pysampler.heap.stop()
    return prof


GO = shutil.which("go")


def pprof(*args: str) -> str:
    if GO is None:
        if os.environ.get("CI"):
            raise RuntimeError("go (Debian golang-go) is required to test pprof output")
        pytest.skip("go tool pprof is not installed")
    out = subprocess.run(
        [GO, "tool", "pprof", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_go_tool_pprof_reads_inuse_space(snap: HeapProfile, tmp_path: Path) -> None:
    path = tmp_path / "heap.pprof"
    assert snap.save(path) == "pprof"
    out = pprof("-sample_index=inuse_space", "-top", str(path))
    assert "Type: inuse_space" in out
    rows = [ln.split() for ln in out.splitlines() if re.match(r"^\s*[\d.]+\w*B\s+[\d.]+%", ln)]
    assert rows and rows[0][-1] == "keep_mixed", out
    flat = float(re.sub(r"[A-Za-z]+$", "", rows[0][0]))
    unit = re.sub(r"^[\d.]+", "", rows[0][0])
    scale = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[unit]  # pprof: binary
    keep = by_function(snap)["keep_mixed"]
    assert flat * scale == pytest.approx(keep, rel=0.01)


def test_go_tool_pprof_raw_has_go_heap_layout(snap: HeapProfile, tmp_path: Path) -> None:
    path = tmp_path / "heap.pb.gz"
    snap.save(path)
    raw = pprof("-raw", str(path))
    assert "PeriodType: space bytes" in raw
    assert f"Period: {RATE}" in raw
    types = "alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes[dflt]"
    assert types in raw
    values = [
        [int(v) for v in m.groups()]
        for m in re.finditer(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+): [\d ]+$", raw, re.M)
    ]
    total_inuse = sum(v[3] for v in values)
    assert total_inuse == pytest.approx(snap.inuse_bytes, rel=0.001)
    assert sum(v[1] for v in values) == pytest.approx(snap.alloc_bytes, rel=0.001)
    assert re.search(r"bytes:\[\d+\]", raw)
    # allocs view: the default sample type follows the view
    allocs = tmp_path / "allocs.pprof"
    snap.with_view("alloc").save(allocs)
    assert "Type: alloc_space" in pprof("-top", str(allocs))


def test_pprof_sample_values_are_consistent(snap: HeapProfile) -> None:
    data = gzip.decompress(snap.to_bytes("pprof"))
    samples = [bytes(v) for f, _, v in pb.fields(data) if f == 2 and isinstance(v, bytes)]
    assert samples
    for s in samples:
        values = next(pb.unpack(v) for f, _, v in pb.fields(s) if f == 2)
        alloc_obj, alloc_space, inuse_obj, inuse_space = values
        assert alloc_obj >= inuse_obj and alloc_space >= inuse_space


def walk(node: dict[str, Any], out: list[dict[str, Any]]) -> None:
    out.append(node)
    for child in node["children"]:
        walk(child, out)


def test_heapprofile_follows_devtools_sampling_heap_profile_rules(
    snap: HeapProfile, tmp_path: Path
) -> None:
    path = tmp_path / "heap.heapprofile"
    assert snap.save(path) == "heapprofile"
    doc = json.loads(path.read_text())
    assert set(doc) == {"head", "samples"}
    nodes: list[dict[str, Any]] = []
    walk(doc["head"], nodes)
    head = doc["head"]
    assert head["callFrame"]["functionName"] == "(root)" and head["selfSize"] == 0
    ids = [n["id"] for n in nodes]
    assert len(set(ids)) == len(ids) and all(isinstance(i, int) and i > 0 for i in ids)
    for n in nodes:
        assert set(n) == {"callFrame", "selfSize", "id", "children"}
        cf = n["callFrame"]
        assert set(cf) == {"functionName", "scriptId", "url", "lineNumber", "columnNumber"}
        assert isinstance(cf["scriptId"], str) and isinstance(cf["url"], str)
        assert isinstance(cf["lineNumber"], int) and isinstance(cf["columnNumber"], int)
        assert isinstance(n["selfSize"], int) and n["selfSize"] >= 0
    by_id = {n["id"]: n for n in nodes}
    per_node: dict[int, int] = {}
    ordinals = []
    for s in doc["samples"]:
        assert set(s) == {"size", "nodeId", "ordinal"}
        assert s["nodeId"] in by_id and s["size"] > 0
        per_node[s["nodeId"]] = per_node.get(s["nodeId"], 0) + s["size"]
        ordinals.append(s["ordinal"])
    assert len(set(ordinals)) == len(ordinals)
    # DevTools recomputes selfSize from samples when a range is selected:
    # both ways must agree
    for n in nodes:
        assert per_node.get(n["id"], 0) == n["selfSize"], n["callFrame"]
    assert sum(per_node.values()) == pytest.approx(snap.inuse_bytes, rel=0.001)
    keep = [n for n in nodes if n["callFrame"]["functionName"] == "keep_mixed"]
    assert len(keep) == 1
    assert keep[0]["callFrame"]["url"] == __file__
    assert keep[0]["callFrame"]["lineNumber"] == keep_mixed.__code__.co_firstlineno - 1
    assert len(doc["samples"]) == int(snap.inuse_count.sum())
