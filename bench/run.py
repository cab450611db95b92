"""Run the benchmarks: ``python -m bench.run [name ...] [--quick] [--write]``.

Names: ingest, query, accuracy, memory, dashboard, light, handler (default: all, in
that order).
``--quick`` runs each in under a minute (handler: about three, as it runs under
valgrind), a smoke check, not a result;
``--write`` stores this run's reports in bench/results.json (replacing earlier
ones of the same benchmarks) and renders docs/benchmarks.md from all stored ones,
so ``python -m bench.run query --write`` updates the query section alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from bench.machine import describe
from bench.report import Report, from_json, markdown, summary, to_json

BENCHMARKS = ("ingest", "query", "accuracy", "memory", "dashboard", "light", "handler")
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
RESULTS = Path(__file__).resolve().parent / "results.json"  # the latest report of each
APPENDIX = Path(__file__).with_name("appendix.md")  # hand-kept sections, appended as they are

PREAMBLE = """# Benchmarks

Numbers measured by `python -m bench.run --write` (the code is in `bench/`), not
asserted. Each benchmark measures its baseline in the same run and reports the
ratio. A target missed is reported as a miss, with its number.

How to run (from the repository root, with the project's virtualenv):

```
.venv/bin/python -m bench.run                  # all of them, full mode (~45 min)
.venv/bin/python -m bench.run query accuracy   # some of them
.venv/bin/python -m bench.run --quick          # smoke check, < 60 s each (handler ~3 min)
.venv/bin/python -m bench.run --write          # and rewrite this file
```

The ingest benchmark uses `wrk` when it is installed (`apt-get install wrk`) and
a Python asyncio client otherwise; the query benchmark caches its 10-million-event
DuckDB file under the temp directory (`$TMPDIR/perfpulse-bench/`, or
`$PERFPULSE_BENCH_CACHE`), keyed by its parameters and a hash of the storage code;
building it goes through the real write path and takes a while (see the query
section), later runs reuse it. The handler benchmark counts instructions under
valgrind (`apt-get install valgrind`) and reports nothing without it.

The machine these numbers come from is shared: other work (test suites, builds)
may run beside a benchmark. Each ingest run reports how many cores that other
work used (`other`), and the CPU-time figures — server CPU per event, CPU time per
query — are the ones it moves least. Throughput and latency are the best or the
median of several runs for the same reason.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="name")
    p.add_argument("--quick", action="store_true", help="smoke mode, < 60 s each")
    p.add_argument("--write", action="store_true", help="rewrite docs/benchmarks.md")
    args = p.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    machine = describe()
    print(" | ".join(f"{k}: {v}" for k, v in machine.items()), flush=True)
    reports: list[Report] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"-- {name}{' (quick)' if args.quick else ''} ...", flush=True)
        started = time.perf_counter()
        report: Report = module.run(quick=args.quick)
        report.seconds = time.perf_counter() - started
        report.machine = machine
        reports.append(report)
        print(summary([report]), flush=True)
        for block in report.details:
            print(block, flush=True)
    print()
    print(summary(reports))
    if args.write:
        stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        # A report that measured nothing (the handler without valgrind) keeps the
        # stored one: what an earlier run measured is not erased by what this one lacks.
        stored.update({r.name: to_json(r) for r in reports if r.results})
        RESULTS.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n")
        latest = [from_json(stored[n]) for n in BENCHMARKS if n in stored]
        DOC.parent.mkdir(parents=True, exist_ok=True)
        appendix = APPENDIX.read_text() if APPENDIX.exists() else ""
        DOC.write_text(markdown(latest, PREAMBLE).rstrip() + "\n" + appendix)
        print(f"wrote {DOC} and {RESULTS}")
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
