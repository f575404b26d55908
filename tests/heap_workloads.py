"""A heap profile with known shape, for the tests of heap outputs and readers.

``heap_work`` keeps 8 MiB in 64 KiB blocks (``keep_big``) and 2 MiB in
256-byte blocks (``keep_small``), and allocates and drops 16 MiB
(``churn``). So in use, ``keep_big`` holds the most bytes and
``keep_small`` the most objects; allocated since start, ``churn`` is the
heaviest. Loops, not comprehensions, so that the allocating function is the
leaf frame on every Python version.
"""

from __future__ import annotations

from typing import Any

import pysampler
from pysampler import HeapProfile

MIB = 1 << 20
#: a sample per 16 KiB on average: ~250 samples in use, ~700 allocated
SAMPLE_BYTES = 16 * 1024


def keep_big() -> list[bytes]:
    kept = []
    for _ in range(8 * MIB // (64 * 1024)):
        kept.append(bytes(64 * 1024))
    return kept


def keep_small() -> list[bytes]:
    kept = []
    for _ in range(2 * MIB // 256):
        kept.append(bytes(256 - 33))  # 256 bytes with the bytes object's header
    return kept


def churn() -> int:
    total = 0
    for _ in range(16 * MIB // (32 * 1024)):
        total += len(bytes(32 * 1024))
    return total


def heap_work() -> list[Any]:
    return [keep_big(), keep_small(), churn()]


def heap_profile() -> HeapProfile:
    """The in-use snapshot taken while ``heap_work``'s memory is kept."""
    pysampler.heap.start(sample_bytes=SAMPLE_BYTES)
    try:
        kept = heap_work()
        snap = pysampler.heap.snapshot()
        del kept
    finally:
        pysampler.heap.stop()
    return snap
