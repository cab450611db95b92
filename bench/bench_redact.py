"""What the ingest privacy and cardinality rules cost per call, cached and not.

Ingest aims at 200,000 events/s in one process, 5 µs per event for everything.
Each rule is timed on a cache hit (the same input again, the common case) and on
a miss (an input never seen, so the rule runs and the LRU evicts). The baseline,
measured in the same run, is ``urllib.parse.urlsplit`` on the page URL, without
its cache: the least any URL handling would cost. Calls are timed in batches of
50 and the fastest batch is reported, as ``timeit`` does, so that other load on
the machine counts less.

    python bench/bench_redact.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from perfpulse.ingest.redact import redact_url
from perfpulse.ingest.routes import RouteFolder, template_path
from perfpulse.model.fingerprint import fingerprint_sql

URLSPLIT = getattr(urlsplit, "__wrapped__", urlsplit)  # without its lru_cache (3.11+)

BUDGET_NS = 5_000  # 1 s / 200,000 events
N = 20_000
BATCH = 50

URL = "https://shop.example.com/cart/{i}?id={i}&token=abc123&utm_source=news#top"
PATH = "/users/{i}/orders/550e8400-e29b-41d4-a716-446655440000/items"
SQL = (
    "SELECT o.id, o.total, o.created_at FROM orders o JOIN users u ON u.id = o.user_id "
    "WHERE u.email = 'alice{i}@example.com' AND o.status IN (1, 2, 3) "
    "ORDER BY o.created_at DESC LIMIT 20"
)
SQL_PARAMS = (
    "SELECT o.id, o.total, o.created_at FROM orders o JOIN users u ON u.id = o.user_id "
    "WHERE u.email = %s AND o.status IN (%s, %s, %s) ORDER BY o.created_at DESC LIMIT %s"
)


def per_call_ns(func: Callable[[str], object], inputs: list[str]) -> float:
    """Nanoseconds per call of ``func`` in the fastest batch of ``inputs``."""
    best = float("inf")
    for first in range(0, len(inputs), BATCH):
        batch = inputs[first : first + BATCH]
        started = time.perf_counter_ns()
        for text in batch:
            func(text)
        best = min(best, (time.perf_counter_ns() - started) / len(batch))
    return best


def cases(round_no: int) -> list[tuple[str, Callable[[str], object], list[str]]]:
    """(label, function, inputs); miss inputs are fresh in every round."""
    fresh = range(round_no * N, (round_no + 1) * N)
    folder = RouteFolder(cap=1000)

    def fold(route: str) -> str:
        return folder.fold("shop", route)

    return [
        ("baseline: urlsplit", URLSPLIT, [URL.format(i=1)] * N),
        ("redact_url hit", redact_url, [URL.format(i=1)] * N),
        ("redact_url miss", redact_url, [URL.format(i=i) for i in fresh]),
        ("template_path hit", template_path, [PATH.format(i=1)] * N),
        ("template_path miss", template_path, [PATH.format(i=i) for i in fresh]),
        ("fingerprint_sql hit", fingerprint_sql, [SQL_PARAMS] * N),
        ("fingerprint_sql miss", fingerprint_sql, [SQL.format(i=i) for i in fresh]),
        ("RouteFolder.fold known", fold, ["/users/{id}"] * N),
        ("RouteFolder.fold over cap", fold, [f"/r/{i}" for i in fresh]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="report the best of this many")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    for round_no in range(args.rounds):
        for label, func, inputs in cases(round_no + 1):
            results.setdefault(label, []).append(per_call_ns(func, inputs))
    baseline = min(results["baseline: urlsplit"])
    print(f"{'rule':<26} {'ns/call':>8} {'vs urlsplit':>11} {'of 5 µs':>8}")
    for label, samples in results.items():
        ns = min(samples)
        print(f"{label:<26} {ns:>8.0f} {ns / baseline:>10.2f}x {ns / BUDGET_NS:>8.1%}")


if __name__ == "__main__":
    main()
