"""Getting events to the collector without ever slowing the application down.

The application thread only calls :meth:`Transport.enqueue`: one ``deque``
append (thread-safe without a lock) and a length check. When the queue is full
the ``deque`` discards the oldest event and the drop is counted; the next batch
reports the count in its ``dropped`` field. What is queued is an event (a dict,
or a ``msgspec.Struct`` that encodes as one), or a record that ``expand`` turns
into events on the sender's thread, a batch's records at once. The agent queues
a finished request as its ``http`` event struct, or, when an error or N+1
findings come of it, as its :class:`~perfpulse.agent.scope.RequestScope`.

Where the compiled middleware was built (``perfpulse.agent._speedups``), a
finished usual request does not become a Python object at all: the middleware
appends it to the transport's ``RequestLog`` (:attr:`Transport.request_sink`)
as a C record of plain values (the route and method strings shared), and the
sender's thread turns a batch of records into its JSON array in one C call, the
same events msgspec would write for their structs (``ts`` and ``duration_ms``
as exact decimals of their nanoseconds). With the changes that came with it,
that took the agent from +13.4–15.4 to +8.6–10.1 µs a request, event loop and
sender together (``bench.agent_overhead --alternate``, docs/benchmarks.md). The
log keeps at most ``queue_size`` records and,
full, drops the oldest, counted like the queue's; it wakes the thread when a
batch's worth waits.

One daemon thread does the rest. It wakes every ``flush_interval_s`` (or as soon
as ``batch_size`` items wait), encodes up to ``batch_size`` events per batch
with msgspec (about 0.5 µs an event; the standard ``json`` takes 3.4), or, when
that fails or the batch is too big, event by event with a strict ``json``
encoder that skips (and counts) what JSON cannot hold and cuts the batch before
``max_body_bytes``. msgspec writes NaN as ``null``; a batch the collector refuses
with 400 for that is encoded again strictly, without those events, and sent
under a new ``batch_id`` (nothing of a refused batch is stored). It then
gzips the batch (level 1: 0.4 µs an event, level 6 costs 1.4 for 12 % less; with
zlib's ``memLevel`` 4, its tables take 136 kB instead of 256 kB, for 4 % more
bytes and 7 % fewer instructions) and
``POST``s it to ``{endpoint}/api/v1/events`` with ``Authorization: Bearer {key}``:

- ``2xx``: sent;
- ``5xx``, ``429`` and connection errors: retried with the *same* body and
  ``batch_id`` (the collector stores a retried batch once), after
  ``Retry-After`` seconds when the answer has one, else after a capped
  exponential backoff with full jitter; after ``give_up_after_s`` the batch is
  dropped and counted;
- any other ``4xx``: never retried; the batch is counted as rejected and the
  status logged once.

The batch goes out through a :class:`~perfpulse.agent.sender.Sender`: by default
:class:`~perfpulse.agent.sender.HttpSender`, one kept-alive HTTP/1.1 connection
with a client of its own (a third of ``http.client``'s CPU per batch; importing
``httpx`` would add 2.5 MB to the process, for a request or two a second).

:meth:`after_fork` (called in a forked child, e.g. a gunicorn ``--preload``
worker) gives the child an empty queue, new synchronization objects, no
inherited connection and its own thread.

Example::

    transport = Transport("http://127.0.0.1:8600", "ppi_key", {"service": "checkout"})
    transport.start()
    transport.enqueue({"kind": "http", "ts": time.time(), ...})
    transport.shutdown(timeout_s=2.0)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import msgspec

from perfpulse.agent.sender import Answer, HttpSender, Sender

__all__ = ["Answer", "HttpSender", "Sender", "Transport", "TransportStats"]

#: A wire-format event: a dict, or a ``msgspec.Struct`` that encodes as one (the
#: ``http`` events that ``expand`` makes of finished requests).
Event = dict[str, Any] | msgspec.Struct
_EVENTS = (dict, msgspec.Struct)  # what is queued and is not a record for ``expand``

_log = logging.getLogger("perfpulse.agent")

RequestLog: Any = None  # the compiled record queue, where it was built (see request_sink)
if os.environ.get("PERFPULSE_AGENT_PURE_PYTHON", "") in ("", "0"):
    with contextlib.suppress(ImportError):  # installed without a C compiler
        from perfpulse.agent import _speedups  # type: ignore[attr-defined]

        RequestLog = _speedups.RequestLog
_encode_fast = msgspec.json.Encoder().encode  # ~7x faster than json; writes NaN as null
_encode_strict = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode


def _gzip(*parts: bytes) -> bytes:
    """One gzip member of the ``parts`` one after the other, without joining them
    first (a batch's events are most of its bytes: joining copied them all):
    level 1 (3x cheaper than 6, 15 % bigger), memLevel 4."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 4)
    return b"".join([*map(compressor.compress, parts), compressor.flush()])


@dataclass(frozen=True, slots=True)
class TransportStats:
    """Counters since start (or since the fork, in a child)."""

    queued: int
    sent_events: int
    sent_batches: int
    dropped_events: int
    rejected_batches: int
    retries: int
    unencodable_events: int


class Transport:
    """A bounded queue drained by one background thread (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        key: str,
        resource: dict[str, str],
        *,
        queue_size: int = 10_000,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        max_body_bytes: int = 900_000,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        give_up_after_s: float = 120.0,
        sender: Sender | None = None,
        expand: Callable[[list[Any]], Sequence[Event]] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._key = key
        self._prefix = json.dumps({"resource": resource}, separators=(",", ":"))[:-1].encode()
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_body_bytes = max_body_bytes
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.give_up_after_s = give_up_after_s
        self._given_sender = sender
        self._expand = expand
        self._jobs: list[list[Any]] = []  # [interval_s, due, job]: see every()
        #: Where the compiled middleware puts finished usual requests: C records that
        #: :meth:`_drain` turns into a batch's JSON at once; what else it is given
        #: goes to :meth:`enqueue`. Without the compiled module, :meth:`enqueue` itself.
        self.request_sink: Callable[[Any], None] = self.enqueue
        self._log: Any = None
        if RequestLog is not None and queue_size > 0:
            self._log = self.request_sink = RequestLog(
                queue_size, min(batch_size, queue_size), self._crowd, self.enqueue
            )
        self._reset()

    def _reset(self) -> None:
        self._queue: deque[Any] = deque(maxlen=self.queue_size)
        self._crowded = min(self.batch_size, self.queue_size)
        self._carry: list[Event] = []  # events cut from the last batch by size
        self._wake = threading.Event()
        self._woken = False
        self._flush_asked = False  # send everything, not only full batches
        self._stop = threading.Event()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._sender = self._given_sender or HttpSender(self._endpoint, self._key)
        self._overflow = 0  # dropped by the deque (and the log), not yet reported
        if self._log is not None:
            self._log.clear()
        self._lost = 0  # given up on after retries, not yet reported
        self._logged: set[str] = set()
        self.sent_events = self.sent_batches = self.rejected_batches = 0
        self.retries = self.unencodable_events = self.dropped_events = 0

    # --- the application's side -----------------------------------------------

    def _crowd(self) -> None:
        """A batch's worth of records waits in the log: wake the thread."""
        if not self._woken:
            self._woken = True
            self._wake.set()

    def _waiting(self) -> int:
        return len(self._queue) + (len(self._log) if self._log is not None else 0)

    def enqueue(self, event: Any) -> None:
        """Queue ``event`` (or a record for ``expand``); when full, the oldest item is
        dropped and counted. Never blocks."""
        queue = self._queue
        if len(queue) >= self._crowded:  # rarely: a batch waits, or the queue is full
            if len(queue) >= self.queue_size:
                self._overflow += 1
            if not self._woken:
                self._woken = True
                self._wake.set()
        queue.append(event)

    # --- lifecycle --------------------------------------------------------------

    def every(self, interval_s: float, job: Callable[[], None]) -> None:
        """Also run ``job`` on the sender thread every ``interval_s`` (first: at start).

        One background thread for the whole agent: the resource sampler runs here.
        A job that raises is counted and logged once, never stops the thread.
        """
        self._jobs.append([interval_s, 0.0, job])

    def start(self) -> None:
        now = time.monotonic()
        for entry in self._jobs:
            entry[1] = now
        self._thread = threading.Thread(target=self._run, name="perfpulse-agent", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Send what is queued now; ``True`` when nothing is left queued or in flight."""
        deadline = time.monotonic() + timeout_s
        self._flush_asked = True
        self._wake.set()
        while self._waiting() or self._carry or self._busy:
            if time.monotonic() >= deadline or self._thread is None or self._stop.is_set():
                return False
            self._flush_asked = True
            self._wake.set()
            time.sleep(0.005)
        return True

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Flush within ``timeout_s``, then stop the thread. Returns what :meth:`flush` did."""
        started = time.monotonic()
        flushed = self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout_s - (time.monotonic() - started)) + 0.1)
        self._sender.close()
        return flushed

    def after_fork(self) -> None:
        """In a forked child: start empty, with new locks, no connection and a new thread."""
        self._reset()
        self.start()

    def stats(self) -> TransportStats:
        return TransportStats(
            queued=self._waiting() + len(self._carry),
            sent_events=self.sent_events,
            sent_batches=self.sent_batches,
            # read, not taken: the sender's thread moves the log's counts into its own
            dropped_events=self.dropped_events + self._overflow + self._log_overflow(),
            rejected_batches=self.rejected_batches,
            retries=self.retries,
            unencodable_events=self.unencodable_events,
        )

    # --- the background thread -------------------------------------------------

    def _run(self) -> None:
        due = time.monotonic() + self.flush_interval_s  # when what waits is sent, full or not
        while not self._stop.is_set():
            self._run_jobs()
            timeout = due - time.monotonic()
            if self._jobs:
                timeout = min(timeout, min(j[1] for j in self._jobs) - time.monotonic())
            self._wake.wait(max(0.0, timeout))
            self._wake.clear()
            self._woken = False
            # Woken for a full batch: send full batches only, and leave the rest to the
            # next wake-up. Draining down to the last event each time would send many
            # tiny batches under load, each paying for gzip, a request and GIL switches.
            everything = self._flush_asked or time.monotonic() >= due
            if everything:
                self._flush_asked = False
                due = time.monotonic() + self.flush_interval_s
            try:
                self._drain(everything)
            except Exception:  # never let the thread die
                self._log_once("drain", "perfpulse agent: sending failed", exc_info=True)
                self._busy = False

    def _run_jobs(self) -> None:
        now = time.monotonic()
        for entry in self._jobs:
            if entry[1] <= now:
                entry[1] = now + entry[0]
                try:
                    entry[2]()
                except Exception:
                    self._log_once("job", "perfpulse agent: a periodic job failed", exc_info=True)

    def _drain(self, everything: bool = True) -> None:
        """Send full batches, and with ``everything`` what was queued when it began too.

        Not what arrives while it sends: chasing the tail of the queue would send a
        tiny batch per round trip to the collector.
        """
        if self._log is not None:
            self._drain_log(everything)
        owed = len(self._queue) if everything else 0
        while not self._stop.is_set():
            if not (self._carry or owed > 0 or len(self._queue) >= self.batch_size):
                return
            self._busy = True
            try:
                events, taken = self._take()
                owed -= taken
                body = self._encode_fast(events)
                if body is None:
                    body, count = self._encode_strict(events)
                    if count:
                        self._deliver(body, count)
                elif self._deliver(body, len(events)) == 400:
                    # msgspec writes NaN as null, which the collector may refuse: nothing of
                    # the batch was stored, so send it again encoded strictly, without them.
                    # Only when strict encoding drops something: any other 400 is final.
                    body, count = self._encode_strict(events)
                    if 0 < count < len(events):
                        self.rejected_batches -= 1
                        self._deliver(body, count)
            finally:
                self._busy = False

    def _drain_log(self, everything: bool) -> None:
        """The log's records, as :meth:`_drain` sends the queue's: full batches, and
        with ``everything`` what waited when it began too."""
        log = self._log
        # what waits now (full batches only, unless ``everything``), not what arrives
        # meanwhile: under a steady load the queue's events would never get a turn
        owed = len(log) if everything else len(log) // self.batch_size * self.batch_size
        while not self._stop.is_set() and owed > 0 and len(log):
            self._busy = True
            try:
                events, count = log.take(self.batch_size, self._budget())
                owed -= count
                self._collect_log_drops()
                if count:
                    self._deliver(events, count)
            finally:
                self._busy = False

    def _collect_log_drops(self) -> None:
        """Move what the log dropped into the counts (on the sender's thread): the
        oldest, dropped when it was full, go into the next batch's ``dropped``; those
        too big alone are unencodable."""
        overflow, skipped = self._log.take_dropped()
        self._overflow += overflow
        if skipped:
            self.unencodable_events += skipped
            self._log_once("size", "perfpulse agent: an event is over the body limit; skipped")

    def _log_overflow(self) -> int:
        return int(self._log.overflow) if self._log is not None else 0

    def _take(self) -> tuple[list[Event], int]:
        """The next batch's events (the carry first), and how many items left the queue."""
        events, self._carry = self._carry, []
        queue = self._queue
        # the only consumer: len() can only grow while we pop. Popped by map(), in C,
        # and the types checked once each: both as Python loops cost 0.25 µs an event
        count = min(len(queue), self.batch_size - len(events))
        items = list(map(deque.popleft, repeat(queue, count)))
        if self._expand is None:
            return events + items, len(items)
        if all(issubclass(kind, _EVENTS) for kind in set(map(type, items))):
            events += items  # the usual batch: finished requests' http events only
            return events, len(items)
        # some are records (finished requests with an error or N+1 findings)
        records = [item for item in items if not issubclass(type(item), _EVENTS)]
        events += [item for item in items if issubclass(type(item), _EVENTS)]
        try:
            events += self._expand(records)
        except Exception:
            self.unencodable_events += len(records)
            self._log_once(
                "expand", "perfpulse agent: records could not become events", exc_info=True
            )
        return events, len(items)

    def _budget(self) -> int:
        return self.max_body_bytes - len(self._prefix) - 200

    def _encode_fast(self, events: list[Event]) -> bytes | None:
        """The whole batch at once with msgspec, or ``None`` when it fails or is too big."""
        try:
            body = _encode_fast(events)
        except (TypeError, ValueError, OverflowError):
            return None
        return body if len(body) <= self._budget() else None

    def _encode_strict(self, events: list[Event]) -> tuple[bytes, int]:
        """Event by event with the strict ``json`` encoder: the events JSON cannot hold
        (an unknown type, NaN) or too big alone are skipped and counted; what does not
        fit under ``max_body_bytes`` waits for the next batch."""
        budget = self._budget()
        parts: list[bytes] = []
        size = 2
        for i, event in enumerate(events):
            try:
                if type(event) is not dict:  # a msgspec struct (a finished request's event)
                    event = msgspec.to_builtins(event)
                encoded = _encode_strict(event).encode()
            except (TypeError, ValueError, OverflowError):
                self.unencodable_events += 1
                self._log_once("encode", "perfpulse agent: an event is not JSON; it was skipped")
                continue
            if len(encoded) + 2 > budget:
                self.unencodable_events += 1
                self._log_once("size", "perfpulse agent: an event is over the body limit; skipped")
                continue
            if size + len(encoded) + 1 > budget:
                self._carry = events[i:]
                break
            parts.append(encoded)
            size += len(encoded) + 1
        return b"[" + b",".join(parts) + b"]", len(parts)

    def _deliver(self, events: bytes, count: int) -> int:
        """Send one batch, retrying as the module docstring says; returns the last status."""
        overflow, lost = self._overflow, self._lost
        head = b"".join(
            [
                self._prefix,
                b',"batch_id":"',
                uuid.uuid4().hex.encode(),
                b'","dropped":',
                str(overflow + lost).encode(),
                b',"events":',
            ]
        )
        gz = _gzip(head, events, b"}")
        started = time.monotonic()
        attempt = 0
        while True:
            answer = self._sender.send(gz)
            status = answer.status
            if 200 <= status < 300:
                self._overflow -= overflow
                self._lost -= lost
                self.dropped_events += overflow + lost
                self.sent_events += count
                self.sent_batches += 1
                return status
            if status != 0 and status != 429 and status < 500:
                self.rejected_batches += 1
                self._log_once(
                    f"status {status}",
                    "perfpulse agent: the collector refused a batch with %s; not retried",
                    status,
                )
                return status
            delay = min(self.backoff_cap_s, self.backoff_base_s * 2**attempt) * random.random()
            if answer.retry_after_s is not None:
                delay = answer.retry_after_s
            attempt += 1
            out_of_time = time.monotonic() + delay - started > self.give_up_after_s
            if out_of_time or self._stop.wait(delay):
                self._lost += count
                self._log_once("give up", "perfpulse agent: collector unreachable; batch dropped")
                return status
            self.retries += 1

    def _log_once(self, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        if key not in self._logged:
            self._logged.add(key)
            _log.warning(message + " (logged once)", *args, exc_info=exc_info)
