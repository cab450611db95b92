"""Batch ids seen recently, so a retried batch is stored once.

Agents retry a batch with the same ``batch_id`` (browser beacons use the page-view
id) when they did not see the 202. The collector remembers ``key:batch_id`` for
``window_s`` (default one hour) and at most ``max_entries`` ids (default 200,000);
it is seeded on start from storage and the spool, so a retry after a collector
restart is caught too. Memory stays bounded: the oldest ids go first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class RecentBatches:
    """An insertion-ordered, time- and size-bounded set of batch keys."""

    def __init__(
        self,
        window_s: float = 3600.0,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self.clock = clock
        self._seen: dict[str, float] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str) -> bool:
        """Remember ``key``; False if it was already there (a duplicate)."""
        if key in self._seen:
            return False
        now = self.clock()
        seen = self._seen
        seen[key] = now
        if len(seen) > self.max_entries or next(iter(seen.values())) < now - self.window_s:
            self._expire(now)
        return True

    def discard(self, key: str) -> None:
        self._seen.pop(key, None)

    def seed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        for key in keys:
            self._seen[key] = now
        self._expire(now)

    def _expire(self, now: float) -> None:
        seen = self._seen
        cutoff = now - self.window_s
        while seen:
            key, ts = next(iter(seen.items()))
            if ts >= cutoff and len(seen) <= self.max_entries:
                break
            del seen[key]
