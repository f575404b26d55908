"""A small program to profile: ``python -m pysampler.demo``.

Four threads for about three seconds: the main thread finds primes, a
worker scores words, another round-trips JSON (time mostly in C), and one
sleeps. The profile is written as ``demo.html`` (flame graph),
``demo.pprof`` and ``demo.cpuprofile``, and the hottest functions are
printed.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import pysampler


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def find_primes(seconds: float) -> int:
    found = 0
    n = 1
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(500):
            n += 1
            found += is_prime(n)
    return found


class WordScorer:
    """Scores words the slow way, so that a method shows up hot."""

    def score(self, word: str) -> int:
        total = 0
        for ch in word:
            total = (total * 31 + ord(ch)) % 1_000_003
        return total

    def run(self, stop: threading.Event) -> None:
        words = [f"word{i}" * 5 for i in range(200)]
        while not stop.is_set():
            for w in words:
                self.score(w)


def json_round_trips(stop: threading.Event) -> None:
    doc = {"items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(300)]}
    while not stop.is_set():
        json.loads(json.dumps(doc))


def sleeper(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.05)


def run_workload(seconds: float) -> None:
    """Run the four threads for ``seconds``."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=WordScorer().run, args=(stop,), name="scorer"),
        threading.Thread(target=json_round_trips, args=(stop,), name="json"),
        threading.Thread(target=sleeper, args=(stop,), name="sleeper"),
    ]
    for t in threads:
        t.start()
    try:
        find_primes(seconds)
    finally:
        stop.set()
        for t in threads:
            t.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pysampler.demo", description="Profile a small bundled program."
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to run (default 3)")
    parser.add_argument("--hz", type=float, default=100, help="sampling rate (default 100)")
    parser.add_argument("--mode", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--out-dir", default=".", help="where to write demo.* (default .)")
    args = parser.parse_args(argv)

    with pysampler.profile(hz=args.hz, mode=args.mode) as p:
        run_workload(args.seconds)
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for name in ("demo.html", "demo.pprof", "demo.cpuprofile"):
        path = os.path.join(args.out_dir, name)
        p.save(path)
        written.append(path)
    print(p.top(10))
    print()
    print("wrote " + ", ".join(written))
    print(f"  open {written[0]} in a browser (flame graph)")
    print(f"  go tool pprof -top {written[1]}")
    print(f"  open {written[2]} in Chrome DevTools, VS Code or speedscope")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
