"""Print the sampling rate delivered at 1000 Hz: with the main thread busy,
and with 4 busy worker threads while the main thread waits in join.

This is what the matrix reports per interpreter: 3.11+ read the stacks from
the timer thread (every tick served, whoever runs); 3.9/3.10 serve ticks on
the main thread (the eval-breaker nudge) or through a fallback thread that
must win the GIL, which caps the threaded rate.
"""

from __future__ import annotations

import sys
import threading
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
    workers = [threading.Thread(target=spin, args=(0.5,)) for _ in range(4)]
    with pysampler.profile(hz=1000, mode="cpu") as q:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    t = q.profile.metadata
    print(
        f"rate: python {sys.version.split()[0]} requested 1000 Hz "
        f"delivered {m.hz_delivered:.0f} Hz over {m.duration:.2f} s; "
        f"4 busy threads, main in join: {t.hz_delivered:.0f} Hz"
    )


if __name__ == "__main__":
    main()
