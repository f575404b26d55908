"""Print the sampling rate delivered at 1000 Hz while the main thread spins.

This is what the matrix reports per interpreter: whether the timer's pending
calls reach a main thread busy in pure Python (the eval-breaker nudge on
3.9-3.12, the plain public call on 3.13+).
"""

from __future__ import annotations

import sys
import time

import pysampler


def spin(seconds: float) -> int:
    """Run pure-Python bytecode for ``seconds``."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def main() -> None:
    with pysampler.profile(hz=1000, mode="cpu") as p:
        spin(2.0)
    m = p.profile.metadata
    print(
        f"rate: python {sys.version.split()[0]} requested 1000 Hz "
        f"delivered {m.hz_delivered:.0f} Hz over {m.duration:.2f} s"
    )


if __name__ == "__main__":
    main()
