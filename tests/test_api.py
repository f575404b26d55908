"""The public API: start/stop/profile, errors, Profile contents, save()."""

from __future__ import annotations

import math
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pysampler
from pysampler import Profile, ProfilerAlreadyRunning, ProfilerNotRunning
from workloads import Worker, spin_cpu


def test_start_while_running_raises_already_running() -> None:
    pysampler.start()
    try:
        with pytest.raises(ProfilerAlreadyRunning):
            pysampler.start()
        with pytest.raises(ProfilerAlreadyRunning):
            pysampler.start(hz=50, mode="wall")
    finally:
        pysampler.stop()


def test_stop_when_not_running_raises_not_running() -> None:
    with pytest.raises(ProfilerNotRunning):
        pysampler.stop()
    pysampler.start()
    pysampler.stop()
    with pytest.raises(ProfilerNotRunning):
        pysampler.stop()


@pytest.mark.parametrize("hz", [0, -5, 10001, 0.5, math.nan, math.inf, "100", None, True])
def test_bad_hz_raises_value_error_naming_range(hz: object) -> None:
    with pytest.raises(ValueError) as info:
        pysampler.start(hz=hz)  # type: ignore[arg-type]
    assert "hz" in str(info.value)
    assert "1" in str(info.value) and "10000" in str(info.value)
    assert not pysampler.is_running()


@pytest.mark.parametrize("mode", ["CPU", "", "process", None, 1])
def test_bad_mode_raises_value_error_naming_choices(mode: object) -> None:
    with pytest.raises(ValueError) as info:
        pysampler.start(mode=mode)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "mode" in msg and "'cpu'" in msg and "'wall'" in msg


@pytest.mark.parametrize("hz", [1, 10000, 250.5])
def test_hz_bounds_are_accepted(hz: float) -> None:
    pysampler.start(hz=hz)
    prof = pysampler.stop()
    assert prof.metadata.hz_requested == hz


def test_start_and_stop_from_different_threads() -> None:
    box: dict[str, Profile] = {}
    t = threading.Thread(target=pysampler.start, kwargs={"hz": 500})
    t.start()
    t.join()
    assert pysampler.is_running()
    spin_cpu(0.2)
    t = threading.Thread(target=lambda: box.setdefault("p", pysampler.stop()))
    t.start()
    t.join()
    assert box["p"].sample_count > 20


def test_concurrent_starts_only_one_wins() -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        try:
            pysampler.start()
        except ProfilerAlreadyRunning as e:
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 7
    pysampler.stop()


def test_context_manager_gives_profile_after_block() -> None:
    with pysampler.profile(mode="wall", hz=250) as p:
        with pytest.raises(RuntimeError):
            p.top()
        Worker().crunch(0.3)
    assert isinstance(p.profile, Profile)
    assert p.profile.metadata.mode == "wall"
    text = p.top(5)
    assert "Worker.crunch" in text or "spin_cpu" in text
    assert not pysampler.is_running()


def test_context_manager_stops_on_exception() -> None:
    with pytest.raises(KeyError), pysampler.profile() as p:
        spin_cpu(0.05)
        raise KeyError("boom")
    assert not pysampler.is_running()
    assert p.profile.metadata.duration > 0


def test_profile_columns_threads_and_metadata() -> None:
    t0 = time.time()
    pysampler.start(hz=200)
    spin_cpu(0.5)
    prof = pysampler.stop()
    m = prof.metadata
    assert m.pid == os.getpid()
    assert m.python_version == platform.python_version()
    assert m.mode == "cpu"
    assert m.hz_requested == 200
    assert 100 < m.hz_delivered < 260
    assert abs(m.start_time - t0) < 1
    assert 0.4 < m.duration < 5
    assert m.dropped_samples == 0
    # the sampler's own time: a few microseconds per event, never zero
    assert m.sampling_events > 0
    assert 0 < m.sampling_ns < m.duration * 1e9 * 0.1
    for col, dtype in (
        (prof.stack, np.int32),
        (prof.thread, np.int32),
        (prof.time_ns, np.int64),
        (prof.cpu_ns, np.int64),
        (prof.wall_ns, np.int64),
        (prof.stack_parent, np.int32),
        (prof.stack_frame, np.int32),
    ):
        assert isinstance(col, np.ndarray) and col.dtype == dtype
        assert not col.flags.writeable
    assert len(prof.stack) == prof.sample_count > 50
    assert (np.diff(prof.time_ns) >= 0).all()
    main = [t for t in prof.threads if t.ident == threading.main_thread().ident]
    assert main and main[0].name == "MainThread"
    assert main[0].native_id == threading.main_thread().native_id
    # CPU-mode weights add up to about the CPU the main thread used
    assert 0.35e9 < prof.cpu_ns.sum() < 0.7e9


def test_frames_carry_qualname_file_and_lines() -> None:
    pysampler.start(hz=500)
    Worker().crunch(0.3)
    prof = pysampler.stop()
    crunch = [f for f in prof.frames if f.function == "Worker.crunch"]
    assert crunch, [f.function for f in prof.frames]
    f = crunch[0]
    assert f.filename.endswith("workloads.py")
    assert f.first_line == Worker.crunch.__code__.co_firstlineno
    assert f.line == f.first_line + 1
    spin = [f for f in prof.frames if f.function == "spin_cpu"]
    lines = {f.line for f in spin}
    first = spin[0].first_line
    assert lines and all(first < ln <= first + 8 for ln in lines)


def test_save_chooses_format_from_suffix(tmp_path: os.PathLike[str]) -> None:
    with pysampler.profile(hz=500) as p:
        spin_cpu(0.1)
    for name, fmt in (
        ("a.pprof", "pprof"),
        ("a.pb.gz", "pprof"),
        ("a.cpuprofile", "cpuprofile"),
        ("A.CPUPROFILE", "cpuprofile"),
    ):
        path = os.path.join(tmp_path, name)
        assert p.save(path) == fmt
        data = Path(path).read_bytes()
        assert data[:2] == b"\x1f\x8b" if fmt == "pprof" else data[:1] == b"{"
    assert p.save(os.path.join(tmp_path, "x.bin"), format="cpuprofile") == "cpuprofile"


def test_save_rejects_unknown_format(tmp_path: os.PathLike[str]) -> None:
    with pysampler.profile() as p:
        spin_cpu(0.02)
    with pytest.raises(ValueError, match="suffix"):
        p.save(os.path.join(tmp_path, "out.txt"))
    with pytest.raises(ValueError, match="unknown format 'svg'"):
        p.save(os.path.join(tmp_path, "out.pprof"), format="svg")
    assert not os.path.exists(os.path.join(tmp_path, "out.txt"))


def test_top_lists_function_location_and_percentages() -> None:
    with pysampler.profile(hz=500) as p:
        Worker().crunch(0.3)
    text = p.top(3)
    lines = text.splitlines()
    assert "samples" in lines[0] and "Hz delivered" in lines[0]
    assert "self %" in lines[1] and "total %" in lines[1]
    assert len(lines) <= 5
    row = next(ln for ln in lines if "spin_cpu" in ln)
    self_pct, total_pct = (float(x) for x in row.split()[:2])
    assert self_pct > 80 and total_pct >= self_pct
    assert "workloads.py:" in row


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def test_many_start_stop_cycles() -> None:
    # 200 sessions in a row: each one records in its own mode and leaves
    # nothing behind (threads, references to the code it saw). The code is
    # this test's own, so no thread another test left running holds it.
    def spin_here(seconds: float) -> None:
        spin_cpu(seconds)

    code = spin_here.__code__
    refs = sys.getrefcount(code)
    threads = _native_threads()
    samples = {"cpu": 0, "wall": 0}
    for i in range(200):
        mode = "wall" if i % 2 else "cpu"
        pysampler.start(hz=1000, mode=mode)
        assert pysampler.is_running()
        spin_here(0.003)
        p = pysampler.stop()
        assert not pysampler.is_running()
        assert p.metadata.mode == mode and p.metadata.hz_requested == 1000
        assert p.metadata.dropped_samples == 0
        samples[mode] += sum(
            1
            for node in p.stack
            if any(p.frames[f].function.endswith("spin_here") for f in p.stack_of(int(node)))
        )
        del p
        assert _native_threads() == threads  # stop() joined its threads
    # 0.3 s of spinning in each mode at 1 kHz: hundreds of samples each
    assert samples["cpu"] > 50 and samples["wall"] > 50, samples
    assert sys.getrefcount(code) == refs


def test_the_pseudo_thread_of_other_cpu_is_named_alike_in_both_layers() -> None:
    # Profile.top() tells it from the program's threads by this name
    from pysampler import _sampler
    from pysampler.profile import OTHER_CPU_THREAD

    assert _sampler.OTHER_CPU_THREAD_NAME == OTHER_CPU_THREAD
