"""Beacon handler: the CPU instructions the collector's ``POST /api/v1/rum``
endpoint executes for one beacon, counted by valgrind (callgrind), so the number
does not move with other work on the machine as requests/s do.

The endpoint (:meth:`perfpulse.ingest.receiver.Receiver.rum`) runs in-process on
uvloop, 64 requests at a time, in a collector whose writer is stopped and whose
garbage collector is set as ``perfpulse serve`` sets it
(:func:`perfpulse.server.settle_gc`): the key and origin checks, reading the
body, decoding, normalizing, the dedupe, the spool append (``--fsync interval``,
so the group write but no sync) and the answer. The baseline, through the same
in-process driver, is :data:`bench.floor.raw`, the bare ASGI endpoint the ingest
benchmark's floor serves; what uvicorn and the kernel do for a request is in
neither. A program runs twice, with ``n0`` and
``n1`` beacons after the same warm-up, and the difference of the two counts over
``n1 - n0`` is a beacon's share (start-up and imports cancel out).

Parts of the path are counted the same way in plain loops: decoding and
normalizing into the spool record
(:meth:`~perfpulse.ingest.normalize.Normalizer.beacon_record`, the compiled
path of :mod:`perfpulse.ingest._beacon` the endpoint takes for the usual
beacon), and framing the record as the spool writes it (its CRC); each less
the loop that only builds the bodies. Needs valgrind
(``apt-get install valgrind``); ``--quick`` counts the endpoint and the baseline
only, with fewer beacons.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Report, Result, number, table

NAME = "handler"
TITLE = "Beacon handler instructions"
WARM = 640  # beacons before the counted ones: caches filled, every variant seen
CONCURRENT = 64
STAGES = ("bare", "rum", "bodies", "normalize", "record")
_TOTAL = re.compile(r"Collected : (\d+)")
_LINE = re.compile(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)")


# --- the programs valgrind runs ------------------------------------------------------


def _bodies(n: int) -> list[bytes]:
    from bench.workload import beacon_template

    t = beacon_template()
    return [t.body(f"{i:032x}", i) for i in range(n)]


def _collector(tmp: Path) -> Any:
    from bench import servers
    from perfpulse.keys import Keys
    from perfpulse.server import Collector, Settings, settle_gc

    keys = Keys(
        ingest_key=servers.INGEST_KEY,
        public_key=servers.PUBLIC_KEY,
        read_token=servers.READ_TOKEN,
    )
    collector = Collector(
        Settings(
            data_dir=tmp,
            keys=keys,
            allowed_origins=frozenset({servers.ORIGIN}),
            fsync="interval",
        )
    )
    collector.writer.stop()
    collector.alerts.stop()
    settle_gc()  # as ``perfpulse serve`` does once started
    return collector


def _serve(app: Callable[..., Any], bodies: list[bytes]) -> None:
    """``bodies`` through ``app`` as ASGI requests, CONCURRENT at a time; every
    answer must be a 202."""
    import uvloop

    from bench import servers
    from bench.workload import beacon_template

    query = beacon_template().path.split("?", 1)[1].encode()
    base = [(b"host", b"127.0.0.1"), (b"origin", servers.ORIGIN.encode())]
    base.append((b"content-type", b"text/plain"))
    statuses: list[int] = []

    async def one(body: bytes) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/v1/rum",
            "query_string": query,
            "headers": [*base, (b"content-length", str(len(body)).encode())],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    async def main() -> None:
        for i in range(0, len(bodies), CONCURRENT):
            await asyncio.gather(*(one(b) for b in bodies[i : i + CONCURRENT]))

    uvloop.run(main())
    if set(statuses) != {202}:
        raise SystemExit(f"answers other than 202: {sorted(set(statuses))}")


def drive(stage: str, n: int) -> None:
    """Run ``stage`` over WARM + ``n`` beacons (the program valgrind counts)."""
    bodies = _bodies(WARM + n)
    if stage == "bodies":
        return
    with tempfile.TemporaryDirectory(prefix="perfpulse-bench-handler-") as tmp:
        collector = _collector(Path(tmp) / "data")
        if stage == "bare":
            from bench.floor import raw

            _serve(raw, bodies)
        elif stage == "rum":
            _serve(collector.receiver.rum, bodies)
        else:
            from perfpulse.spool.file import HEADER, MAGIC, _crc, _frame

            normalizer = collector.receiver.normalizer
            for body in bodies:
                message = {"type": "http.request", "body": body, "more_body": False}
                done = normalizer.beacon_record(message, 0.0, 1 << 20)
                if done is None:
                    raise SystemExit("a benchmark beacon did not take the compiled path")
                if stage == "record":
                    record = done[1]
                    if _frame is not None:
                        _frame([record], 1)
                    else:
                        HEADER.pack(MAGIC, len(record), 1, _crc(1, record)) + record


# --- counting -----------------------------------------------------------------------


def _count(stage: str, n: int, out: Path) -> int:
    argv = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.handler",
        "--drive",
        stage,
        str(n),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=root, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} under valgrind failed: {proc.stderr[-2000:]}")
    match = _TOTAL.search(proc.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from valgrind: {proc.stderr[-500:]}")
    return int(match.group(1))


def _functions(path: Path) -> dict[str, int]:
    """Instructions by function (own cost) in a callgrind output file."""
    text = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
    ).stdout
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and "PROGRAM TOTALS" not in m.group(2):
            name = re.sub(r"'\d+$", "", m.group(2).split(" [", 1)[0].rsplit(":", 1)[-1])
            lib = m.group(2).rsplit("/", 1)[-1].rstrip("]").split(".", 1)[0]
            key = f"{name} ({lib})"
            out[key] = out.get(key, 0) + int(m.group(1).replace(",", ""))
    return out


def run(quick: bool = False) -> Report:
    report = Report(NAME, TITLE, __doc__ or "", quick=quick)
    if shutil.which("valgrind") is None:
        report.details.append("Not measured: valgrind is not installed.")
        return report
    n0, n1 = (128, 640) if quick else (640, 2560)
    stages = ("bare", "rum") if quick else STAGES
    per: dict[str, float] = {}
    top: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="perfpulse-bench-handler-") as tmp_name:
        tmp = Path(tmp_name)
        for stage in stages:
            a, b = tmp / f"{stage}.{n0}", tmp / f"{stage}.{n1}"
            per[stage] = (_count(stage, n1, b) - _count(stage, n0, a)) / (n1 - n0)
            print(f"   {stage}: {per[stage]:,.0f} instructions a beacon", flush=True)
            if stage == "rum":
                fa, fb = _functions(a), _functions(b)
                top = sorted(((fb.get(k, 0) - fa.get(k, 0)) / (n1 - n0), k) for k in fb)[::-1]

    rum, bare = per["rum"], per["bare"]
    report.results.append(
        Result(
            "instructions a beacon, POST /api/v1/rum in-process",
            rum,
            "",
            "bare ASGI endpoint, same driver",
            bare,
        )
    )
    report.results.append(
        Result("instructions a beacon beyond the bare endpoint", rum - bare, "", "", None)
    )
    if "bodies" in per:
        base = per["bodies"]
        parts = [
            ("decoding, normalizing, the spool record", per["normalize"] - base),
            ("framing the record for the spool (CRC)", per["record"] - per["normalize"]),
        ]
        rest = rum - bare - sum(v for _, v in parts)
        parts.append(("the rest: checks, body, dedupe, spool append, answer", rest))
        report.details.append(
            "Where the endpoint's own instructions go (beyond the bare endpoint):\n\n"
            + table(
                ["part", "instructions a beacon", "share"],
                [[p, number(v), f"{v / (rum - bare):.0%}"] for p, v in parts],
            )
        )
    if top:
        report.details.append(
            "Functions by own instructions, the endpoint's run (a beacon's share; Python's"
            " interpreter loop runs the Python code of the endpoint and of the driver):\n\n"
            + table(
                ["function (library)", "instructions a beacon", "share"],
                [[f"`{k}`", number(v), f"{v / rum:.1%}"] for v, k in top[:12]],
            )
        )
    report.details.append(
        "Counts: " + ", ".join(f"{s} {per[s]:,.0f}" for s in stages) + f" (n0 = {n0}, n1 = {n1})."
    )
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.handler")
    p.add_argument("--drive", nargs=2, metavar=("STAGE", "N"), help="run one program (internal)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.drive:
        stage, n = args.drive
        if stage not in STAGES:
            p.error(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        drive(stage, int(n))
        return
    report = run(quick=args.quick)
    for block in report.details:
        print(block)


if __name__ == "__main__":
    main()
