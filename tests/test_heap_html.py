"""The HTML flame graph of a heap profile, rendered in headless Chromium
from file://: boxes sized by bytes, the view named, the four views."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import artifact, chromium, flamegraph_page, require_browser
from heap_workloads import heap_profile
from pysampler import HeapProfile

require_browser()


@pytest.fixture(scope="module")
def snap() -> HeapProfile:
    return heap_profile()


@pytest.fixture(scope="module")
def page_file(snap: HeapProfile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("heap-html") / "heap.html"
    assert snap.save(path) == "html"
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
            return {node: +e.dataset.node, parent: +e.dataset.parent, width: r.width};
        })""",
        name,
    )


def widest_under(page: Any, parent: int) -> str:
    under = page.eval_on_selector_all(
        ".box",
        """(els, parent) => els.filter(e => +e.dataset.parent === parent).map(e => ({
            name: e.dataset.name, width: e.getBoundingClientRect().width}))""",
        parent,
    )
    return str(max(under, key=lambda b: b["width"])["name"])


def mib(text: str) -> float:
    m = re.search(r"([\d.]+) (B|KiB|MiB|GiB)\b", text)
    assert m, text
    return float(m.group(1)) * 1024.0 ** ["B", "KiB", "MiB", "GiB"].index(m.group(2)) / (1 << 20)


def test_allocating_function_is_the_widest_box_sized_by_bytes(page: Any, snap: HeapProfile) -> None:
    facts = page.inner_text("#facts")
    assert facts.startswith("In-use space ")
    assert mib(facts) == pytest.approx(snap.inuse_bytes / (1 << 20), abs=0.05)
    assert "one sample per 16.0 KiB" in facts
    assert page.is_hidden("#thread")  # a heap profile has no threads to pick
    (big,) = boxes(page, "keep_big")
    (small,) = boxes(page, "keep_small")
    assert big["parent"] == small["parent"]
    assert widest_under(page, big["parent"]) == "keep_big"
    # 8 MiB against 2 MiB kept
    share = big["width"] / (big["width"] + small["width"])
    assert 0.7 < share < 0.9, share
    assert boxes(page, "churn") == []  # nothing of it is in use
    page.screenshot(path=str(artifact("heap-flamegraph.png")), full_page=True)


def test_hover_shows_bytes_of_the_view(page: Any, snap: HeapProfile) -> None:
    (big,) = boxes(page, "keep_big")
    page.hover(f".box[data-node='{big['node']}']")
    tip = page.inner_text("#tip")
    assert tip.splitlines()[0] == "keep_big"
    assert "in-use space" in tip and " samples, " in tip
    keep = next(f.total_value for f in snap.functions() if f.function == "keep_big")
    assert mib(tip.split(" samples, ")[1]) == pytest.approx(keep / (1 << 20), rel=0.01)
    assert "% of total" in tip


def test_view_switch_between_space_and_objects_in_use_and_allocated(page: Any) -> None:
    views = page.eval_on_selector_all("#view option", "os => os.map(o => o.value)")
    assert views == ["inuse_space", "inuse_objects", "alloc_space", "alloc_objects"]
    assert page.eval_on_selector("#view", "s => s.value") == "inuse_space"
    (big,) = boxes(page, "keep_big")

    # allocated since start: the churn's 16 MiB, dropped since, weighs most
    page.select_option("#view", "alloc_space")
    assert page.inner_text("#facts").startswith("Allocated space ")
    (churn,) = boxes(page, "churn")
    assert widest_under(page, churn["parent"]) == "churn"
    page.screenshot(path=str(artifact("heap-flamegraph-alloc.png")), full_page=True)

    # objects in use: 8192 small blocks outnumber 128 big ones
    page.select_option("#view", "inuse_objects")
    assert page.inner_text("#facts").startswith("In-use objects ")
    assert boxes(page, "churn") == []
    (small,) = boxes(page, "keep_small")
    assert widest_under(page, small["parent"]) == "keep_small"
    page.hover(f".box[data-node='{small['node']}']")
    assert "in-use objects" in page.inner_text("#tip")

    page.select_option("#view", "inuse_space")
    (again,) = boxes(page, "keep_big")
    assert again["width"] == pytest.approx(big["width"], abs=0.5)


def test_page_data_keeps_the_profiles_totals(page_file: Path, snap: HeapProfile) -> None:
    text = page_file.read_text()
    m = re.search(r'<script id="profile-data" type="application/json">(.*?)</script>', text, re.S)
    assert m
    data = json.loads(m.group(1))
    views = data["views"]
    assert views["inuse_space"]["value"][0] == round(snap.inuse_bytes)
    assert views["alloc_space"]["value"][0] == round(snap.alloc_bytes)
    assert views["inuse_objects"]["value"][0] == round(float(snap.inuse_objects.sum()))
    assert views["alloc_objects"]["samples"][0] == int(snap.alloc_count.sum())
    assert data["value"] == views["inuse_space"]["value"]
