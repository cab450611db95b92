"""The beacon normalizer's shortcuts agree with the rules they stand for."""

from __future__ import annotations

import itertools
import math
import time

import msgspec
import pytest

from perfpulse.ingest.normalize import (
    _NAV_PHASES,
    MAX_DURATION_MS,
    Normalizer,
    _phases_in_range,
    attribution_text,
)
from perfpulse.ingest.routes import RouteFolder
from perfpulse.model.events import BEACON_DECODER, Navigation

VALUES = [
    None,
    0.0,
    12.5,
    MAX_DURATION_MS,
    -0.001,
    MAX_DURATION_MS + 1,
    math.nan,
    math.inf,
    -math.inf,
]


def test_phase_check_matches_the_per_phase_rule() -> None:
    """Every pair of phase values (NaN, infinities, out of range both ways, None),
    placed at the first and last phase: the check says 'in range' exactly when each
    given phase is within 0 to 10 minutes."""
    for first, last in itertools.product(VALUES, repeat=2):
        nav = Navigation(dns_ms=first, load_ms=last, request_ms=5.0)
        want = all(v is None or 0.0 <= v <= MAX_DURATION_MS for v in (first, last))
        assert _phases_in_range(nav) is want, (first, last)


def test_every_phase_is_checked() -> None:
    for name in _NAV_PHASES:
        assert _phases_in_range(Navigation(**{name: 5.0})) is True
        assert _phases_in_range(Navigation(**{name: -1.0})) is False, name
        assert _phases_in_range(Navigation(**{"load_ms": 1.0, name: math.nan})) is False, name
    assert _phases_in_range(Navigation(type="navigate", transfer_bytes=10**9)) is True


def _beacon(attribution: bytes) -> bytes:
    return (
        b'{"id":"a","ts":%f,"url":"https://s.example/p","vitals":[{"name":"LCP","value":900,'
        b'"attribution":%s}],"nav":{"dns_ms":7e5,"tls_ms":3}}' % (time.time(), attribution)
    )


def test_attribution_is_stored_compact_redacted_and_cached() -> None:
    norm = Normalizer(folder=RouteFolder(cap=10), raw_retention_s=86400)
    raw = b'{ "url" : "https://cdn.example/a.jpg?sig=1" ,"element":"img" }'
    before = attribution_text.cache_info().hits
    docs = [
        msgspec.json.decode(norm.beacon(BEACON_DECODER.decode(_beacon(raw))).beacons[0])
        for _ in range(3)
    ]
    assert attribution_text.cache_info().hits - before == 2  # the first was made, then looked up
    for doc in docs:
        (vital,) = doc["vitals"]
        assert vital["attribution"] == '{"url":"https://cdn.example/a.jpg?sig=","element":"img"}'
        assert vital["rating"] == 0
        assert doc["beacon"]["nav"]["dns_ms"] is None  # a phase out of range goes alone
        assert doc["beacon"]["nav"]["tls_ms"] == 3.0
    # a long one is made the same way, without the cache
    long = b'{"url":"https://cdn.example/a.jpg?sig=1","selector":"%s"}' % (b"div > " * 200)
    before = attribution_text.cache_info().currsize
    doc = msgspec.json.decode(norm.beacon(BEACON_DECODER.decode(_beacon(long))).beacons[0])
    assert doc["vitals"][0]["attribution"] == (
        '{"url":"https://cdn.example/a.jpg?sig=","selector":"%s"}' % ("div > " * 200)
    )
    assert attribution_text.cache_info().currsize == before
    for empty in (b"null", b"{}", b"{ }"):
        doc = msgspec.json.decode(norm.beacon(BEACON_DECODER.decode(_beacon(empty))).beacons[0])
        assert doc["vitals"][0]["attribution"] is None


@pytest.mark.parametrize(
    ("raw", "kind"),
    [(b"1", "int"), (b"1.5", "float"), (b'"x"', "str"), (b"[]", "array"), (b"false", "bool")],
)
def test_attribution_that_is_not_an_object_names_the_field(raw: bytes, kind: str) -> None:
    norm = Normalizer(folder=RouteFolder(cap=10), raw_retention_s=86400)
    with pytest.raises(msgspec.ValidationError) as err:
        norm.beacon(BEACON_DECODER.decode(_beacon(raw)))
    assert (
        str(err.value) == f"Expected `object | null`, got `{kind}` - at `$.vitals[0].attribution`"
    )
