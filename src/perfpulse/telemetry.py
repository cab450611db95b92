"""The collector's own metrics, served at ``GET /metrics`` in Prometheus text format.

A private registry per collector (never the process-global one), so two
collectors in one test process do not share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _Live(Collector):
    """Gauges read at scrape time (spool, table rows)."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return self._read()


class Tally(Collector):
    """A counter with one label, for the event loop's busiest path: a plain dict
    of floats, added to without a lock (prometheus_client's counters take one
    and cost 0.9 µs an ``inc``, against 0.15). Only the event loop's thread may
    add; a scrape from any thread reads it."""

    def __init__(self, name: str, doc: str, label: str, registry: CollectorRegistry) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.counts: dict[str, float] = {}
        registry.register(self)

    def inc(self, value: str, amount: float = 1) -> None:
        counts = self.counts
        counts[value] = counts.get(value, 0) + amount

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, count in list(self.counts.items()):
            family.add_metric([value], count)
        yield family


class CollectorMetrics:
    """Counters and histograms updated by ingest and the writer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_accepted = Tally(
            "perfpulse_events_accepted", "Events accepted, by endpoint.", "endpoint", r
        )
        self.events_rejected = Counter(
            "perfpulse_events_rejected",
            "Events dropped or refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.requests_rejected = Counter(
            "perfpulse_requests_rejected",
            "Ingest requests refused whole, by endpoint and reason.",
            ["endpoint", "reason"],
            registry=r,
        )
        self.duplicate_batches = Counter(
            "perfpulse_duplicate_batches", "Retried batches already stored.", registry=r
        )
        self.agent_dropped = Counter(
            "perfpulse_agent_dropped_events",
            "Events agents report they dropped before sending.",
            registry=r,
        )
        self.flush_seconds = Histogram(
            "perfpulse_writer_flush_seconds",
            "Writer flush latency (one storage transaction).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.flush_rows = Counter("perfpulse_writer_rows", "Rows written to storage.", registry=r)
        self.writer_quarantined = Counter(
            "perfpulse_writer_quarantined_records",
            "Spool records that could not be stored and were set aside.",
            registry=r,
        )
        self.writer_errors = Counter(
            "perfpulse_writer_errors", "Storage writes that failed and were retried.", registry=r
        )

    def live(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.registry.register(_Live(read))


def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


__all__ = ["CollectorMetrics", "Gauge", "Tally", "gauge"]
