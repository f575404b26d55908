"""`pysampler record URL`: one profile of a live service in every format,
opened in the readers the suite uses (go tool pprof, speedscope, Chromium)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import helpers
from browser import chromium, flamegraph_page, serve
from pysampler import HeapProfile, Profile, formats
from test_cli_top import endpoint_is_free, timed_session_runs
from test_server import collapsed_self, get
from test_server_hook import App, _env
from test_speedscope import SPEEDSCOPE, open_in_speedscope

#: the service: test_server_hook's APP spends its time in crunch_numbers
HOT = "crunch_numbers"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    running = App(tmp_path_factory.mktemp("svc"), 300, PYSAMPLER_PORT="0")
    try:
        running.wait_for_url()
        yield running
    finally:
        running.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def record(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysampler", "record", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=cwd,
        env=_env(**env),
    )


@pytest.fixture(scope="module")
def recorded(service: App, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One recording of the service in every format that writes CPU profiles."""
    root = tmp_path_factory.mktemp("recorded")
    for name in ("r.pprof", "r.cpuprofile", "r.collapsed", "r.html", "r.speedscope.json"):
        proc = record(service.url, "--duration", "1", "--hz", "200", "-o", name, cwd=root)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.splitlines()[0] == f"pysampler: recording {service.url[7:]} " + (
            "for 1 s (cpu, 200 Hz)"
        )
        assert proc.stderr.splitlines()[-1].startswith(f"pysampler: wrote {name} (")
    return root


def test_record_pprof_opens_in_go_tool_pprof(recorded: Path, tmp_path: Path) -> None:
    _, rows = helpers.go_pprof_top(str(recorded / "r.pprof"), tmp_path)
    assert rows[0][-1] == HOT, rows


@pytest.mark.parametrize("name", ["r.cpuprofile", "r.speedscope.json", "r.pprof"])
def test_record_opens_in_speedscope(
    recorded: Path, browser: Any, name: str, tmp_path: Path
) -> None:
    if not (SPEEDSCOPE / "index.html").exists():
        pytest.skip("speedscope is not installed")
    site = tmp_path / "site"
    site.mkdir()
    (site / "speedscope").symlink_to(SPEEDSCOPE, target_is_directory=True)
    (site / name).write_bytes((recorded / name).read_bytes())
    with serve(site) as url:
        table = open_in_speedscope(browser, url, name)
    hottest = max(table.items(), key=lambda kv: kv[1][1])[0]
    assert hottest == HOT, table


def test_record_html_opens_in_chromium(recorded: Path, browser: Any) -> None:
    with flamegraph_page(browser, recorded / "r.html") as page:
        names = page.eval_on_selector_all(".box", "els => els.map(e => e.dataset.name)")
        facts = page.text_content("#facts")
    assert HOT in names
    assert "200 Hz requested" in facts


def test_record_collapsed_and_formats_read_back(recorded: Path) -> None:
    leaf = collapsed_self((recorded / "r.collapsed").read_bytes())
    assert leaf.most_common(1)[0][0] == HOT
    for name in ("r.pprof", "r.cpuprofile"):
        profile = formats.read((recorded / name).read_bytes())
        assert isinstance(profile, Profile)
        assert profile.functions()[0].function == HOT
        assert 0.8 < profile.metadata.duration < 3.0
    # the endpoint's own .cpuprofile: written by the service, not converted here
    doc = json.loads((recorded / "r.cpuprofile").read_bytes())
    assert {"nodes", "samples", "timeDeltas"} <= doc.keys()


def test_record_without_output_prints_the_hottest_functions(service: App, tmp_path: Path) -> None:
    proc = record(service.url, "--duration", "0.5", "-n", "3", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.splitlines()[0].startswith("pysampler cpu profile:")
    assert proc.stdout.splitlines()[2].split()[2] == HOT


def test_record_wall_mode_and_heap(service: App, tmp_path: Path) -> None:
    proc = record(service.url, "--duration", "0.5", "--mode", "wall", "-o", "w.pprof", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wall = formats.read((tmp_path / "w.pprof").read_bytes())
    assert isinstance(wall, Profile) and wall.mode == "wall"
    heap_args = ("--heap", "--duration", "1", "--sample-bytes", "4096")
    proc = record(service.url, *heap_args, "-o", "h.heapprofile", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "(heap)" in proc.stderr
    heap = formats.read((tmp_path / "h.heapprofile").read_bytes())
    assert isinstance(heap, HeapProfile)
    proc = record(service.url, *heap_args, "--view", "alloc", "-o", "h.pprof", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    alloc = formats.read((tmp_path / "h.pprof").read_bytes())
    assert isinstance(alloc, HeapProfile) and alloc.alloc_bytes > 0
    assert any(f.function == HOT for f in alloc.frames)


def test_record_shows_progress_on_a_terminal(service: App, tmp_path: Path) -> None:
    status, err = helpers.stderr_on_a_terminal(
        [sys.executable, "-m", "pysampler", "record", service.url, "--duration", "1.5",
         "-o", "p.pprof"],
        cwd=tmp_path, env=_env(),
    )  # fmt: skip
    assert status == 0, err
    assert f"\rpysampler: recording {service.url[7:]} (cpu):   0." in err
    assert "of 1.5 s" in err
    assert "wrote p.pprof" in err


def test_ctrl_c_cancels_the_services_session(service: App, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pysampler", "record", service.url, "--duration", "60",
         "-o", "p.pprof"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not timed_session_runs(service.url):  # record's request has arrived
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines()[-1] == "pysampler: cancelled; the service's session was ended"
    assert endpoint_is_free(service.url, timeout=1.0)
    assert not (tmp_path / "p.pprof").exists()


def test_record_errors_are_one_line(service: App, tmp_path: Path) -> None:
    cases = [
        (("--pid", "1"), "no process 1 here; this endpoint profiles process"),
        (("--hz", "0"), "argument --hz: must be from 1 to 10000 samples per second, not 0"),
        (("--asyncio", "--mode", "cpu"), "--asyncio needs --mode wall"),
        (("--heap", "--hz", "50"), "--hz applies to CPU and wall profiles, not to --heap"),
        (("-o", "x.heapprofile"), "the heapprofile format does not write CPU profiles"),
        (("-o", "x.txt"), "use one of .pprof, .pb.gz, .pb, .cpuprofile, .collapsed"),
    ]
    for args, message in cases:
        proc = record(service.url, "--duration", "0.2", *args, cwd=tmp_path)
        assert proc.returncode in (1, 2), (args, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("pysampler: recording")]
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert ".heapprofile" not in record(service.url, "-o", "x.txt", cwd=tmp_path).stderr
    busy = get(f"{service.url}/profile/cpu/start")
    assert busy.status == 200
    try:
        proc = record(service.url, "--duration", "0.2", "-o", "b.pprof", cwd=tmp_path)
    finally:
        get(f"{service.url}/profile/cancel")
    assert proc.returncode == 1
    assert "busy (409): a cpu profile requested over HTTP" in proc.stderr.splitlines()[-1]
