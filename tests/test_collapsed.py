"""Collapsed stacks: one 'thread;frame;...;leaf count' line per stack."""

from __future__ import annotations

from pathlib import Path

import pysampler
from workloads import Worker


def test_collapsed_lines_sum_to_profile_total(tmp_path: Path) -> None:
    with pysampler.profile(hz=500) as p:
        Worker().crunch(0.3)
    path = tmp_path / "out.collapsed"
    assert p.save(path) == "collapsed"
    lines = path.read_text("utf-8").splitlines()
    assert lines
    total_ms = 0
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        total_ms += int(count)
        frames = stack.split(";")
        assert frames[0] == "MainThread"
        assert all(frames)
    assert abs(total_ms - p.profile.total_ns / 1e6) <= len(lines)
    hottest = max(lines, key=lambda ln: int(ln.rsplit(" ", 1)[1]))
    assert "Worker.crunch (" in hottest and hottest.split(";")[-1].startswith("spin_cpu (")
