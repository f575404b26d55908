"""CPU attribution in threaded programs: profile vs independently measured truth.

    python benchmarks/attribution.py [--seconds 2] [--hz 100,1000] [--cases a,b]

For each case of tests/threaded.py (Flask's threaded server, waitress, a
queue worker pool, short-lived threads, threads that compute then block),
profile it in CPU mode and print: the CPU the program used in the window,
the CPU in the profile (and their ratio), the share of the profile whose
leaf line makes a blocking call (against the CPU really spent in such calls
where the case measures it: waitress's select), and each CPU-heavy
function's share in the profile against its share of the real CPU
(measured with time.thread_time()).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import threaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--hz", default="100,1000")
    parser.add_argument("--cases", default=",".join(threaded.CASES))
    args = parser.parse_args()
    print(
        f"{'case':<19} {'hz':>5} {'real s':>8} {'prof s':>8} {'ratio':>6}  "
        f"{'block/truth':>11}  shares (profile/truth)"
    )
    for name in args.cases.split(","):
        for hz in (int(h) for h in args.hz.split(",")):
            print(threaded.run_case(name, hz, args.seconds).row(), flush=True)


if __name__ == "__main__":
    main()
