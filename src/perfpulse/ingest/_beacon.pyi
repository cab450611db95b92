"""The compiled beacon path (``_beacon.c``); see :mod:`perfpulse.ingest.normalize`."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

def configure(
    redact: Callable[[str], str],
    attribution: Callable[[bytes], str | None],
    limits: Sequence[tuple[float, float, float]],
    max_duration_ms: float,
    redact_cached: Callable[[str], str] | None = None,
    redact_cached_max: int = 0,
    attribution_cached: Callable[[bytes], str | None] | None = None,
    attribution_cached_max: int = 0,
    /,
) -> None: ...
def normalize(
    body: bytes, lo: float, hi: float, page: Callable[[str, str], str], /
) -> tuple[str, int, bytes] | None: ...
def schema() -> dict[str, list[dict[str, object]]]: ...
def head(
    scope: Mapping[str, Any],
    origins: Mapping[bytes, dict[str, str]],
    public_key: bytes,
    limit: int,
    /,
) -> dict[str, str] | None: ...
def record(
    message: Mapping[str, Any],
    lo: float,
    hi: float,
    received: float,
    page: Callable[[str, str], str],
    limit: int,
    /,
) -> tuple[str, bytes, int] | None: ...
