"""``perfpulse``: the command line.

::

    perfpulse serve [--host 127.0.0.1] [--port 8600] [--data-dir DIR]
    perfpulse demo  [--host 127.0.0.1] [--port 8600] [--data-dir DIR] [--rate 200]
    perfpulse query percentiles --metric http.server.duration --by route --since 1h
    perfpulse query timeseries|top|vitals ...
    perfpulse incidents list|show|ack|resolve|note ...    (docs/alerts.md)
    perfpulse silences list|add|expire ...; perfpulse rules check FILE
    perfpulse budget check [--build DIR] [--url URL] ...  (docs/budgets.md)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfpulse.alerts import cli as alerts_cli
from perfpulse.budgets import cli as budgets_cli
from perfpulse.keys import ENV_ALLOWED_ORIGINS, ENV_READ_TOKEN, Keys, parse_origins
from perfpulse.store.retention import DAY, Retention

DEFAULT_PORT = 8600
DEFAULT_DATA_DIR = "./data"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _duration(text: str) -> float:
    text = text.strip()
    if text and text[-1] in _UNITS:
        return float(text[:-1]) * _UNITS[text[-1]]
    return float(text)


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8600)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="DuckDB file, spool and keys")
    p.add_argument("--rules", type=Path, help="alerting file (default <data dir>/rules.yaml)")
    p.add_argument(
        "--budgets", type=Path, help="budgets file (default <data dir>/perfpulse-budgets.yaml)"
    )
    p.add_argument("--max-body", type=_size, default="1MiB", help="largest request body (1MiB)")
    p.add_argument("--spool-max", type=_size, default="1GiB", help="spool capacity (1GiB)")
    p.add_argument(
        "--fsync",
        choices=("always", "interval", "never"),
        default="always",
        help="when the spool fsyncs: every group commit (default), every 200 ms, or never",
    )
    p.add_argument("--route-cap", type=int, default=1000, help="distinct routes per service")
    p.add_argument("--raw-retention-days", type=float, default=14.0)
    p.add_argument("--rollup-retention-days", type=float, default=400.0)
    p.add_argument(
        "--memory-limit",
        default="32MB",
        help="DuckDB's memory limit while the collector only ingests",
    )
    p.add_argument(
        "--burst-memory-limit",
        default="512MB",
        help="DuckDB's memory limit while queries run (and 30 s after), and for a write "
        "that did not fit in --memory-limit",
    )
    p.add_argument("--log-level", default="info")


def _settings(args: argparse.Namespace) -> Any:
    from perfpulse.server import Settings

    return Settings(
        data_dir=Path(args.data_dir),
        allowed_origins=parse_origins(os.environ.get(ENV_ALLOWED_ORIGINS)),
        max_body=args.max_body,
        spool_max_bytes=args.spool_max,
        fsync=args.fsync,
        route_cap=args.route_cap,
        retention=Retention(
            raw_s=args.raw_retention_days * DAY, rollup_s=args.rollup_retention_days * DAY
        ),
        memory_limit=args.memory_limit,
        burst_memory_limit=args.burst_memory_limit,
        rules=args.rules,
        budgets=args.budgets,
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from perfpulse.server import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from perfpulse.alerts.engine import check_files

    settings = _settings(args)
    problem = check_files(settings.data_dir, settings.rules, settings.budgets)
    if problem:
        print(f"perfpulse: {problem}", file=sys.stderr)
        return 2
    app = create_app(settings, freeze_gc=True)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: exit 0 after a clean drain.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def demo(args: argparse.Namespace) -> int:
    from perfpulse.demo import run_demo

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return run_demo(_settings(args), host=args.host, port=args.port, rate=args.rate)


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    if os.environ.get(ENV_READ_TOKEN):
        return os.environ[ENV_READ_TOKEN]
    keys, _ = Keys.load(Path(args.data_dir), env={})
    return keys.read_token


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def query(args: argparse.Namespace) -> int:
    import httpx

    params: dict[str, str] = {}
    if args.metric:
        params["metric"] = args.metric
    if args.q:
        params["q"] = args.q
    if args.by:
        params["by"] = args.by
    now = time.time()
    params["to"] = str(args.to if args.to is not None else now)
    params["from"] = str(
        args.from_ if args.from_ is not None else float(params["to"]) - _duration(args.since)
    )
    for f in args.filter:
        name, sep, value = f.partition("=")
        if not sep:
            print(f"perfpulse: --filter wants dim=value, got {f!r}", file=sys.stderr)
            return 2
        params[name] = value
    for name in ("step", "limit", "order"):
        if getattr(args, name, None) is not None:
            params[name] = str(getattr(args, name))
    url = f"{args.url.rstrip('/')}/api/v1/{args.question}"
    try:
        r = httpx.get(url, params=params, headers={"Authorization": f"Bearer {_token(args)}"})
    except httpx.HTTPError as exc:
        print(f"perfpulse: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    body = r.json()
    if r.status_code != 200:
        print(f"perfpulse: {r.status_code}: {body.get('error')}", file=sys.stderr)
        return 2 if r.status_code in (400, 401, 403) else 1
    if args.json:
        import json

        print(json.dumps(body, indent=2))
        return 0
    print(render(args.question, body))
    return 0


def render(question: str, body: dict[str, Any]) -> str:
    if question == "vitals":
        names = ("LCP", "INP", "CLS", "FCP", "TTFB", "FID")
        dims = body["by"]
        rows = []
        for g in body["groups"]:
            m = g["metrics"]
            rows.append(
                [*(g["key"][d] for d in dims)]
                + [f"{_fmt(m[n]['p75'])} {m[n]['rating']}" if n in m else "–" for n in names]
                + ["yes" if g["passes"] else ("no" if g["passes"] is False else "–")]
            )
        return table([*dims, *(f"{n} p75" for n in names), "passes"], rows)
    if question == "timeseries":
        rows = []
        for s in body["series"]:
            for p in s["points"]:
                rows.append(
                    [
                        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p["ts"])),
                        *s["key"].values(),
                        p["count"],
                        *p["quantiles"].values(),
                    ]
                )
        first = body["series"][0] if body["series"] else None
        qs = list(first["points"][0]["quantiles"]) if first and first["points"] else []
        keys = list(first["key"]) if first else []
        return table(["time (UTC)", *keys, "count", *(f"p{q}" for q in qs)], rows)
    groups = body["groups"]
    keys = list(groups[0]["key"]) if groups else []
    qs = list(groups[0]["quantiles"]) if groups else []
    extra = [k for k in ("error_ratio", "hit_ratio") if groups and k in groups[0]]
    rows = [
        [*g["key"].values(), g["count"], *g["quantiles"].values(), *(g[k] for k in extra)]
        for g in groups
    ]
    return table([*keys, "count", *(f"p{q}" for q in qs), *extra], rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perfpulse", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the collector")
    _add_server_args(s)
    s.set_defaults(run=serve)
    d = sub.add_parser("demo", help="run the collector with a demo workload")
    _add_server_args(d)
    d.add_argument("--rate", type=float, default=200.0, help="demo requests per second")
    d.set_defaults(run=demo)
    q = sub.add_parser("query", help="ask the query API; prints a table")
    q.add_argument("question", choices=("percentiles", "timeseries", "top", "vitals"))
    q.add_argument("--metric")
    q.add_argument("--q", help="quantiles, e.g. 0.5,0.95,0.99")
    q.add_argument("--by", help="dimensions, comma-separated")
    q.add_argument("--filter", action="append", default=[], help="dim=value (repeatable)")
    q.add_argument("--since", default="1h", help="window ending now: 15m, 1h, 7d (default 1h)")
    q.add_argument("--from", dest="from_", type=float, help="window start, Unix seconds")
    q.add_argument("--to", type=float, help="window end, Unix seconds")
    q.add_argument("--step", type=int, help="timeseries step in seconds")
    q.add_argument("--limit", type=int, help="top: how many groups")
    q.add_argument("--order", help="top: count, sum, rate, error_ratio or a quantile like p95")
    q.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}")
    q.add_argument("--token", help=f"read token (default: ${ENV_READ_TOKEN} or the data dir)")
    q.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    q.add_argument("--json", action="store_true", help="print the JSON answer")
    q.set_defaults(run=query)
    alerts_cli.add_commands(sub)
    budgets_cli.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:  # e.g. `perfpulse query … | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
