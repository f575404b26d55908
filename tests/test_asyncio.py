"""Wall profiles with asyncio=True: where waiting tasks wait.

The server scenario, the idle-task crowd and the short-lived tasks all run
real event loops on loopback; pprof output is read back by go tool pprof.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

import pysampler
from pysampler import Profile, _asyncio, _sampler
from workloads import spin_cpu

pytestmark = pytest.mark.skipif(
    not _asyncio.supported(), reason="asyncio task sampling needs Python 3.9-3.14"
)

TASKS_THREAD = _sampler.TASKS_THREAD_NAME


# -- a small loopback server with three handlers ------------------------
async def wait_short() -> None:
    await asyncio.sleep(0.1)


async def wait_medium() -> None:
    await asyncio.sleep(0.2)


async def wait_long() -> None:
    await asyncio.sleep(0.4)


ROUTES: dict[str, Callable[[], Awaitable[None]]] = {
    "short": wait_short,
    "medium": wait_medium,
    "long": wait_long,
}


async def serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readline()
        if not line:
            break
        await ROUTES[line.strip().decode()]()
        writer.write(b"ok\n")
        await writer.drain()
    writer.close()


async def client(port: int, route: str, requests: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(requests):
        writer.write(route.encode() + b"\n")
        await writer.drain()
        assert await reader.readline() == b"ok\n"
    writer.close()
    await writer.wait_closed()


#: requests per route: each client spends 1.2 s in all, so the short
#: handler's mean is averaged over the most requests
REQUESTS = {"short": 12, "medium": 6, "long": 3}


def run_server_scenario(mode: str, scale: int = 1) -> Profile:
    async def main() -> Profile:
        server = await asyncio.start_server(serve_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pysampler.start(hz=200, mode=mode, asyncio=True)
        try:
            await asyncio.gather(*(client(port, r, n // scale) for r, n in REQUESTS.items()))
        finally:
            profile = pysampler.stop()
        server.close()
        await server.wait_closed()
        return profile

    return asyncio.run(main())


def task_stacks(profile: Profile) -> list[tuple[list[str], int, int]]:
    """(function names root first, samples, value ns) of each task stack."""
    out = []
    for thread, frames, count, value in profile.stacks():
        if profile.threads[thread].name == TASKS_THREAD:
            out.append(([profile.frames[f].function for f in frames], count, value))
    return out


@pytest.fixture(scope="module")
def server_profile() -> Profile:
    return run_server_scenario("wall")


def test_waiting_time_is_attributed_one_two_four_to_each_await(server_profile: Profile) -> None:
    waited: dict[str, int] = defaultdict(int)
    for names, _count, value in task_stacks(server_profile):
        assert names[0].startswith("Task: "), names
        for handler in ("wait_short", "wait_medium", "wait_long"):
            if handler in names and names[-1] == "(awaiting Future)":
                # the chain of awaits, outermost first, down to the future
                assert names[names.index(handler) - 1] == "serve_client", names
                assert names[names.index(handler) + 1] == "sleep", names
                waited[handler] += value
    # mean wait per request: 100, 200 and 400 ms
    short, medium, long = (waited[f"wait_{r}"] / n for r, n in REQUESTS.items())
    assert short > 0, waited
    assert medium / short == pytest.approx(2.0, rel=0.15), waited
    assert long / short == pytest.approx(4.0, rel=0.15), waited
    assert long == pytest.approx(0.4e9, rel=0.15), waited


def test_running_task_is_not_counted_twice(server_profile: Profile) -> None:
    meta = server_profile.metadata
    assert meta.asyncio and meta.task_samples > 0
    assert meta.dropped_task_samples == 0
    # each task has at most one sample per sampling event: at most one per
    # client task, one per connection task and one per accept task (tasks of
    # a coroutine share a root; asyncio named them all). The server's loop
    # accepts each connection in a task of its own running
    # _accept_connection2; the clients connect at once, so those tasks may
    # all be alive at one event (on a slow machine, and under emulation,
    # several events land while they run)
    tasks_thread = [i for i, t in enumerate(server_profile.threads) if t.name == TASKS_THREAD]
    rows = np.isin(server_profile.thread, tasks_thread)
    assert int(rows.sum()) == meta.task_samples
    roots = [server_profile.stack_of(int(n))[0] for n in server_profile.stack[rows]]
    per_event = Counter(zip(server_profile.time_ns[rows].tolist(), roots))
    limit = {
        "Task: client": len(REQUESTS),
        "Task: serve_client": len(REQUESTS),
        "Task: BaseSelectorEventLoop._accept_connection2": len(REQUESTS),
    }
    for (_, root), n in per_event.items():
        assert n <= limit.get(server_profile.frames[root].function, 1), per_event
    # the event loop's own thread keeps its ordinary stack
    main = [i for i, t in enumerate(server_profile.threads) if t.name == "MainThread"]
    assert np.isin(server_profile.thread, main).any()


def test_task_name_label_reads_back_in_go_tool_pprof(
    server_profile: Profile, tmp_path: Path
) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go tool pprof is not installed")
    path = tmp_path / "tasks.pprof"
    server_profile.save(path)
    out = subprocess.run(
        [go, "tool", "pprof", "-tags", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "task_name" in out
    # every task gets a label value; the server's connection tasks, which
    # asyncio named Task-N, are grouped by their coroutine
    assert "serve_client" in out and "Task-" not in out
    top = subprocess.run(
        [go, "tool", "pprof", "-top", "-tagfocus=task_name=serve_client", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "(awaiting Future)" in top


def test_task_frames_appear_in_cpuprofile_and_collapsed(server_profile: Profile) -> None:
    doc = json.loads(server_profile.to_bytes("cpuprofile"))
    names = {n["callFrame"]["functionName"] for n in doc["nodes"]}
    assert f"Thread: {TASKS_THREAD}" in names
    assert any(n.startswith("Task: ") for n in names)
    assert "(awaiting Future)" in names
    lines = server_profile.to_bytes("collapsed").decode().splitlines()
    assert any(";wait_long (" in ln and ln.split(";")[1].startswith("Task: ") for ln in lines)


def test_cpu_mode_with_the_option_is_a_value_error() -> None:
    # the same rule as the CLI's --asyncio and the endpoint's asyncio=1
    with pytest.raises(ValueError, match=r"asyncio=True needs mode='wall' \(a waiting task"):
        pysampler.start(mode="cpu", asyncio=True)
    assert not pysampler.is_running()


def test_ten_thousand_idle_tasks_keep_the_sampling_rate() -> None:
    count = 10_000

    async def main() -> tuple[Profile, Profile]:
        gate = asyncio.Event()
        crowd = [asyncio.create_task(gate.wait(), name=f"idle-{i}") for i in range(count)]
        await asyncio.sleep(0)
        runs: dict[bool, list[Profile]] = {False: [], True: []}
        for flag in (False, True, False, True):  # interleaved, side by side
            pysampler.start(hz=100, mode="wall", asyncio=flag)
            await asyncio.sleep(0.7)
            runs[flag].append(pysampler.stop())
        gate.set()
        await asyncio.gather(*crowd)
        # the better of two runs each: a shared machine's stalls hit either
        best = {f: max(ps, key=lambda p: p.metadata.hz_delivered) for f, ps in runs.items()}
        return best[False], best[True]

    off, on = asyncio.run(main())
    assert off.metadata.task_samples == 0
    # the cap keeps each sample bounded: the rate holds within 20%
    assert on.metadata.hz_delivered >= 0.8 * off.metadata.hz_delivered
    meta = on.metadata
    events = meta.sampling_events
    assert meta.task_samples <= events * _asyncio.DEFAULT_MAX_TASKS
    assert meta.dropped_task_samples > 0
    # the walk resumes where the last sample stopped: all tasks get visited
    seen = {
        on.frames[f].task_name
        for f in {on.stack_of(int(n))[0] for n in np.unique(on.stack)}
        if on.frames[f].task_name
    }
    idle = {name for name in seen if name and name.startswith("idle-")}
    assert events * _asyncio.DEFAULT_MAX_TASKS >= 1.1 * count  # room for one full round
    assert len(idle) >= 0.95 * count


def test_tasks_created_and_finished_between_samples_are_absent() -> None:
    lifetimes: dict[str, list[int]] = {}
    now = _sampler.monotonic_ns
    rng = random.Random(8)

    async def ephemeral(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        lifetimes[name][1] = now()

    async def main() -> Profile:
        pysampler.start(hz=200, mode="wall", asyncio=True)
        pending = []
        for i in range(300):
            name = f"eph-{i}"
            lifetimes[name] = [now(), 1 << 62]
            delay = 0 if i % 2 else rng.uniform(0.005, 0.03)
            pending.append(asyncio.create_task(ephemeral(name, delay), name=name))
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
        return pysampler.stop()

    profile = asyncio.run(main())
    seen = set()
    for node, t in zip(profile.stack.tolist(), profile.time_ns.tolist()):
        name = profile.frames[profile.stack_of(node)[0]].task_name
        if name is None or not name.startswith("eph-"):
            continue
        born, died = lifetimes[name]
        assert born <= t <= died, (name, born, t, died)
        seen.add(name)
    assert seen, "no short-lived task was ever sampled"
    # tasks that ran only between two samples left no trace
    assert len(seen) < len(lifetimes)


def test_task_subclass_python_overrides_are_never_called() -> None:
    calls = []

    class SpyTask(asyncio.Task):  # type: ignore[type-arg]
        def get_name(self) -> str:
            calls.append("get_name")
            return "spy"

        def __getattr__(self, name: str) -> object:
            calls.append(name)
            raise AttributeError(name)

    async def main() -> Profile:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda lp, coro, **kw: SpyTask(coro, loop=lp, **kw))
        pysampler.start(hz=200, mode="wall", asyncio=True)
        await asyncio.gather(*(asyncio.create_task(wait_long(), name=f"s{i}") for i in range(3)))
        return pysampler.stop()

    profile = asyncio.run(main())
    assert calls == []
    names = {f.task_name for f in profile.frames if f.task_name}
    assert {"s0", "s1", "s2"} <= names


UVLOOP_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import uvloop
    import pysampler

    async def db_query():
        await asyncio.sleep(0.15)

    async def handler():
        for _ in range(2):
            await db_query()

    async def main():
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        pysampler.start(hz=200, mode="wall", asyncio=True)
        await asyncio.gather(*(asyncio.create_task(handler(), name=f"h{i}") for i in range(50)))
        p = pysampler.stop()
        rows = [[p.frames[f].function for f in fr] for _t, fr, _c, _v in p.stacks()
                if p.threads[_t].name == "asyncio tasks"]
        print(json.dumps(rows))

    uvloop.run(main()) if hasattr(uvloop, "run") else (uvloop.install(), asyncio.run(main()))
    """
)


def test_uvloop_tasks_are_sampled_without_crash() -> None:
    pytest.importorskip("uvloop")
    proc = subprocess.run(
        [sys.executable, "-c", UVLOOP_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert any(
        r[0].startswith("Task: h")
        and r[1:] == ["handler", "db_query", "sleep", "(awaiting Future)"]
        for r in rows
    ), rows


def test_asyncio_option_is_validated() -> None:
    with pytest.raises(ValueError, match="asyncio"):
        pysampler.start(mode="wall", asyncio="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tasks"):
        pysampler.start(mode="wall", asyncio=True, max_tasks=0)
    assert not pysampler.is_running()


# -- loops in other threads, exited threads, deallocation ---------------
def names_and_stacks(profile: Profile) -> dict[str, list[str]]:
    """task name -> one of its recorded stacks (function names, root first)."""
    out = {}
    for names, _count, _value in task_stacks(profile):
        # local coroutines are named by qualified name: keep the last part
        out[names[0].removeprefix("Task: ")] = [names[0]] + [n.split(".")[-1] for n in names[1:]]
    return out


def test_tasks_of_a_loop_in_another_thread_are_sampled() -> None:
    import threading
    import time

    started = threading.Event()

    async def parked() -> None:
        await asyncio.sleep(0.6)

    async def thread_main() -> None:
        tasks = [asyncio.create_task(parked(), name=f"th-{i}") for i in range(5)]
        await asyncio.sleep(0)
        started.set()
        await asyncio.gather(*tasks)

    worker = threading.Thread(target=asyncio.run, args=(thread_main(),))
    worker.start()
    assert started.wait(10)
    pysampler.start(hz=200, mode="wall", asyncio=True)
    time.sleep(0.3)  # the main thread runs no loop at all
    profile = pysampler.stop()
    worker.join()
    stacks = names_and_stacks(profile)
    for i in range(5):
        assert stacks[f"th-{i}"][1:] == ["parked", "sleep", "(awaiting Future)"], stacks
    # the thread's main task awaits the gather, not a plain future
    main_rows = [s for n, s in stacks.items() if "thread_main" in s]
    assert main_rows and main_rows[0][-1] == "(awaiting _GatheringFuture)", stacks


def test_tasks_left_behind_by_an_exited_thread_are_sampled() -> None:
    # 3.14 moves a finished thread's pending tasks to the interpreter's list
    import threading
    import time

    kept: list[asyncio.Task[None]] = []

    async def stuck(fut: asyncio.Future[None]) -> None:
        await fut

    async def thread_main() -> None:
        fut = asyncio.get_running_loop().create_future()
        kept.extend(asyncio.create_task(stuck(fut), name=f"left-{i}") for i in range(3))
        await asyncio.sleep(0.01)

    def run_and_leave() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(thread_main())
        loop.close()  # the tasks stay pending; the loop goes, and the thread

    worker = threading.Thread(target=run_and_leave)
    worker.start()
    worker.join()
    try:
        pysampler.start(hz=200, mode="wall", asyncio=True)
        time.sleep(0.2)
        profile = pysampler.stop()
    finally:
        for task in kept:
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            task.get_coro().close()  # type: ignore[union-attr]
        kept.clear()
    stacks = names_and_stacks(profile)
    for i in range(3):
        assert stacks[f"left-{i}"][1:] == ["stuck", "(awaiting Future)"], stacks


DEALLOC_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json, time
    import pysampler

    gc.disable()  # plain reference counting frees the tasks below

    class Slow:
        def __del__(self):
            # Python code while the task that owned us is being deallocated:
            # sampling events run here, with the task still in asyncio's
            # registry and its refcount already 0
            end = time.perf_counter() + 0.004
            while time.perf_counter() < end:
                pass

    class Heavy(asyncio.Task):
        pass

    async def stuck(fut):
        await fut

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda lp, coro, **kw: Heavy(coro, loop=lp, **kw))
        pysampler.start(hz=1000, mode="wall", asyncio=True)
        for _ in range(4):
            fut = loop.create_future()
            tasks = [asyncio.create_task(stuck(fut)) for _ in range(25)]
            await asyncio.sleep(0.01)  # each now waits on fut: a reference cycle
            for t in tasks:
                t.slow = Slow()
                t._log_destroy_pending = False
            # break the task -> coroutine -> future -> callback -> task cycle,
            # so that dropping the list frees the pending tasks at once
            for cb, _ctx in list(fut._callbacks):
                fut.remove_done_callback(cb)
            for t in tasks:  # 3.14 also records who awaits a future
                getattr(asyncio, "future_discard_from_awaited_by", lambda f, w: None)(fut, t)
            del t, tasks, fut  # each dealloc runs Slow.__del__
        p = pysampler.stop()
        in_del = sum(c for _t, fr, c, _v in p.stacks()
                     if any(p.frames[f].function.endswith("__del__") for f in fr))
        print(json.dumps({"in_del": in_del, "tasks": p.metadata.task_samples}))

    asyncio.run(main())
    """
)


def test_tasks_being_deallocated_while_sampled_do_not_crash() -> None:
    from helpers import run_python

    proc = run_python(DEALLOC_SCRIPT)
    out = json.loads(proc.stdout)
    # sampling events did happen inside the deallocations
    assert out["in_del"] > 0 and out["tasks"] > 0, out


def test_checking_the_task_layout_uses_no_task_number() -> None:
    from helpers import run_python

    proc = run_python(
        """
        import asyncio
        import pysampler
        from pysampler import _asyncio
        assert _asyncio.supported()
        pysampler.start(mode="wall", asyncio=True)
        pysampler.stop()

        async def main():
            return asyncio.current_task().get_name(), len(asyncio.all_tasks())

        print(*asyncio.run(main()))
        """
    )
    assert proc.stdout.split() == ["Task-1", "1"]


# -- readable task profiles: grouped, awaited tasks named, counted once -------
async def fetch_row() -> None:
    await asyncio.sleep(0.1)


async def handle_request() -> None:
    await fetch_row()


async def serve_connection() -> None:
    for _ in range(3):  # a connection task awaits each request's own task
        await asyncio.create_task(handle_request())


def test_tasks_group_by_coroutine_and_name_the_task_they_await() -> None:
    async def main() -> Profile:
        pysampler.start(hz=200, mode="wall", asyncio=True)
        try:
            await asyncio.gather(*(serve_connection() for _ in range(8)))
        finally:
            profile = pysampler.stop()
        return profile

    profile = asyncio.run(main())
    stacks = task_stacks(profile)
    # 8 connection tasks and 24 request tasks, named Task-N by asyncio: one
    # root per coroutine, not one per task
    roots = {names[0] for names, _, _ in stacks}
    assert {"Task: serve_connection", "Task: handle_request"} <= roots, roots
    assert not any(f.function.startswith("Task: Task-") for f in profile.frames)
    leaves = {names[-1] for names, _, _ in stacks if names[0] == "Task: serve_connection"}
    assert leaves == {"(awaiting Task: handle_request)"}, leaves
    # top ranks functions, not what tasks wait on, and counts each request once
    rows = profile.functions()
    assert not any(r.function.startswith("(") for r in rows)
    by_name = {r.function.split(".")[-1]: r for r in rows}
    # its waiting is the requests': what it has of its own is the moments a
    # tick found it running (starting the next request), now and then one
    served = by_name.get("serve_connection")
    assert served is None or served.total_value < 0.05 * by_name["handle_request"].total_value, (
        served
    )
    # a request task waits in fetch_row, bar the moments it is ready to run
    assert by_name["fetch_row"].total_value > 0.9 * by_name["handle_request"].total_value
    # 24 requests of 0.1 s, 8 at a time: 8 tasks waiting for about 0.3 s
    assert by_name["handle_request"].total_value == pytest.approx(8 * 0.3e9, rel=0.3)
    text = profile.top(5).splitlines()
    assert "not counted:" in text[0]
    assert text[2].split()[2] == "sleep"


async def returns_at_once() -> None:
    await asyncio.sleep(0)


async def awaits_a_task() -> None:
    await asyncio.create_task(returns_at_once())


async def keeps_the_loop_busy() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # returns_at_once has returned in this turn of the loop, and the wakeup
    # of awaits_a_task waits in the ready queue behind this
    spin_cpu(0.3)


def test_a_task_awaiting_a_finished_task_still_names_it() -> None:
    # Until its wakeup runs, a task still awaits the task that has finished
    # (as with a finished future): that wait names the finished task's
    # coroutine too, not a bare "(awaiting Task)". A loop busy right after a
    # task returns shows it, and so does any slow machine, now and then.
    async def main() -> Profile:
        pysampler.start(hz=200, mode="wall", asyncio=True)
        try:
            await asyncio.gather(awaits_a_task(), keeps_the_loop_busy())
        finally:
            profile = pysampler.stop()
        return profile

    waits: Counter[str] = Counter()
    for names, count, _ in task_stacks(asyncio.run(main())):
        if names[0] == "Task: awaits_a_task":
            waits[names[-1]] += count
    assert set(waits) == {"(awaiting Task: returns_at_once)"}, waits
    assert sum(waits.values()) > 10, waits  # 0.3 s at 200 Hz: ~60 events
