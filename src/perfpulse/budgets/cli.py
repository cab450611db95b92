"""``perfpulse budget check``: performance budgets as a CI gate.

::

    perfpulse budget check [--config perfpulse-budgets.yaml]
        [--build DIR]                                   # a static build folder
        [--url URL] [--token T] [--since 1h]            # live data from a collector
        [--release 1.4.2] [--baseline release=1.4.1] [--baseline-since 7d]
        [--filter dim=value ...] [--markdown FILE] [--junit FILE]

Prints a table; ``--markdown`` and ``--junit`` also write a summary and JUnit
XML. Exit codes: 0 every budget passed (or was skipped for lack of data), 1 a
budget was breached, 2 a usage or configuration error (bad file, bad flag, the
collector unreachable or refusing the question).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from perfpulse.keys import ENV_READ_TOKEN

DEFAULT_CONFIG = "perfpulse-budgets.yaml"


class UsageError(Exception):
    pass


def _pair(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise UsageError(f"{flag} wants dim=value, got {text!r}")
    return name.strip(), value.strip()


def _duration(text: str, flag: str) -> float:
    from perfpulse.alerts.expr import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"{flag} must be longer than zero")
    return seconds


def run_check(args: argparse.Namespace) -> int:
    from perfpulse.alerts.yamlpos import ConfigError
    from perfpulse.budgets.baseline import check_baseline
    from perfpulse.budgets.config import Budgets
    from perfpulse.budgets.live import ApiError, HttpReader, check_live
    from perfpulse.budgets.report import Result, junit_xml, markdown, text_table
    from perfpulse.budgets.static import check_static, scan

    try:
        if not args.build and not args.url:
            raise UsageError("give --build DIR, --url URL or both")
        if args.baseline and not args.url:
            raise UsageError("--baseline needs live data: give --url")
        budgets = Budgets.load(Path(args.config))
        extra = dict(_pair(f, "--filter") for f in args.filter)
        baseline = dict([_pair(args.baseline, "--baseline")]) if args.baseline else None
        if args.release:
            extra["release"] = args.release
        if baseline is not None:
            for key in baseline:
                if key not in extra:
                    raise UsageError(
                        f"--baseline {key}=… needs the current {key}: give --release or "
                        f"--filter {key}=…"
                    )
        window = _duration(args.since, "--since") if args.since else budgets.window_s
        baseline_window = _duration(args.baseline_since, "--baseline-since")
    except UsageError as exc:
        print(f"perfpulse: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"perfpulse: {exc}", file=sys.stderr)
        return 2
    results: list[Result] = []
    if args.build:
        try:
            results += check_static(scan(Path(args.build), budgets), budgets)
        except FileNotFoundError as exc:
            print(f"perfpulse: --build: {exc}", file=sys.stderr)
            return 2
    if args.url:
        token = args.token or os.environ.get(ENV_READ_TOKEN)
        if not token:
            print(f"perfpulse: give --token or set {ENV_READ_TOKEN}", file=sys.stderr)
            return 2
        reader = HttpReader(args.url, token)
        now = time.time()
        try:
            results += check_live(reader, budgets, now=now, window=window, extra=extra)
            if baseline is not None:
                current = {k: extra[k] for k in baseline}
                results += check_baseline(
                    reader,
                    budgets,
                    baseline=baseline,
                    current=current,
                    now=now,
                    window=window,
                    baseline_window=baseline_window,
                )
        except ApiError as exc:
            print(f"perfpulse: {exc}", file=sys.stderr)
            return 2
        finally:
            reader.close()
    print(text_table(results))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results), encoding="utf-8")
    if args.junit:
        Path(args.junit).write_bytes(junit_xml(results))
    return 1 if any(r.status == "fail" for r in results) else 0


def add_commands(sub: Any) -> None:
    """Add ``budget check`` to the ``perfpulse`` parser."""
    b = sub.add_parser("budget", help="check performance budgets (CI gate)")
    bsub = b.add_subparsers(dest="budget_command", required=True)
    c = bsub.add_parser("check", help="check budgets against a build and/or live data")
    c.add_argument("--config", default=DEFAULT_CONFIG, help=f"budgets file ({DEFAULT_CONFIG})")
    c.add_argument("--build", help="a static build folder to measure")
    c.add_argument("--url", help="a collector to read live data from")
    c.add_argument("--token", help=f"read token (default ${ENV_READ_TOKEN})")
    c.add_argument("--since", help="live window ending now (default: the file's window, 1h)")
    c.add_argument("--release", help="the current release (a release= filter on live data)")
    c.add_argument("--filter", action="append", default=[], help="dim=value on live data")
    c.add_argument("--baseline", help="compare with a previous release: release=1.4.1")
    c.add_argument("--baseline-since", default="7d", help="window for the baseline (7d)")
    c.add_argument("--markdown", help="write a Markdown summary here")
    c.add_argument("--junit", help="write JUnit XML here")
    c.set_defaults(run=run_check)


__all__ = ["add_commands", "run_check"]
