"""Chrome DevTools' own heap snapshot model, run on our files: the Memory
panel parses a .heapsnapshot and computes its views in a worker
(heap_snapshot_worker), which Chromium bundles at devtools://devtools.
This opens the bundled DevTools page in headless Chromium (Debian's, via
Playwright), starts that worker as the Memory panel does (with its second
worker for dominators), feeds it the file through the same loader, and
calls the methods behind the panel's views: Summary (aggregatesWithFilter),
Containment (createEdgesProvider), Retainers (createRetainingEdgesProvider)
and Comparison (aggregatesForDiff + calculateSnapshotDiff). memory_panel()
drives the panel itself, for screenshots of what a person sees.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import browser

DEVTOOLS = "devtools://devtools/bundled/devtools_app.html"
_CHUNK = 4 << 20

_SETUP = """
() => {
  const url = 'devtools://devtools/bundled/entrypoints/heap_snapshot_worker/' +
      'heap_snapshot_worker-entrypoint.js';
  let nextCall = 1;
  const start = () => new Promise((resolve, reject) => {
    const w = new Worker(url, {type: 'module'});
    w.pending = new Map();
    w.onerror = (e) => reject(new Error('worker failed: ' + e.message));
    w.onmessage = (ev) => {
      const d = ev.data;
      if (d === 'workerReady') { resolve(w); return; }
      if (d && d.callId !== undefined && w.pending.has(d.callId)) {
        const [ok, fail] = w.pending.get(d.callId);
        w.pending.delete(d.callId);
        if (d.error) fail(new Error(d.errorMethodName + ': ' + d.error)); else ok(d.result);
      }
    };
  });
  const call = (w, msg, transfer) => new Promise((ok, fail) => {
    msg.callId = nextCall++;
    w.pending.set(msg.callId, [ok, fail]);
    w.postMessage(msg, transfer || []);
  });
  window.__hs = {start, call, chunks: [], snapshots: {}};
}
"""

_LOAD = """
async (key) => {
  const {start, call} = window.__hs;
  const primary = await start(), secondary = await start();
  const channel = new MessageChannel();
  await call(secondary, {disposition: 'setupForSecondaryInit', objectId: 1},
             [channel.port2]);
  await call(primary, {disposition: 'createLoader', objectId: 1});
  for (const c of window.__hs.chunks) {
    await call(primary, {disposition: 'method', objectId: 1, methodName: 'write',
                         methodArguments: [c]});
  }
  window.__hs.chunks = [];
  await call(primary, {disposition: 'method', objectId: 1, methodName: 'close',
                       methodArguments: []});
  const built = await call(primary, {disposition: 'factory', objectId: 1,
      methodName: 'buildSnapshot', methodArguments: [], newObjectId: 2}, [channel.port1]);
  window.__hs.snapshots[key] = primary;
  return built;
}
"""

_METHOD = """
async ([key, objectId, methodName, args]) => window.__hs.call(window.__hs.snapshots[key],
    {disposition: 'method', objectId, methodName, methodArguments: args})
"""

_SUMMARY = """
async (key) => {
  const aggregates = await window.__hs.call(window.__hs.snapshots[key], {disposition: 'method',
      objectId: 2, methodName: 'aggregatesWithFilter', methodArguments: [{}]});
  const out = {};
  for (const [k, v] of Object.entries(aggregates)) {
    out[k] = {name: v.name, count: v.count, self: v.self, maxRet: v.maxRet, distance: v.distance,
              first: v.idxs[0]};
  }
  return out;
}
"""

_COMPARISON = """
async ([base, key]) => {
  const {call, snapshots} = window.__hs;
  const aggregates = await call(snapshots[base], {disposition: 'method', objectId: 2,
      methodName: 'aggregatesForDiff', methodArguments: ['[]']});
  const diff = await call(snapshots[key], {disposition: 'method', objectId: 2,
      methodName: 'calculateSnapshotDiff', methodArguments: [base, aggregates]});
  const out = {};
  for (const [k, v] of Object.entries(diff)) {
    out[k] = {name: v.name, addedCount: v.addedCount, removedCount: v.removedCount,
              countDelta: v.countDelta, addedSize: v.addedSize, removedSize: v.removedSize,
              sizeDelta: v.sizeDelta};
  }
  return out;
}
"""

_FACTORY = """
async ([key, objectId, methodName, args, newObjectId]) => window.__hs.call(
    window.__hs.snapshots[key],
    {disposition: 'factory', objectId, methodName, methodArguments: args, newObjectId})
"""


class DevToolsHeap:
    """Snapshots loaded into DevTools' worker, addressed by a key."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self._next_object = 100

    def load(self, key: str, path: str | Path) -> None:
        data = Path(path).read_text(encoding="utf-8")
        for i in range(0, len(data), _CHUNK):
            self.page.evaluate("(c) => window.__hs.chunks.push(c)", data[i : i + _CHUNK])
        assert self.page.evaluate(_LOAD, key) is True, "DevTools did not build the snapshot"

    def call(self, key: str, method: str, *args: Any, object_id: int = 2) -> Any:
        return self.page.evaluate(_METHOD, [key, object_id, method, list(args)])

    def provider(self, key: str, factory: str, *args: Any) -> int:
        self._next_object += 1
        assert self.page.evaluate(_FACTORY, [key, 2, factory, list(args), self._next_object])
        return self._next_object

    def items(self, key: str, provider: int, count: int = 200) -> list[dict[str, Any]]:
        rng = self.call(key, "serializeItemsRange", 0, count, object_id=provider)
        return list(rng["items"])

    def summary(self, key: str) -> dict[str, dict[str, Any]]:
        """The Summary view: per class, its name, count, self size, retained
        size ("maxRet"), distance and the index of its first object."""
        return dict(self.page.evaluate(_SUMMARY, key))

    def retainers(self, key: str, node_index: int) -> list[dict[str, Any]]:
        """The Retainers view of a node: edges into it, with their nodes."""
        return self.items(key, self.provider(key, "createRetainingEdgesProvider", node_index))

    def children(self, key: str, node_index: int, count: int = 20) -> dict[str, Any]:
        """The Containment view of a node: the first ``count`` of its edges
        ("items", with their nodes) and how many there are ("totalLength")."""
        provider = self.provider(key, "createEdgesProvider", node_index)
        return dict(self.call(key, "serializeItemsRange", 0, count, object_id=provider))

    def comparison(self, base: str, key: str) -> dict[str, dict[str, Any]]:
        """The Comparison view of ``key`` against ``base``: per class,
        added and deleted counts and the size delta."""
        return dict(self.page.evaluate(_COMPARISON, [base, key]))


def memory_panel(b: Any, paths: list[Path]) -> Any:
    """The Memory panel of the bundled DevTools, in a new page of browser
    ``b``, with ``paths`` loaded through its "Load profile" button, as a
    person would; returns the page once the last one is listed."""
    page = b.new_page(viewport={"width": 1500, "height": 950})
    page.goto(DEVTOOLS + "?panel=heap-profiler")
    load = page.get_by_text("Load profile").first
    load.wait_for(timeout=30000)
    sizes = page.get_by_text(re.compile(r"^\(\d[\d.,]*\s[kMG]?B\)$"))
    for n, path in enumerate(paths, 1):
        with page.expect_file_chooser() as chooser:
            load.click()
        chooser.value.set_files(str(path))
        # listed by file name, with its total size once parsed
        page.get_by_text(path.stem, exact=True).first.wait_for(timeout=60000)
        deadline = time.monotonic() + 120
        while sizes.count() < n:
            assert time.monotonic() < deadline, f"DevTools did not load {path}"
            time.sleep(0.2)
    return page


@contextmanager
def devtools() -> Iterator[DevToolsHeap]:
    with browser.chromium() as b:
        page = b.new_page()
        page.goto(DEVTOOLS)
        page.evaluate(_SETUP)
        yield DevToolsHeap(page)
