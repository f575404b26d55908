"""The HTML flame graph, rendered in headless Chromium from file://."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pysampler
from browser import artifact, chromium, flamegraph_page, require_browser
from pysampler import Profile
from pysampler.formats import html
from workloads import Worker, hot_and_cold

require_browser()


def side_thread(stop: threading.Event) -> None:
    while not stop.is_set():
        Worker().crunch(0.005)


@pytest.fixture(scope="module")
def profile() -> Profile:
    stop = threading.Event()
    side = threading.Thread(target=side_thread, args=(stop,), name="side")
    with pysampler.profile(hz=500) as p:
        side.start()
        try:
            hot_and_cold(0.6, 0.75)
        finally:
            stop.set()
            side.join()
    return p.profile


@pytest.fixture(scope="module")
def page_file(profile: Profile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "flame <graph>.html"
    assert profile.save(path) == "html"
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any, page_file: Path) -> Iterator[Any]:
    with flamegraph_page(browser, page_file) as page:
        yield page


def boxes(page: Any, name: str) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        ".box",
        """(els, name) => els.filter(e => e.dataset.name === name).map(e => {
            const r = e.getBoundingClientRect();
            return {node: +e.dataset.node, parent: +e.dataset.parent, width: r.width,
                    x: r.x, y: r.y, cls: e.className};
        })""",
        name,
    )


def siblings(page: Any, parent: int) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        ".box",
        """(els, parent) => els.filter(e => +e.dataset.parent === parent).map(e => ({
            name: e.dataset.name, width: e.getBoundingClientRect().width}))""",
        parent,
    )


def test_hot_function_is_the_widest_box_under_its_parent(page: Any) -> None:
    assert "CPU time" in page.inner_text("#facts")
    (hot,) = boxes(page, "hot")
    (cold,) = boxes(page, "cold")
    assert hot["parent"] == cold["parent"]
    under = siblings(page, hot["parent"])
    assert max(under, key=lambda b: b["width"])["name"] == "hot"
    # 75% / 25% of hot_and_cold's CPU time, as the workload spends it
    share = hot["width"] / (hot["width"] + cold["width"])
    assert 0.6 < share < 0.9, share
    page.screenshot(path=str(artifact("flamegraph.png")), full_page=True)


def test_click_zooms_and_escape_zooms_out(page: Any) -> None:
    graph_width = page.eval_on_selector("#graph", "e => e.clientWidth")
    (parent,) = boxes(page, "hot_and_cold")
    assert parent["width"] < graph_width * 0.95  # the side thread takes the rest
    page.click(f".box[data-node='{parent['node']}']")
    (zoomed,) = boxes(page, "hot_and_cold")
    assert zoomed["width"] == pytest.approx(graph_width, abs=1)
    (hot,) = boxes(page, "hot")
    assert hot["width"] > parent["width"] * 0.5
    assert boxes(page, "Worker.crunch") == []  # the other thread is outside the zoom
    assert "Zoomed to hot_and_cold" in page.inner_text("#crumbs")
    page.screenshot(path=str(artifact("flamegraph-zoomed.png")), full_page=True)
    page.keyboard.press("Escape")
    (back,) = boxes(page, "hot_and_cold")
    assert back["width"] == pytest.approx(parent["width"], abs=1)
    assert boxes(page, "Worker.crunch")


def test_search_highlights_matches(page: Any) -> None:
    page.fill("#search", "crunch")
    crunch = boxes(page, "Worker.crunch")
    assert crunch and all("match" in b["cls"] for b in crunch)
    hot = boxes(page, "hot")
    assert all("match" not in b["cls"] and "dim" in b["cls"] for b in hot)
    matched = page.inner_text("#matched")
    assert matched.startswith("Matched ") and matched != "Matched 0%"
    page.screenshot(path=str(artifact("flamegraph-search.png")), full_page=True)
    page.fill("#search", "")
    assert all("match" not in b["cls"] for b in boxes(page, "Worker.crunch"))


def test_hover_shows_function_location_samples_and_share(page: Any, profile: Profile) -> None:
    (hot,) = boxes(page, "hot")
    page.hover(f".box[data-node='{hot['node']}']")
    tip = page.inner_text("#tip")
    frame = next(f for f in profile.frames if f.function == "hot")
    assert "hot" in tip.splitlines()[0]
    assert f"{frame.filename}:{frame.first_line}" in tip
    assert " samples, " in tip and "CPU time" in tip
    assert "% of all threads" in tip


def test_thread_selection_shows_one_thread(page: Any) -> None:
    options = page.eval_on_selector_all("#thread option", "os => os.map(o => o.textContent)")
    assert options[0].startswith("All threads")
    assert any(o.startswith("side (") for o in options)
    assert any(o.startswith("MainThread (") for o in options)
    page.select_option("#thread", label=next(o for o in options if o.startswith("side (")))
    assert boxes(page, "hot") == []
    (crunch,) = boxes(page, "Worker.crunch")
    assert crunch["width"] > 0
    assert page.eval_on_selector_all(".box.root", "els => els.length") == 0


def test_names_are_escaped_not_markup(tmp_path: Path) -> None:
    from pysampler import Frame, Metadata

    nasty = "</script><img src=x onerror=alert(1)>"
    prof = Profile(
        frames=[Frame(nasty, "a.py", 1, 2)],
        stack_parent=[-1],
        stack_frame=[0],
        stack=[0],
        thread=[0],
        time_ns=[0],
        cpu_ns=[10_000_000],
        wall_ns=[10_000_000],
        threads=[pysampler.ThreadInfo(1, 1, "main")],
        metadata=Metadata("cpu", 100.0, 100.0, 0.0, 0.01),
    )
    text = html.write(prof).decode()
    assert nasty not in text
    assert text.count("</script>") == 2  # the page's own two script elements


def test_a_group_profile_has_a_box_per_process_over_its_threads(
    browser: Any, profile: Profile, tmp_path: Path
) -> None:
    from pysampler import ProcessInfo
    from pysampler.merge import merge_profiles

    a = ProcessInfo(101, 0.0, "founder", "python app.py")
    b = ProcessInfo(202, 0.0, "forked from 101", "python app.py")
    path = tmp_path / "group.html"
    merge_profiles([(a, profile), (b, profile)]).save(path)
    with flamegraph_page(browser, path) as page:
        assert "2 processes" in page.inner_text("#facts")
        (pa,) = boxes(page, "Process 101: founder")
        (pb,) = boxes(page, "Process 202: forked from 101")
        assert pa["parent"] == pb["parent"] == 0
        assert pa["width"] == pytest.approx(pb["width"], abs=2)  # the same profile twice
        threads = siblings(page, pa["node"])
        assert {t["name"] for t in threads} >= {"Thread: MainThread", "Thread: side"}
        assert len(boxes(page, "hot")) == 2  # one per process
        options = page.eval_on_selector_all("#thread option", "os => os.map(o => o.textContent)")
        assert options[1].startswith("Process 101: founder (")
        page.select_option("#thread", label=options[1])
        (hot,) = boxes(page, "hot")
        assert hot["width"] > 0
        page.screenshot(path=str(artifact("flamegraph-group.png")), full_page=True)
