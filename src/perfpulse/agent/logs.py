"""A ``logging.Handler`` that ships structured records through the agent.

Each record becomes a ``log`` event (docs/wire-format.md): level, logger,
message, the formatted exception, and the request and trace ids of the request
being served (from :func:`perfpulse.agent.scope.current_request`), plus any
``extra={...}`` fields that JSON can hold as attributes. It goes through the
same transport as every other event, so it is batched, gzipped and retried; with
the agent off it costs one function call and sends nothing.

Example::

    import logging
    from perfpulse.agent.logs import PerfpulseHandler

    logging.getLogger().addHandler(PerfpulseHandler(level=logging.INFO))
"""

from __future__ import annotations

import logging

from perfpulse.agent import scope

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_SCALARS = (str, int, float, bool)


class PerfpulseHandler(logging.Handler):
    """Sends log records to the collector's ``log`` table."""

    def emit(self, record: logging.LogRecord) -> None:
        if not scope.enabled():
            return
        try:
            message = record.getMessage()
            exception = None
            if record.exc_info and record.exc_info[0] is not None:
                exception = logging.Formatter().formatException(record.exc_info)
            request = scope.current_request()
            attributes = {
                k: v
                for k, v in vars(record).items()
                if k not in _STANDARD and isinstance(v, _SCALARS)
            }
            scope.record(
                {
                    "kind": "log",
                    "ts": record.created,
                    "level": record.levelname,
                    "logger": record.name[:200],
                    "message": message[:16_000],
                    "exception": exception[:16_000] if exception else None,
                    "request_id": request.request_id if request else None,
                    "trace_id": request.trace_id if request else None,
                    "attributes": attributes or None,
                }
            )
        except Exception:
            self.handleError(record)
