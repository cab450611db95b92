"""``perfpulse incidents``, ``perfpulse silences`` and ``perfpulse rules check``.

::

    perfpulse incidents list [--status active|open|acknowledged|resolved]
    perfpulse incidents show ID
    perfpulse incidents ack ID [--by NAME]
    perfpulse incidents resolve ID [--by NAME]
    perfpulse incidents note ID TEXT [--by NAME]
    perfpulse silences list | add MATCHER... --duration 2h [--comment TEXT] | expire ID
    perfpulse rules check FILE

The first two talk to a running collector (``--url``, ``--token`` or
``$PERFPULSE_READ_TOKEN``); ``rules check`` reads a file. Exit codes: 0 done,
1 the collector failed, 2 a refused request or a bad file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from perfpulse.keys import ENV_READ_TOKEN, Keys

DEFAULT_URL = "http://127.0.0.1:8600"


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    if os.environ.get(ENV_READ_TOKEN):
        return os.environ[ENV_READ_TOKEN]
    return Keys.load(Path(args.data_dir), env={})[0].read_token


def _call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    import httpx

    url = f"{args.url.rstrip('/')}{path}"
    headers = {"Authorization": f"Bearer {_token(args)}"}
    try:
        r = httpx.request(method, url, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        print(f"perfpulse: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2, None
    answer = r.json()
    if r.status_code >= 300:
        print(f"perfpulse: {r.status_code}: {answer.get('error')}", file=sys.stderr)
        return (1 if r.status_code >= 500 else 2), None
    return 0, answer


def _when(ts: float | None) -> str:
    return "–" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _show(inc: dict[str, Any]) -> str:
    lines = [
        f"incident {inc['id']}: {inc['title']}",
        f"  status:   {inc['status']}  severity: {inc['severity']}",
        f"  opened:   {_when(inc['opened_at'])} UTC",
    ]
    if inc.get("acked_at"):
        lines.append(f"  acked:    {_when(inc['acked_at'])} UTC by {inc['acked_by']}")
    if inc.get("resolved_at"):
        lines.append(f"  resolved: {_when(inc['resolved_at'])} UTC by {inc['resolved_by']}")
    lines.append(f"  group:    {inc['group_key']}")
    lines.append("  alerts:")
    for a in inc.get("alerts", []):
        labels = ", ".join(f"{k}={v}" for k, v in a["labels"].items())
        lines.append(f"    {a['state']:<9} {labels}")
    lines.append("  timeline:")
    for ev in inc.get("timeline", []):
        lines.append(f"    {_when(ev['ts'])}  {ev['kind']:<13} {ev['text']}")
    return "\n".join(lines)


def incidents(args: argparse.Namespace) -> int:
    from perfpulse.cli import table

    if args.action == "list":
        status = f"?status={args.status}" if args.status else ""
        code, answer = _call(args, "GET", f"/api/v1/incidents{status}")
        if code == 0 and not args.json:
            rows = [
                [i["id"], i["status"], i["severity"], _when(i["opened_at"]), i["title"]]
                for i in answer["incidents"]
            ]
            print(table(["id", "status", "severity", "opened (UTC)", "title"], rows))
    elif args.action == "show":
        code, answer = _call(args, "GET", f"/api/v1/incidents/{args.id}")
        if code == 0 and not args.json:
            print(_show(answer))
    else:
        body: dict[str, Any] = {"by": args.by}
        path = {"ack": "ack", "resolve": "resolve", "note": "notes"}[args.action]
        if args.action == "note":
            body["text"] = args.text
        code, answer = _call(args, "POST", f"/api/v1/incidents/{args.id}/{path}", body)
        if code == 0 and not args.json:
            print(_show(answer))
    if code == 0 and args.json:
        print(json.dumps(answer, indent=2))
    return code


def silences(args: argparse.Namespace) -> int:
    from perfpulse.cli import table

    if args.action == "list":
        code, answer = _call(args, "GET", "/api/v1/silences")
        if code == 0:
            rows = [
                [
                    s["id"],
                    s["state"],
                    _when(s["ends_at"]),
                    " ".join(s["matchers_text"]),
                    s["comment"],
                ]
                for s in answer["silences"]
            ]
            print(table(["id", "state", "ends (UTC)", "matchers", "comment"], rows))
        return code
    if args.action == "add":
        body = {
            "matchers": args.matchers,
            "duration": args.duration,
            "comment": args.comment,
            "created_by": args.by,
        }
        code, answer = _call(args, "POST", "/api/v1/silences", body)
        if code == 0:
            print(answer["id"])
        return code
    code, _ = _call(args, "DELETE", f"/api/v1/silences/{args.matchers[0]}")
    return code


def check_rules(args: argparse.Namespace) -> int:
    from perfpulse.alerts.config import parse_config
    from perfpulse.alerts.engine import load_budget_rules
    from perfpulse.alerts.yamlpos import ConfigError

    path = Path(args.file)
    try:
        config = parse_config(path.read_text(encoding="utf-8"), path)
        budget_rules = load_budget_rules(config.budgets)
    except OSError as exc:
        print(f"perfpulse: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"perfpulse: {exc}", file=sys.stderr)
        return 2
    print(
        f"{path}: {len(config.rules)} rules, {len(config.slos)} SLOs, "
        f"{len(budget_rules)} budget rules, {len(config.receivers)} receivers: OK"
    )
    for r in (*config.rules, *budget_rules):
        print(f"  {r.name}: {r.condition}")
    return 0


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--token", help=f"read token (default: ${ENV_READ_TOKEN} or the data dir)")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--json", action="store_true", help="print the JSON answer")


def add_commands(sub: Any) -> None:
    """Add ``incidents``, ``silences`` and ``rules`` to the ``perfpulse`` parser."""
    i = sub.add_parser("incidents", help="list, show, acknowledge and resolve incidents")
    i.add_argument("action", choices=("list", "show", "ack", "resolve", "note"))
    i.add_argument("id", nargs="?", help="incident id (all but list)")
    i.add_argument("text", nargs="?", help="the note (note)")
    i.add_argument("--status", choices=("active", "open", "acknowledged", "resolved"))
    i.add_argument("--by", default=os.environ.get("USER") or "cli", help="who does it")
    _client_args(i)
    i.set_defaults(run=_needs_id(incidents))

    s = sub.add_parser("silences", help="list, add and expire silences")
    s.add_argument("action", choices=("list", "add", "expire"))
    s.add_argument("matchers", nargs="*", help='add: name="value" matchers; expire: the id')
    s.add_argument("--duration", default="2h", help="add: how long (default 2h)")
    s.add_argument("--comment", default="")
    s.add_argument("--by", default=os.environ.get("USER") or "cli")
    _client_args(s)
    s.set_defaults(run=silences)

    r = sub.add_parser("rules", help="check an alerting file")
    r.add_argument("action", choices=("check",))
    r.add_argument("file")
    r.set_defaults(run=check_rules)


def _needs_id(run: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        if args.action != "list" and not args.id:
            print(f"perfpulse: incidents {args.action} needs an incident id", file=sys.stderr)
            return 2
        if args.action == "note" and not args.text:
            print("perfpulse: incidents note needs the text", file=sys.stderr)
            return 2
        return int(run(args))

    return wrapped


__all__ = ["add_commands"]
