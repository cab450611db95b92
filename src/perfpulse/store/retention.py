"""How long each table keeps its rows, enforced in the background by the writer.

Raw events are kept 14 days and rollups 400 days by default; both are settings
of ``perfpulse serve`` (``--raw-retention-days``, ``--rollup-retention-days``).
Batch ids (for exactly-once retries) are kept one day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from perfpulse.model.rows import LAYOUTS

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    raw_s: float = 14 * DAY
    rollup_s: float = 400 * DAY
    batches_s: float = 1 * DAY

    def tables(self) -> Iterator[tuple[str, float]]:
        for table in LAYOUTS:
            yield table, self.raw_s
        yield "rollup_1m", self.rollup_s
        yield "rollup_1h", self.rollup_s
        yield "batches", self.batches_s
