"""Time and memory of a heap snapshot (pysampler.heap.snapshot_graph) of a
heap of a given number of objects.

Each size runs in a fresh child process: it builds the heap (records of a
web-handler sort: an instance with a str, an int, a list of two floats and
a dict of two entries), settles, then takes ``--repeat`` snapshots. Per
snapshot it reports:

- pause: wall time the program was paused (the GIL held by the walk);
- cpu: CPU time of that pause (on a loaded machine the steadier figure: it
  leaves out the time the walk waited for a core);
- total: the whole call, including assembling the file after the pause;
- peak extra memory: the peak of resident memory during the call minus the
  resident memory just before it (Linux: /proc/self/status VmHWM after
  resetting it through /proc/self/clear_refs; elsewhere not measured). The
  temporary files (node, edge and string arrays, about the size of the
  output) are in the page cache, not in this figure;
- nodes, edges, file size.

    python benchmarks/heap_snapshot.py [--objects 100000,1000000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import gc, json, os, sys, time
n_objects, repeat, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

class Record:
    def __init__(self, i):
        self.name = f"user-{i}"
        self.score = 10**9 + i
        self.history = [float(i), float(i) / 3]
        self.meta = {"k": i}

# objects per record: the instance, its str, int, list, 2 floats, dict (and
# on 3.9-3.10 its __dict__ dict): about 7
records = [Record(i) for i in range(n_objects // 7)]
gc.collect()

def rss_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

import pysampler.heap
runs = []
for k in range(repeat):
    path = os.path.join(out_dir, f"b{k}.heapsnapshot")
    can_peak = reset_peak()
    before = rss_kib("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    info = pysampler.heap.snapshot_graph(path)
    total = time.perf_counter() - t0
    peak = rss_kib("VmHWM") if can_peak else None
    runs.append({
        "pause_s": info.pause_seconds, "total_s": total, "cpu_s": time.process_time() - c0,
        "peak_extra_mib": (peak - before) / 1024 if peak is not None and before else None,
        "rss_before_mib": before / 1024 if before else None,
        "nodes": info.nodes, "edges": info.edges, "strings": info.strings,
        "file_mib": info.size / 2**20,
    })
    os.unlink(path)
print(json.dumps(runs))
"""


def run(objects: int, repeat: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="pysampler-bench-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(objects), str(repeat), tmp],
            capture_output=True,
            text=True,
            check=True,
        )
    return list(json.loads(proc.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", default="100000,1000000", help="heap sizes, comma separated")
    parser.add_argument("--repeat", type=int, default=3, help="snapshots per size")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "sizes": {},
    }
    header = f"{'objects':>9} {'nodes':>9} {'edges':>9} {'pause':>8} {'cpu':>8} {'total':>8}"
    print(header + f" {'peak extra':>11} {'file':>9}")
    for objects in (int(x) for x in args.objects.split(",")):
        runs = run(objects, args.repeat)
        results["sizes"][str(objects)] = runs

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else float("nan")

        print(
            f"{objects:>9} {int(med('nodes')):>9} {int(med('edges')):>9} "
            f"{med('pause_s'):>7.2f}s {med('cpu_s'):>7.2f}s {med('total_s'):>7.2f}s "
            f"{med('peak_extra_mib'):>7.1f} MiB {med('file_mib'):>5.1f} MiB"
        )
    print("(medians of", args.repeat, "snapshots; load average", results["load_average"], ")")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
