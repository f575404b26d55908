"""`pysampler diff BASE NEW`: the table of changes and the differential
flame graph (in Chromium), on two runs of a program where one function's
share of the time doubles."""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import artifact, chromium, flamegraph_page, require_browser
from pysampler import Frame, HeapProfile, Metadata, Profile, ThreadInfo, diff
from pysampler.heap_profile import HeapMetadata
from test_cli import pysampler

PROGRAM = textwrap.dedent(
    """
    import sys, time

    def doubled(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def steady(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def other(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def main(share, total):
        end = time.thread_time() + total
        while time.thread_time() < end:
            doubled(0.004 * share)
            steady(0.002 * (1 - share))
            other(0.002 * (1 - share))

    main(float(sys.argv[1]), float(sys.argv[2]))
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BASE: ``doubled`` takes 30% of 1 s of CPU; NEW: 60% of 2 s, read
    from another format."""
    root = tmp_path_factory.mktemp("diff")
    (root / "prog.py").write_text(PROGRAM)
    for out, share, total in (("base.pprof", "0.3", "1.0"), ("new.cpuprofile", "0.6", "2.0")):
        proc = pysampler("run", "-q", "--hz", "500", "-o", out, "prog.py", share, total, cwd=root)
        assert proc.returncode == 0, proc.stderr
    return root


def rows(table: str) -> list[tuple[str, float, float]]:
    """(function, self change, total change) per row of a diff table."""
    out = []
    for line in table.splitlines():
        cells = line.split()
        if len(cells) >= 7 and re.fullmatch(r"[+-][\d.]+", cells[2]):
            out.append((cells[6], float(cells[2]), float(cells[5])))
    return out


def test_table_shows_the_doubled_function_as_the_top_increase(runs: Path) -> None:
    proc = pysampler("diff", "base.pprof", "new.cpuprofile", cwd=runs)
    assert proc.returncode == 0, proc.stderr
    table = rows(proc.stdout)
    # the biggest change, and the biggest increase; the others shrank
    assert table[0][0] == "doubled" and table[0][1] > 20, proc.stdout  # percentage points
    assert max(table, key=lambda r: r[1])[0] == "doubled"
    assert {r[0] for r in table[1:3]} == {"steady", "other"}
    # each truly -15 points; the 500 and 1,000 samples of the two runs carry
    # about 2.5 points of sampling noise on that difference, so -10 failed
    # about one run in twenty (the py3.9 cell); -7 is 3 standard deviations
    assert all(r[1] < -7 for r in table[1:3]), proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("BASE base.pprof: ") and lines[2].startswith("NEW  new.cpuprofile")
    # the program's 1 s of CPU, less what no sample took below the "outside"
    # frame's 2% floor (its start and exit: 0.996-0.9998 s measured)
    assert 0.98 <= float(lines[1].split()[2]) <= 1.05, proc.stdout
    # normalised by each total: NEW lasted twice as long, yet the share doubled
    base_share = float(next(ln.split()[0] for ln in lines if ln.split()[-2:-1] == ["doubled"]))
    new_share = float(next(ln.split()[1] for ln in lines if ln.split()[-2:-1] == ["doubled"]))
    assert 1.6 < new_share / base_share < 2.5, proc.stdout
    # the same through top
    top = pysampler("top", "--diff-base", "base.pprof", "new.cpuprofile", "-n", "2", cwd=runs)
    assert top.returncode == 0, top.stderr
    assert rows(top.stdout)[0][0] == "doubled" and len(rows(top.stdout)) == 2
    assert "more function" in top.stdout.splitlines()[-1]


def test_a_profile_against_itself_shows_no_change(runs: Path) -> None:
    proc = pysampler("diff", "new.cpuprofile", "new.cpuprofile", cwd=runs)
    assert proc.returncode == 0, proc.stderr
    assert rows(proc.stdout) == []
    assert "no change" in proc.stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    with chromium() as b:
        yield b


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", css)[:3])


def test_html_colours_the_doubled_function_red_and_the_other_blue(runs: Path, browser: Any) -> None:
    proc = pysampler("diff", "base.pprof", "new.cpuprofile", "-o", "diff.html", cwd=runs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "pysampler: wrote diff.html\n"
    with flamegraph_page(browser, runs / "diff.html") as page:
        boxes = page.eval_on_selector_all(
            ".box",
            "els => els.map(e => [e.dataset.name, Number(e.dataset.change),"
            " getComputedStyle(e).backgroundColor, e.getBoundingClientRect().width])",
        )
        grown = max(boxes, key=lambda b: b[1])
        shrunk = min(boxes, key=lambda b: b[1])
        assert grown[0] == "doubled" and grown[1] > 20
        assert shrunk[0] in ("steady", "other") and shrunk[1] < -10
        r, g, b = rgb(grown[2])
        assert r > 150 and r > g + 60 and r > b + 60, grown
        r, g, b = rgb(shrunk[2])
        assert b > 150 and b > r + 60, shrunk
        # widths are NEW's: doubled has about 60% of the graph
        root_width = next(b[3] for b in boxes if b[0] == "all threads")
        assert 0.45 < grown[3] / root_width < 0.75
        legend = page.text_content("#legend")
        assert "grew" in legend and "shrank" in legend
        page.hover('.box[data-name="doubled"]')
        tip = page.text_content("#tip")
        assert "NEW 6" in tip or "NEW 5" in tip
        assert "BASE " in tip and "change +" in tip and "\u00d7" in tip
        page.screenshot(path=str(artifact("diff.png")))
        facts = page.text_content("#facts")
        assert "NEW new.cpuprofile" in facts and "BASE base.pprof" in facts
        assert page.is_hidden("#thread")


def test_html_of_a_profile_against_itself_is_all_neutral(runs: Path, browser: Any) -> None:
    proc = pysampler("diff", "base.pprof", "base.pprof", "-o", "same.html", cwd=runs)
    assert proc.returncode == 0, proc.stderr
    with flamegraph_page(browser, runs / "same.html") as page:
        changes = page.eval_on_selector_all(".box", "els => els.map(e => Number(e.dataset.change))")
        colours = page.eval_on_selector_all(
            ".box:not(.root)", "els => els.map(e => getComputedStyle(e).backgroundColor)"
        )
        assert changes and all(c == 0 for c in changes)
        assert set(colours) == {"rgb(219, 219, 219)"}
        assert "no change" in page.text_content("#legend")


def synthetic(first_lines: tuple[int, int], shares: tuple[int, int], seconds: float) -> Profile:
    """``a`` and ``b`` under ``main``, with ``shares`` samples of 10 ms each."""
    frames = [
        Frame("main", "m.py", 1, 1),
        Frame("a", "m.py", first_lines[0], first_lines[0] + 1),
        Frame("b", "m.py", first_lines[1], first_lines[1] + 1),
    ]
    n = sum(shares)
    return Profile(
        frames=frames,
        stack_parent=[-1, 0, 0],
        stack_frame=[0, 1, 2],
        stack=[1] * shares[0] + [2] * shares[1],
        thread=[0] * n,
        time_ns=list(range(n)),
        cpu_ns=[10_000_000] * n,
        wall_ns=[10_000_000] * n,
        threads=[ThreadInfo(1, 1, "MainThread")],
        metadata=Metadata("cpu", 100.0, 100.0, time.time(), seconds),
    )


def test_functions_are_matched_by_name_and_file_not_line() -> None:
    base = synthetic((10, 20), (30, 70), 1.0)
    moved = synthetic((12, 25), (60, 140), 2.0)  # same shares, lines moved, twice as long
    assert all(c.self_change == 0 and c.total_change == 0 for c in diff.changes(base, moved))
    tree = diff.tree_data(base, moved)
    assert tree["gone"] == [0, 0, 0, 0]
    grown = synthetic((10, 20), (50, 50), 1.0)
    top = diff.changes(base, grown)[0]
    assert (top.function, round(top.self_change, 6)) == ("a", 0.2)


def test_paths_only_in_base_are_counted_as_gone() -> None:
    base = synthetic((10, 20), (30, 70), 1.0)
    only_a = synthetic((10, 20), (30, 0), 1.0)
    tree = diff.tree_data(base, only_a)
    root = 0
    assert tree["base"][root] == 100 * 10_000_000
    main = tree["fn"].index(tree["functions"].index(["main", "m.py", 1]))
    assert tree["gone"][main] == 70 * 10_000_000  # b, which NEW never called
    b_change = next(c for c in diff.changes(base, only_a) if c.function == "b")
    assert b_change.new_total == 0 and b_change.base_total == pytest.approx(0.7)


def heap(sizes: tuple[int, int]) -> HeapProfile:
    frames = [Frame("alloc_a", "h.py", 1, 2), Frame("alloc_b", "h.py", 5, 6)]
    return HeapProfile(
        frames=frames,
        stack_parent=[-1, -1],
        stack_frame=[0, 1],
        stack=[0, 1],
        size=[1 << 20, 1 << 20],
        alloc_count=list(sizes),
        inuse_count=list(sizes),
        metadata=HeapMetadata(sample_bytes=1, start_time=0.0, duration=1.0),
    )


def test_heap_profiles_compare_and_kinds_do_not_mix(tmp_path: Path) -> None:
    table = diff.table(heap((1, 3)), heap((2, 2)))
    assert rows(table)[0][0] == "alloc_a" and rows(table)[0][1] == pytest.approx(25.0)
    assert "in use" in table
    with pytest.raises(ValueError, match="heap profile with a CPU"):
        diff.table(heap((1, 1)), synthetic((1, 2), (1, 1), 1.0))
    heap((1, 3)).save(tmp_path / "a.pprof")
    synthetic((1, 2), (1, 1), 1.0).save(tmp_path / "b.pprof")
    proc = pysampler("diff", "a.pprof", "b.pprof", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        "pysampler: error: cannot compare a heap profile with a CPU or wall profile\n"
    )
    proc = pysampler("diff", "b.pprof", "b.pprof", "-o", "d.pprof", cwd=tmp_path)
    assert proc.returncode == 1 and "diff writes HTML (.html)" in proc.stderr
