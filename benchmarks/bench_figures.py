"""Time ``loraml figures --quick`` from scratch (the 10-minute target of ``make reproduce``).

Usage: ``python benchmarks/bench_figures.py [--jobs J] [--full]``. Computes every figure into a
temporary folder (nothing cached), then prints the wall time, the CPU time of this process and its
workers, and the compute seconds of each figure. Results are written down in README.md, section
"Figures" (with the machine and its load, which matters on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from loraml.figures.generate import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--full", action="store_true", help="full protocol instead of quick")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        outcomes = generate(quick=not args.full, out=out, jobs=args.jobs, progress=False)
        wall = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    for o in outcomes:
        print(f"{o.name:15s} {o.seconds:8.1f} s of compute")
    print(
        f"protocol {'full' if args.full else 'quick'}, jobs {args.jobs}, {os.cpu_count()} cores, "
        f"load average before {load:.1f}: wall {wall:.0f} s, CPU {cpu:.0f} s"
    )


if __name__ == "__main__":
    main()
