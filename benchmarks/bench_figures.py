"""Time ``loraml figures --quick`` from scratch (the 10-minute target of ``make reproduce``).

Usage: ``python benchmarks/bench_figures.py [--jobs J] [--full]``. Computes every figure into a
temporary folder (nothing cached), then prints the wall time, the CPU time of this process and its
workers, and the compute seconds of each figure. Results are written down in README.md, section
"Figures" (with the machine and its load, which matters on a shared 2-core machine).

``python benchmarks/bench_figures.py --committed`` computes nothing: it prints, as a Markdown
table, the compute seconds that the committed figure data record (``compute_seconds`` in
``figures/output/{quick,full}/NAME.json``, the wall time of that figure's computation when it was
made), which ``benchmarks/README.md`` quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from loraml.figures.generate import generate

OUTPUT = Path(__file__).resolve().parents[1] / "figures" / "output"


def committed_table() -> str:
    """Markdown table of the committed figures' compute seconds, quick and full protocol."""
    from loraml.figures.registry import registry

    rows = [
        "| figure | quick: runs | quick: s | full: runs | full: s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    total = {"quick": 0.0, "full": 0.0}
    for name in registry():
        cells = []
        for protocol in ("quick", "full"):
            path = OUTPUT / protocol / f"{name}.json"
            if path.is_file():
                meta = json.loads(path.read_text())
                total[protocol] += meta["compute_seconds"]
                cells += [str(meta["runs"]), f"{meta['compute_seconds']:.0f}"]
            else:
                cells += ["-", "not committed"]
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    rows.append(f"| all | | {total['quick']:.0f} | | {total['full']:.0f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--full", action="store_true", help="full protocol instead of quick")
    parser.add_argument(
        "--committed", action="store_true", help="print the committed figures' compute seconds"
    )
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if args.committed:
        print(committed_table())
        return
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        outcomes = generate(quick=not args.full, out=out, jobs=args.jobs, progress=False)
        wall = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    for o in outcomes:
        print(f"{o.name:15s} {o.seconds:8.1f} s of compute")
    protocol = "full" if args.full else "quick"
    print(
        f"protocol {protocol}, jobs {args.jobs}, {os.cpu_count()} cores, "
        f"load average before {load:.1f}: wall {wall:.0f} s, CPU {cpu:.0f} s"
    )
    if args.json:
        record = {
            "command": " ".join(["python", "benchmarks/bench_figures.py", *sys.argv[1:]]),
            "protocol": protocol,
            "jobs": args.jobs,
            "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "load_average_1min_before": load,
            "load_average_1min_after": os.getloadavg()[0],
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "figures": {o.name: o.seconds for o in outcomes},
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
