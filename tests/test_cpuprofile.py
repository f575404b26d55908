"""Chrome DevTools .cpuprofile output: the schema Chrome, VS Code and
speedscope read (Profiler.Profile), checked field by field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import pysampler
from pysampler import Profile
from workloads import Worker, hot_and_cold, running_threads, sleep_until


@pytest.fixture(scope="module")
def profile() -> Profile:
    with running_threads({"napper": sleep_until}), pysampler.profile(hz=500) as p:
        hot_and_cold(0.5, 0.75)
        Worker().crunch(0.1)
    return p.profile


def load(profile: Profile, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "out.cpuprofile"
    profile.save(path)
    doc: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return doc


def test_schema(profile: Profile, tmp_path: Path) -> None:
    doc = load(profile, tmp_path)
    assert set(doc) == {"nodes", "startTime", "endTime", "samples", "timeDeltas"}
    nodes = doc["nodes"]
    ids = [n["id"] for n in nodes]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    by_id = {n["id"]: n for n in nodes}
    assert nodes[0]["callFrame"]["functionName"] == "(root)"
    parents: dict[int, int] = {}
    for n in nodes:
        cf = n["callFrame"]
        assert set(cf) == {"functionName", "scriptId", "url", "lineNumber", "columnNumber"}
        assert isinstance(cf["functionName"], str) and isinstance(cf["url"], str)
        assert isinstance(cf["scriptId"], str)
        assert isinstance(cf["lineNumber"], int) and isinstance(cf["columnNumber"], int)
        assert isinstance(n["hitCount"], int) and n["hitCount"] >= 0
        for c in n.get("children", []):
            assert c in by_id and c not in parents
            parents[c] = n["id"]
        for pt in n.get("positionTicks", []):
            assert pt["line"] >= 1 and pt["ticks"] >= 1
    # a single tree: every node but the root has one parent
    assert set(parents) == set(ids) - {nodes[0]["id"]}
    assert len(doc["samples"]) == len(doc["timeDeltas"])
    assert all(s in by_id for s in doc["samples"])
    assert all(isinstance(d, int) and d >= 0 for d in doc["timeDeltas"])
    assert doc["endTime"] >= doc["startTime"] + sum(doc["timeDeltas"])
    hits: dict[int, int] = {}
    for s in doc["samples"]:
        hits[s] = hits.get(s, 0) + 1
    # hitCount counts samples, the timeline rows: a row that stands for
    # several samples (an idle stack extended, the "(other CPU)" row) is
    # one timeline entry with several hits
    for n in nodes:
        assert n["hitCount"] >= hits.get(n["id"], 0), n
    idle = [n for n in nodes if n["callFrame"]["functionName"] == "(idle)"]
    assert sum(n["hitCount"] for n in nodes) - sum(n["hitCount"] for n in idle) == (
        profile.sample_count
    )


def test_threads_are_children_of_root(profile: Profile, tmp_path: Path) -> None:
    doc = load(profile, tmp_path)
    by_id = {n["id"]: n for n in doc["nodes"]}
    top = {by_id[c]["callFrame"]["functionName"] for c in doc["nodes"][0]["children"]}
    assert "Thread: MainThread" in top
    assert "(idle)" in top


def _self_time_us(doc: dict[str, Any]) -> dict[int, int]:
    """Self time per node id the way Chrome computes it: sample i lasts
    until sample i+1; the last one until endTime."""
    stamps = []
    t = doc["startTime"]
    for d in doc["timeDeltas"]:
        t += d
        stamps.append(t)
    stamps.append(doc["endTime"])
    out: dict[int, int] = {}
    for i, s in enumerate(doc["samples"]):
        out[s] = out.get(s, 0) + stamps[i + 1] - stamps[i]
    return out


def test_chrome_times_match_sample_weights(profile: Profile, tmp_path: Path) -> None:
    doc = load(profile, tmp_path)
    by_id = {n["id"]: n for n in doc["nodes"]}
    self_us = _self_time_us(doc)
    busy_us = sum(
        us for nid, us in self_us.items() if by_id[nid]["callFrame"]["functionName"] != "(idle)"
    )
    assert abs(busy_us - profile.total_ns / 1000) <= len(doc["samples"])  # 1 us rounding each
    # the hot function's share survives the conversion
    parent = {c: n["id"] for n in doc["nodes"] for c in n.get("children", [])}

    def under(nid: int, name: str) -> bool:
        while nid in parent:
            if by_id[nid]["callFrame"]["functionName"] == name:
                return True
            nid = parent[nid]
        return False

    hot = sum(us for nid, us in self_us.items() if under(nid, "hot"))
    cold = sum(us for nid, us in self_us.items() if under(nid, "cold"))
    assert 0.65 < hot / (hot + cold) < 0.85


def test_lines_are_zero_based_in_call_frames(profile: Profile, tmp_path: Path) -> None:
    doc = load(profile, tmp_path)
    crunch = [n for n in doc["nodes"] if n["callFrame"]["functionName"] == "Worker.crunch"]
    assert crunch
    cf = crunch[0]["callFrame"]
    assert cf["url"].endswith("workloads.py")
    assert cf["lineNumber"] == Worker.crunch.__code__.co_firstlineno - 1
    spin = [n for n in doc["nodes"] if n["callFrame"]["functionName"] == "spin_cpu"]
    first = spin[0]["callFrame"]["lineNumber"] + 1
    ticks = [pt["line"] for n in spin for pt in n.get("positionTicks", [])]
    assert ticks and all(first < ln <= first + 8 for ln in ticks)


def test_empty_profile_is_valid(tmp_path: Path) -> None:
    with pysampler.profile(mode="cpu") as p:
        pass
    doc = load(p.profile, tmp_path)
    assert doc["samples"] == [] and doc["timeDeltas"] == []
    assert doc["nodes"][0]["callFrame"]["functionName"] == "(root)"
