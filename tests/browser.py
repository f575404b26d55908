"""Headless Chromium (Debian's ``chromium``) driven by Playwright, and a
localhost file server, for tests that open our output in a browser.

The browser is never downloaded: Playwright is pointed at the system
binary. Tests using this skip when either is missing, except in CI, where
a missing browser is an error (scripts/system-deps.sh installs it).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser() -> None:
    """Skip the calling module unless Playwright and chromium are present."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip, the 'test' extra)")
    if not os.path.exists(CHROMIUM):
        missing.append("chromium (Debian)")
    if missing:
        if os.environ.get("CI"):
            raise RuntimeError(f"browser tests need {' and '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)}", allow_module_level=True)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright Browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (an ephemeral port); yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def artifact(name: str) -> Path:
    """A path under test-artifacts/ (created) for screenshots and files to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


@contextmanager
def flamegraph_page(browser: Any, page_file: Path) -> Iterator[Any]:
    """Our HTML flame graph opened from ``file://``; on exit, asserts that
    the page logged no error and fetched nothing but itself (it is
    self-contained)."""
    context = browser.new_context(viewport={"width": 1200, "height": 700})
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_file.as_uri())
    page.wait_for_selector(".box")
    yield page
    context.close()
    assert errors == []
    assert requests == [page_file.as_uri()]
