"""Our .cpuprofile, pprof and speedscope files opened in speedscope itself
(npm package, served from localhost into headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pysampler
from browser import REPO, artifact, chromium, require_browser, serve
from workloads import Worker, hot_and_cold

require_browser()

SPEEDSCOPE = REPO / "tests" / "viewers" / "node_modules" / "speedscope" / "dist" / "release"
if not (SPEEDSCOPE / "index.html").exists():
    if os.environ.get("CI"):
        raise RuntimeError("speedscope is not installed: run scripts/viewer-deps.sh")
    pytest.skip("speedscope is not installed (scripts/viewer-deps.sh)", allow_module_level=True)

TIME = re.compile(r"^([\d.]+)(ns|µs|us|ms|s)")
SCALE = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def light_side_thread(stop: threading.Event) -> None:
    while not stop.is_set():
        Worker().crunch(0.002)
        time.sleep(0.01)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    stop = threading.Event()
    side = threading.Thread(target=light_side_thread, args=(stop,), name="side")
    with pysampler.profile(hz=500) as p:
        side.start()
        try:
            hot_and_cold(0.5, 0.75)
        finally:
            stop.set()
            side.join()
    root = tmp_path_factory.mktemp("site")
    (root / "speedscope").symlink_to(SPEEDSCOPE, target_is_directory=True)
    for name in ("out.cpuprofile", "out.pprof", "out.speedscope.json"):
        p.save(root / name)
    with serve(root) as url:
        yield url, root


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def seconds(text: str) -> float:
    m = TIME.match(text.strip())
    assert m, text
    return float(m.group(1)) * SCALE[m.group(2)]


def open_in_speedscope(browser: Any, url: str, name: str) -> dict[str, tuple[float, float]]:
    """Load ``name`` into speedscope; (total, self) seconds per symbol in its
    sandwich table."""
    # tall, so that the (virtualised) table renders every row the test reads
    page = browser.new_page(viewport={"width": 1200, "height": 2400})
    errors: list[str] = []
    logs: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" else logs.append(m.text),
    )
    try:
        page.goto(f"{url}/speedscope/index.html#profileURL={url}/{name}")
        # a failed import leaves speedscope on its welcome screen, without the view tabs
        page.get_by_text("Sandwich").click(timeout=15_000)
        page.wait_for_selector("table tr td", state="attached")
        rows = page.eval_on_selector_all(
            "table tr",
            "trs => trs.map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText))",
        )
        page.screenshot(path=str(artifact(f"speedscope-{name}.png")))
    finally:
        page.close()
    assert errors == []
    assert any(log.startswith("Importing as") for log in logs), logs
    table = {}
    for cells in rows:
        # the sandwich table's rows; speedscope's (hidden) thread list is a table too
        if len(cells) >= 3 and TIME.match(cells[0].strip()) and TIME.match(cells[1].strip()):
            total, self_, symbol = cells[0], cells[1], cells[-1]
            table[symbol.strip()] = (seconds(total), seconds(self_))
    return table


@pytest.mark.parametrize("name", ["out.cpuprofile", "out.pprof", "out.speedscope.json"])
def test_speedscope_imports_file_and_shows_hot_function(
    browser: Any, site: tuple[str, Path], name: str
) -> None:
    url, _ = site
    table = open_in_speedscope(browser, url, name)
    assert "hot" in table and "cold" in table, sorted(table)
    # spin_cpu does the work under both, so it has the most self time
    assert max(table.items(), key=lambda kv: kv[1][1])[0] == "spin_cpu"
    hot_total, cold_total = table["hot"][0], table["cold"][0]
    assert 0.6 < hot_total / (hot_total + cold_total) < 0.9


def test_speedscope_json_has_one_profile_per_thread(site: tuple[str, Path]) -> None:
    _, root = site
    doc = json.loads((root / "out.speedscope.json").read_text())
    names = [p["name"] for p in doc["profiles"]]
    assert "Thread: MainThread" in names and "Thread: side" in names
    assert len(names) == len(set(names))
    active = doc["profiles"][doc["activeProfileIndex"]]
    assert active["name"] == "Thread: MainThread"  # the heaviest thread
    for prof in doc["profiles"]:
        assert prof["unit"] == "nanoseconds"
        assert len(prof["samples"]) == len(prof["weights"])
        assert prof["endValue"] == sum(prof["weights"])
