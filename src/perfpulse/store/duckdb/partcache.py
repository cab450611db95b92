"""The cache of merged rollup parts that reads keep for the next question.

It holds what :mod:`perfpulse.store.duckdb.pieces` computes (numpy arrays), but
needs no numpy itself: the writer makes it at start and tells it which hours each
flush wrote to, and a collector that only ingests never loads numpy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perfpulse.store.duckdb.pieces import Grouped, SeriesPart

Span = tuple[float, float]


class PartCache:
    """What reads of closed data produce, kept for the next question: rollup parts
    merged per series (:class:`SeriesPart`) and their merge per grouping
    (:class:`Grouped`), each with the time spans it covers; at most ``max_bytes``
    of them, the least recently used going first.

    :meth:`forget` drops every entry that overlaps an hour a flush wrote to, so
    under live ingest the parts in the current hour are read afresh while closed
    hours (and the closed minutes at a window's start) are read once; :meth:`put`
    refuses an entry computed before such a flush (``version`` read before the
    statement ran), so no stale answer is ever kept.
    """

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self.version = 0
        self._entries: OrderedDict[Hashable, tuple[Any, tuple[Span, ...], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(
        self, key: Hashable, value: SeriesPart | Grouped, spans: tuple[Span, ...], version: int
    ) -> None:
        size = value.nbytes
        with self._lock:
            if version != self.version or size > self.max_bytes or key in self._entries:
                return
            self._entries[key] = (value, spans, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, old) = self._entries.popitem(last=False)
                self._bytes -= old

    def forget(self, hours: Iterable[int]) -> None:
        """A flush wrote to these hours (Unix seconds, hour-aligned)."""
        hours = sorted(hours)
        if not hours:
            return
        with self._lock:
            self.version += 1
            for key, (_, spans, size) in list(self._entries.items()):
                if any(lo < h + 3600 and h < hi for lo, hi in spans for h in hours):
                    del self._entries[key]
                    self._bytes -= size

    def clear(self) -> None:
        with self._lock:
            self.version += 1
            self._entries.clear()
            self._bytes = 0
