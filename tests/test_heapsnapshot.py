"""Heap snapshots of the object graph (.heapsnapshot): taken in a child
process (the walk is native code), read back with tests/heapgraph.py, which
checks the format's invariants, and by the real readers: Chrome DevTools'
own heap snapshot model (test_devtools_*) and memlab (test_memlab_*)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pysampler
from heapgraph import Graph, Node
from helpers import run_python
from pysampler import heapsnapshot
from pysampler import server as server_mod
from test_server import get

HERE = Path(__file__).resolve().parent
VIEWERS = HERE / "viewers"

#: a program whose objects the tests look for: HOLD (a module global) names
#: each of them; the snapshot goes to the path in argv[1], and the sizes
#: sys.getsizeof gives them to stdout, as JSON
SUBJECTS = r"""
import json, sys, threading
import pysampler

class Plain:
    def __init__(self):
        self.alpha = "alpha-" + "value"
        self.beta = [1, 2, 3]

class Slotted:
    __slots__ = ("gamma", "delta")
    def __init__(self):
        self.gamma = b"gamma" * 10
        self.delta = 12345678901

class Sub(dict):
    pass

def make_closure():
    captured = ["captured"]
    def inner():
        return captured
    return inner

def gen():
    gen_local = "gen-" + "local"
    yield gen_local

g = gen()
next(g)

def fail():
    tb_local = ["held by a traceback"]
    raise ValueError("boom")

try:
    fail()
except ValueError as e:
    saved = e
ready, stop = threading.Event(), threading.Event()

def worker():
    worker_local = bytearray(123457)
    ready.set()
    stop.wait()

t = threading.Thread(target=worker, name="worker-thread")
t.start()
ready.wait()
sub = Sub(k="v" * 40)
sub.attr = 3.5
HOLD = {
    "plain": Plain(), "slotted": Slotted(), "sub": sub, "closure": make_closure(), "gen": g,
    "ascii": "hello " * 3, "unicode": "h\u00e9llo \u2603 \U0001f600 \"q\" \\ \n\t\x01",
    "long": "x" * 5000, "surrogate": "a\ud800b", "bytes": b"b" * 1000, "bytearray": bytearray(300),
    "list": [None, 10**10], "tuple": ("t", 2.5), "set": {"s1", "s2"}, "frozenset": frozenset({7}),
    "int": 10**12 + 1, "neg": -5000, "big": 2**100, "float": 1.1, "true": True,
    "dict": {"inner": 1}, 7: "seven", (1, 2): "tuple key", None: "none key",
    "module": json, "class": Plain, "exception": saved,
}
sizes = {repr(k): sys.getsizeof(v) for k, v in HOLD.items()}
info = pysampler.heap.snapshot_graph(sys.argv[1])
stop.set()
t.join()
print(json.dumps({"sizes": sizes, "nodes": info.nodes, "edges": info.edges,
                  "pause": info.pause_seconds, "size": info.size}))
"""


def take(tmp_path: Path, code: str, name: str = "s.heapsnapshot") -> tuple[Graph, dict[str, Any]]:
    """Run ``code`` in a child with the snapshot path as argv[1]; the graph
    it wrote and the JSON it printed."""
    path = tmp_path / name
    proc = run_python(f"import sys\nsys.argv[1:] = [{str(path)!r}]\n" + code, timeout=120)
    return Graph.load(path), json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, dict[str, Any], Node]:
    graph, out = take(tmp_path_factory.mktemp("subjects"), SUBJECTS)
    hold = graph.module("__main__").child(graph, "__dict__").child(graph, "HOLD")
    return graph, out, hold


def test_snapshot_follows_the_format_and_reaches_every_node(
    subjects: tuple[Graph, dict[str, Any], Node],
) -> None:
    graph, out, _ = subjects
    assert len(graph.nodes) == out["nodes"]
    assert sum(len(n.edges) for n in graph.nodes) == out["edges"]
    assert graph.reachable() == len(graph.nodes)
    assert [graph.nodes[to].name for _, _, to in graph.root.edges] == [
        "(Modules)",
        "(Thread stacks)",
        "(Other roots)",
    ]
    for key in ("trace_function_infos", "trace_tree", "samples", "locations"):
        assert graph.data[key] == []
    # the node types the walk writes, at V8's positions (graph.h numbers them)
    types = graph.data["snapshot"]["meta"]["node_types"][0]
    assert [types.index(t) for t in ("string", "object", "code", "closure", "number")] == [
        2,
        3,
        4,
        5,
        7,
    ]
    assert types.index("synthetic") == 9


def test_node_sizes_are_what_sys_getsizeof_says(
    subjects: tuple[Graph, dict[str, Any], Node],
) -> None:
    graph, out, hold = subjects
    for key, size in out["sizes"].items():
        k = eval(key)  # the reprs of the test's own keys
        etype = "element" if isinstance(k, int) and not isinstance(k, bool) else "property"
        label: str | int
        if isinstance(k, str) or etype == "element":
            label = k
        else:
            label = {None: "None", (1, 2): "<tuple key>"}[k]
        node = hold.child(graph, label, etype)
        assert node.size == size, f"{key}: {node.size} != sys.getsizeof {size}"


def test_nodes_are_named_as_a_person_reads_them(
    subjects: tuple[Graph, dict[str, Any], Node],
) -> None:
    graph, _, hold = subjects

    def node(key: str) -> Node:
        return hold.child(graph, key)

    assert (node("ascii").type, node("ascii").name) == ("string", "hello hello hello ")
    assert node("unicode").name == 'h\u00e9llo \u2603 \U0001f600 "q" \\ \n\t\x01'
    assert node("long").name == "x" * 1000 + "\u2026"
    assert node("surrogate").name == "a\ufffdb"  # no UTF-8 for a lone surrogate
    assert (node("int").type, node("int").name) == ("number", "1000000000001")
    assert node("neg").name == "-5000"
    assert node("big").name == "<int above 2**63>"
    assert (node("float").type, node("float").name) == ("number", "1.1")
    assert node("true").name == "bool"
    assert node("plain").name == "__main__.Plain"
    assert node("bytes").name == "bytes"
    assert (node("closure").type, node("closure").name) == (
        "closure",
        "__main__.make_closure.<locals>.inner",
    )
    assert node("module").name == "<module json>"
    assert node("class").name == "<class __main__.Plain>"
    assert node("gen").name == "<generator gen>" or sys.version_info < (3, 11)
    assert graph.root_child("(Modules)").child(graph, "json").name == "<module json>"
    threads = [graph.nodes[to].name for _, _, to in graph.root_child("(Thread stacks)").edges]
    assert any(re.fullmatch(r"Thread worker-thread \(\d+\)", t) for t in threads), threads
    assert any(re.fullmatch(r"Thread MainThread \(\d+\)", t) for t in threads), threads


def test_edges_are_named_by_attribute_key_index_and_variable(
    subjects: tuple[Graph, dict[str, Any], Node],
) -> None:
    graph, _, hold = subjects
    plain = hold.child(graph, "plain")
    if sys.version_info >= (3, 11):  # attributes in the object (managed dict)
        attrs = plain
    else:
        attrs = plain.child(graph, "__dict__")
    assert attrs.child(graph, "alpha", "property").name == "alpha-value"
    assert attrs.child(graph, "beta", "property").child(graph, 2, "element").name == "3"
    assert plain.child(graph, "__class__").name == "<class __main__.Plain>"
    slotted = hold.child(graph, "slotted")
    assert slotted.child(graph, "delta", "property").name == "12345678901"
    assert slotted.child(graph, "gamma", "property").size == sys.getsizeof(b"gamma" * 10)
    sub = hold.child(graph, "sub")
    assert sub.child(graph, "k", "property").name == "v" * 40
    # (3.14 keeps a dict subclass's attributes in the object too)
    sub_attrs = (
        sub if any(label == "attr" for _, label, _ in sub.edges) else sub.child(graph, "__dict__")
    )
    assert sub_attrs.child(graph, "attr").name == "3.5"
    # dict keys: str by name, small ints as elements, others by type; the
    # keys themselves as internal edges (memory the dict holds)
    assert hold.child(graph, 7, "element").name == "seven"
    assert hold.child(graph, "7", "internal").name == "7"
    assert hold.child(graph, "<tuple key>", "property").name == "tuple key"
    assert hold.child(graph, "None", "property").name == "none key"
    # a closure's cells by free variable name
    cell = hold.child(graph, "closure").child(graph, "captured", "context")
    assert cell.name == "cell"
    assert cell.child(graph, "cell_contents").child(graph, 0).name == "captured"
    if sys.version_info >= (3, 11):
        assert hold.child(graph, "gen").child(graph, "gen_local", "context").name == "gen-local"
    # a stored exception holds its traceback, its frames and their locals
    tb = hold.child(graph, "exception").child(graph, "__traceback__").child(graph, "tb_next")
    frame = tb.child(graph, "tb_frame")
    assert re.fullmatch(r"<frame fail <string>:\d+>", frame.name)
    assert frame.child(graph, "tb_local", "context").child(graph, 0).name == "held by a traceback"
    # a frame local on another thread's stack
    thread = next(
        graph.nodes[to]
        for _, _, to in graph.root_child("(Thread stacks)").edges
        if graph.nodes[to].name.startswith("Thread worker-thread")
    )
    frames = [graph.nodes[to] for t, _, to in thread.edges if t == "element"]
    worker = next(f for f in frames if f.name.startswith("<frame worker "))
    assert re.fullmatch(r"<frame worker <string>:\d+>", worker.name)
    local = worker.child(graph, "worker_local", "context")
    assert (local.name, local.size) == ("bytearray", sys.getsizeof(bytearray(123457)))


def test_numpy_arrays_count_their_data_and_reference_their_base(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    graph, _ = take(
        tmp_path,
        r"""
import json, sys
import numpy as np
import pysampler
base = np.arange(10000, dtype=np.float64)
HOLD = {"base": base, "view": base[5:10],
        "objects": np.array(["a-str", 10**12, None, "b-str"], dtype=object).reshape(2, 2)[:, ::-1]}
pysampler.heap.snapshot_graph(sys.argv[1])
print(json.dumps({k: sys.getsizeof(v) for k, v in HOLD.items()}))
""",
    )
    hold = graph.module("__main__").child(graph, "__dict__").child(graph, "HOLD")
    base, view, objects = (hold.child(graph, k) for k in ("base", "view", "objects"))
    assert base.size >= 10000 * 8 and base.name == "numpy.ndarray"
    assert view.size < 1000 and view.child(graph, "base").index == base.index
    # an object array refers to its elements, in the view's C order
    assert [objects.child(graph, i, "element").name for i in range(4)] == [
        "1000000000000",
        "a-str",
        "b-str",
        "NoneType",
    ]


def test_snapshot_never_imports_numpy(tmp_path: Path) -> None:
    out = run_python(
        f"""
        import sys
        import pysampler
        # pysampler's analysis helpers may have loaded numpy: forget it, and
        # fail any import of it from here on
        for name in [m for m in sys.modules if m == "numpy" or m.startswith("numpy.")]:
            del sys.modules[name]
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy" or name.startswith("numpy."):
                    raise ImportError("the snapshot imported numpy")
        sys.meta_path.insert(0, Block())
        pysampler.heap.snapshot_graph({str(tmp_path / "n.heapsnapshot")!r})
        print("numpy" in sys.modules)
        """
    )
    assert out.stdout.strip() == "False"


def test_program_is_paused_while_the_graph_is_read(tmp_path: Path) -> None:
    # A thread stamps the clock as fast as it can; across the snapshot, its
    # longest gap covers the whole pause: it ran no Python code meanwhile.
    out = run_python(
        f"""
        import json, threading, time
        import pysampler
        stamps, stop = [], threading.Event()
        def stamper():
            while not stop.is_set():
                stamps.append(time.perf_counter())
        big = [str(i) for i in range(200000)]
        t = threading.Thread(target=stamper)
        t.start()
        time.sleep(0.05)
        info = pysampler.heap.snapshot_graph({str(tmp_path / "p.heapsnapshot")!r})
        time.sleep(0.05)
        stop.set()
        t.join()
        gap = max(b - a for a, b in zip(stamps, stamps[1:]))
        print(json.dumps({{"gap": gap, "pause": info.pause_seconds}}))
        """
    )
    result = json.loads(out.stdout)
    assert result["pause"] > 0.01
    assert result["gap"] >= result["pause"], result


def test_snapshot_while_threads_allocate_and_profilers_run(tmp_path: Path) -> None:
    # The graph is consistent however busy the program is, with the CPU and
    # heap samplers on, from a thread that is not the main one.
    out = run_python(
        f"""
        import json, threading, sys
        sys.path.insert(0, {str(HERE)!r})
        import pysampler
        from heapgraph import Graph
        stop = threading.Event()
        def churn(seed):
            kept = {{}}
            i = 0
            while not stop.is_set():
                kept[i % 5000] = [str(i), {{"k": i}}, (i, float(i))]
                i += 1
        threads = [threading.Thread(target=churn, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        pysampler.start(hz=200, mode="wall")
        pysampler.heap.start(sample_bytes=64 * 1024)
        infos = []
        def snap(k):
            infos.append(pysampler.heap.snapshot_graph({str(tmp_path)!r} + f"/b{{k}}.heapsnapshot"))
        for k in range(3):
            s = threading.Thread(target=snap, args=(k,))
            s.start()
            s.join()
        pysampler.heap.stop()
        pysampler.stop()
        stop.set()
        for t in threads:
            t.join()
        results = []
        for k, info in enumerate(infos):
            g = Graph.load({str(tmp_path)!r} + f"/b{{k}}.heapsnapshot")
            results.append((info.nodes, g.reachable() == len(g.nodes)))
        print(json.dumps(results))
        """,
        timeout=180,
    )
    results = json.loads(out.stdout)
    assert len(results) == 3 and all(ok for _, ok in results), results


def test_snapshot_file_appears_whole_with_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "app.heapsnapshot"
    out = run_python(
        f"""
        import os, pysampler
        os.umask(0o022)
        info = pysampler.heap.snapshot_graph({str(path)!r})
        print(info.size, oct(os.stat(info.path).st_mode & 0o777))
        """
    )
    size, mode = out.stdout.split()
    assert int(size) == path.stat().st_size and mode == "0o644"
    assert os.listdir(tmp_path) == ["app.heapsnapshot"]  # no temporary file left
    with pytest.raises(FileNotFoundError):
        pysampler.heap.snapshot_graph(tmp_path / "no-such-dir" / "x.heapsnapshot")


def test_one_snapshot_at_a_time() -> None:
    assert heapsnapshot._lock.acquire(blocking=False)
    try:
        with pytest.raises(pysampler.SnapshotInProgress):
            pysampler.heap.snapshot_graph("never-written.heapsnapshot")
    finally:
        heapsnapshot._lock.release()
    assert not os.path.exists("never-written.heapsnapshot")


def test_free_threaded_build_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heapsnapshot, "supported", lambda: False)
    with pytest.raises(RuntimeError, match="free-threaded"):
        pysampler.heap.snapshot_graph("never-written.heapsnapshot")
    srv = pysampler.serve(0)
    try:
        reply = get(srv.url + "/profile/heap_snapshot")
    finally:
        srv.close()
    assert reply.status == 501
    assert "free-threaded" in reply.json()["error"]


@pytest.fixture
def server() -> Iterator[server_mod.Server]:
    srv = pysampler.serve(0, token="s3cret")
    try:
        yield srv
    finally:
        srv.close()


def test_route_follows_the_endpoint_rules(server: server_mod.Server) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    assert get(server.url + "/profile/heap_snapshot").status == 401
    bad = get(server.url + "/profile/heap_snapshot?collect=2", auth)
    assert (bad.status, bad.json()["parameter"]) == (400, "collect")
    typo = get(server.url + "/profile/heap_snapshot?colect=1", auth)
    assert (typo.status, typo.json()["parameter"]) == (400, "colect")
    assert heapsnapshot._lock.acquire(blocking=False)
    try:
        busy = get(server.url + "/profile/heap_snapshot", auth)
    finally:
        heapsnapshot._lock.release()
    assert busy.status == 409 and "already" in busy.json()["error"]
    index = get(server.url + "/debug/pprof/", auth)
    assert "/profile/heap_snapshot" in index.body.decode()


class LeakApp:
    """tests/leak_app.py in a child process, driven over stdin and HTTP."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("PYSAMPLER_PORT", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "leak_app.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline().split()[1])}"

    def leak(self, count: int) -> int:
        """Leak ``count`` records; the bytes the cache now holds."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"leak {count}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline().split()[1])

    def snapshot(self, path: Path) -> dict[str, str]:
        reply = get(self.url + "/profile/heap_snapshot", timeout=120)
        assert reply.status == 200, reply.body[:300]
        path.write_bytes(reply.body)
        return dict(reply.headers)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def leaked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two snapshots over HTTP of a program leaking through a global cache:
    2000 records, then 8000 more."""
    tmp = tmp_path_factory.mktemp("leak")
    app = LeakApp()
    try:
        held1 = app.leak(2000)
        headers1 = app.snapshot(tmp / "before.heapsnapshot")
        held2 = app.leak(8000)
        headers2 = app.snapshot(tmp / "after.heapsnapshot")
    finally:
        app.close()
    return {
        "before": tmp / "before.heapsnapshot",
        "after": tmp / "after.heapsnapshot",
        "held": (held1, held2),
        "headers": (headers1, headers2),
    }


def test_route_serves_a_heapsnapshot_file(leaked: dict[str, Any]) -> None:
    headers = leaked["headers"][1]
    assert re.fullmatch(
        r'attachment; filename="heap_\d+\.heapsnapshot"', headers["Content-Disposition"]
    )
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == leaked["after"].stat().st_size
    assert float(headers["X-Pysampler-Pause-Ms"]) > 0
    graph = Graph.load(leaked["after"])
    assert len(graph.nodes) == int(headers["X-Pysampler-Nodes"])
    assert graph.reachable() == len(graph.nodes)


def memlab_growth(before: Path, after: Path) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (VIEWERS / "node_modules" / "@memlab" / "heap-analysis").is_dir():
        if os.environ.get("CI"):
            raise RuntimeError("memlab is required: run scripts/viewer-deps.sh")
        pytest.skip("memlab is not installed (scripts/viewer-deps.sh)")
    out = subprocess.run(
        [node, str(HERE / "memlab_growth.js"), str(before), str(after)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=VIEWERS,
        env=dict(os.environ, NODE_PATH=str(VIEWERS / "node_modules")),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(json.loads(out.stdout))


def test_memlab_finds_the_cache_holding_the_growth(leaked: dict[str, Any]) -> None:
    report = memlab_growth(leaked["before"], leaked["after"])
    held_before, held_after = leaked["held"]
    holder = report["holders"][0]
    # memlab's path from the root to what holds the growth: the module
    # global CACHE of the program's __main__
    edges = [step["edge"] for step in holder["path"]]
    assert edges[-3:] == ["__main__", "__dict__", "CACHE"], holder["path"]
    assert holder["name"] == "dict"
    # the 8000 records are new objects it holds (a few may reuse an address
    # freed between the snapshots, and then keep an old id)
    assert holder["new_classes"].get("__main__.Record", 0) >= 8000 * 0.98
    # its retained size, computed by memlab, against the bytes the program
    # counted itself: all of it, and the growth
    assert holder["retained"] == pytest.approx(held_after, rel=0.10)
    assert holder["retained_before"] == pytest.approx(held_before, rel=0.10)
    growth = holder["retained"] - holder["retained_before"]
    assert growth == pytest.approx(held_after - held_before, rel=0.10)


def test_devtools_reads_the_snapshots(leaked: dict[str, Any]) -> None:
    import browser

    browser.require_browser()
    from devtools_heap import devtools

    with devtools() as dt:
        dt.load("before", leaked["before"])
        dt.load("after", leaked["after"])
        # Summary: objects grouped by type, with counts and sizes
        summary = dt.summary("after")
        by_name = {v["name"]: v for v in summary.values()}
        records = by_name["__main__.Record"]
        assert records["count"] == 10000
        for name in ("(string)", "dict", "<module>", "<class>", "Function", "(compiled code)"):
            assert name in by_name, sorted(by_name)[:40]
        assert dt.call("after", "getStatistics")["total"] > leaked["held"][1]
        # Retainers: a record is held by the cache's entry, the cache by the
        # module's CACHE global
        record_index = records["first"]
        retainers = dt.retainers("after", record_index)
        entry = next(r for r in retainers if r["type"] == "property")
        assert entry["name"].startswith("request-") and entry["node"]["name"] == "dict"
        cache_retainers = dt.retainers("after", entry["node"]["nodeIndex"])
        assert any(r["name"] == "CACHE" for r in cache_retainers), cache_retainers
        # Containment: the cache's entries, by key, and the keys themselves
        children = dt.children("after", entry["node"]["nodeIndex"])
        assert children["totalLength"] == 2 * 10000
        first = children["items"][0]
        assert first["name"].startswith("request-") and first["type"] in ("property", "internal")
        # Comparison: what was added between the two snapshots
        diff = dt.comparison("before", "after")
        added = next(v for v in diff.values() if v["name"] == "__main__.Record")
        assert added["countDelta"] == 8000
        assert added["addedCount"] >= 8000 * 0.98


def test_devtools_memory_panel_shows_the_growth(leaked: dict[str, Any]) -> None:
    import browser

    browser.require_browser()
    from devtools_heap import memory_panel

    browser.ARTIFACTS.mkdir(exist_ok=True)
    with browser.chromium() as b:
        page = memory_panel(b, [leaked["before"], leaked["after"]])
        page.get_by_text("after", exact=True).first.click()
        # Summary: the record class with its count
        page.get_by_text("__main__.Record").first.wait_for(timeout=60000)
        assert page.get_by_text(re.compile(r"^\u00d7\s*10\D?000$")).count() >= 1
        # a record's retainers: the cache's entry, the CACHE global
        page.get_by_text("__main__.Record").first.click()
        page.keyboard.press("ArrowRight")  # expand the class
        page.get_by_text(re.compile(r"^@\d+$")).first.wait_for(timeout=60000)
        page.keyboard.press("ArrowDown")  # its first object
        page.get_by_text("CACHE", exact=True).first.wait_for(timeout=60000)
        page.screenshot(path=str(browser.ARTIFACTS / "heapsnapshot-summary.png"))
        # Comparison against the first snapshot: +8000 records (and their
        # bytes, lists, numbers)
        page.locator("select").first.select_option(label="Comparison")
        page.get_by_text(re.compile(r"^\+8\D?000$")).first.wait_for(timeout=60000)
        assert page.get_by_text("__main__.Record").count() >= 1
        page.screenshot(path=str(browser.ARTIFACTS / "heapsnapshot-comparison.png"))
