"""Our .heapprofile opened in speedscope (npm package, served from
localhost into headless Chromium): speedscope imports Chrome heap profiles
(its importer keys on ``head.selfSize``) and shows bytes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from browser import REPO, artifact, chromium, require_browser, serve
from heap_workloads import MIB, heap_profile

require_browser()

SPEEDSCOPE = REPO / "tests" / "viewers" / "node_modules" / "speedscope" / "dist" / "release"
if not (SPEEDSCOPE / "index.html").exists():
    if os.environ.get("CI"):
        raise RuntimeError("speedscope is not installed: run scripts/viewer-deps.sh")
    pytest.skip("speedscope is not installed (scripts/viewer-deps.sh)", allow_module_level=True)

#: speedscope's byte formatter: "512 B", "1.50 KB", "8.00 MB" (binary
#: multiples), followed in the table by the share, "(80%)"
SIZE = re.compile(r"^([\d.]+) (B|KB|MB|GB)\b")


def size(text: str) -> float:
    m = SIZE.match(text.strip())
    assert m, text
    return float(m.group(1)) * 1024.0 ** ["B", "KB", "MB", "GB"].index(m.group(2))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    snap = heap_profile()
    root = tmp_path_factory.mktemp("heap-site")
    (root / "speedscope").symlink_to(SPEEDSCOPE, target_is_directory=True)
    snap.save(root / "heap.heapprofile")
    with serve(root) as url:
        yield url, snap


def test_speedscope_imports_heapprofile_and_shows_allocating_function(
    site: tuple[str, Any],
) -> None:
    url, snap = site
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 2400})
        errors: list[str] = []
        logs: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" else logs.append(m.text),
        )
        page.goto(f"{url}/speedscope/index.html#profileURL={url}/heap.heapprofile")
        # a failed import leaves speedscope on its welcome screen, without the view tabs
        page.get_by_text("Sandwich").click(timeout=15_000)
        page.wait_for_selector("table tr td", state="attached")
        rows = page.eval_on_selector_all(
            "table tr",
            "trs => trs.map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText))",
        )
        page.screenshot(path=str(artifact("speedscope-heap.heapprofile.png")))
        page.close()
    assert errors == []
    assert "Importing as Chrome Heap Profile" in logs, logs
    table: dict[str, tuple[float, float]] = {}
    for cells in rows:
        if len(cells) >= 3 and SIZE.match(cells[0].strip()) and SIZE.match(cells[1].strip()):
            table[cells[-1].strip()] = (size(cells[0]), size(cells[1]))
    assert "keep_big" in table and "keep_small" in table, sorted(table)
    # the allocating function holds the most bytes itself: 8 MiB of the 10 kept
    assert max(table.items(), key=lambda kv: kv[1][1])[0] == "keep_big"
    ours = {f.function: f.self_value for f in snap.functions()}
    for name in ("keep_big", "keep_small"):
        # speedscope shows two decimals of MB
        assert table[name][1] == pytest.approx(ours[name], abs=0.01 * MIB), name
    assert "churn" not in table  # allocated and dropped: not in use
