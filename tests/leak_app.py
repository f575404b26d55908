"""A program that leaks through a global cache, for the heap snapshot tests.

Serves the profiling endpoint, prints ``port N``, then reads commands from
stdin: ``leak N`` adds N records to ``CACHE`` (a module global that is never
emptied) and prints ``held B``: the bytes the cache holds, counted here
independently of the snapshot (sys.getsizeof of the dict, its keys, the
records and everything each record alone holds). ``quit`` exits.
"""

from __future__ import annotations

import os
import sys

import pysampler


class Record:
    __slots__ = ("n", "payload", "tags")

    def __init__(self, i: int) -> None:
        self.payload = os.urandom(256 + i % 512)
        self.tags = [f"tag-{i}-{j}" for j in range(3)]
        self.n = 10**12 + i


CACHE: dict[str, Record] = {}


def leak(count: int) -> None:
    start = len(CACHE)
    for i in range(start, start + count):
        CACHE[f"request-{i:08d}"] = Record(i)


def held() -> int:
    size = sys.getsizeof
    total = size(CACHE)
    for key, rec in CACHE.items():
        total += size(key) + size(rec) + size(rec.payload) + size(rec.n) + size(rec.tags)
        total += sum(size(tag) for tag in rec.tags)
    return total


def main() -> None:
    server = pysampler.serve(0)
    print(f"port {server.port}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "leak":
            leak(int(cmd[1]))
            print(f"held {held()} {len(CACHE)}", flush=True)
        elif cmd and cmd[0] == "quit":
            break
    server.close()


if __name__ == "__main__":
    main()
