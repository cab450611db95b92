"""The agent's settings: an argument to ``init``, then an environment variable, then a default.

Each option is resolved once, when :func:`perfpulse.agent.init` runs (never at
import time), and validated there:

=========================  ================================  =====================
option                     environment variable              default
=========================  ================================  =====================
``service``                :data:`ENV_SERVICE`               ``"unknown_service"``
``endpoint``               :data:`ENV_ENDPOINT`              none: the agent is off
``key``                    :data:`ENV_INGEST_KEY`            ``""``
``release``                :data:`ENV_RELEASE`               ``""``
``environment``            :data:`ENV_ENVIRONMENT`           ``"production"``
``sample_rate``            :data:`ENV_SAMPLE_RATE`           ``1.0``
``n_plus_one_threshold``   :data:`ENV_N_PLUS_ONE_THRESHOLD`  ``5``
``resource_interval_s``    :data:`ENV_RESOURCE_INTERVAL`     ``10.0`` (``0``: off)
=========================  ================================  =====================

A bad *argument* is a programming error and raises :class:`ValueError` from
``init``. A bad *environment value* must not take the application down with it:
it is logged and the default is used instead.

Example::

    config = Config.resolve(service="checkout", environ={"PERFPULSE_SAMPLE_RATE": "0.25"})
    config.sample_rate  # 0.25
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

__all__ = [
    "ENV_ENDPOINT",
    "ENV_ENVIRONMENT",
    "ENV_INGEST_KEY",
    "ENV_N_PLUS_ONE_THRESHOLD",
    "ENV_RELEASE",
    "ENV_RESOURCE_INTERVAL",
    "ENV_SAMPLE_RATE",
    "ENV_SERVICE",
    "Config",
]

#: The service name every event is sent under (``resource.service``).
ENV_SERVICE = "PERFPULSE_SERVICE"
#: The collector's base URL, e.g. ``http://perfpulse:8600``. Unset: the agent is off.
ENV_ENDPOINT = "PERFPULSE_ENDPOINT"
#: The ingest key, sent as ``Authorization: Bearer <key>``.
ENV_INGEST_KEY = "PERFPULSE_INGEST_KEY"
#: The release (version, git sha) the service runs.
ENV_RELEASE = "PERFPULSE_RELEASE"
#: The deployment environment (``production``, ``staging``…).
ENV_ENVIRONMENT = "PERFPULSE_ENVIRONMENT"
#: The fraction of requests recorded, from 0 to 1.
ENV_SAMPLE_RATE = "PERFPULSE_SAMPLE_RATE"
#: How many executions of one query in one request make an N+1 finding (at least 2).
ENV_N_PLUS_ONE_THRESHOLD = "PERFPULSE_N_PLUS_ONE_THRESHOLD"
#: Seconds between two resource samples; 0 turns the sampler off.
ENV_RESOURCE_INTERVAL = "PERFPULSE_RESOURCE_INTERVAL"

_log = logging.getLogger("perfpulse.agent")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Config:
    """The resolved settings of one running agent."""

    service: str
    endpoint: str | None
    key: str
    release: str
    environment: str
    sample_rate: float
    n_plus_one_threshold: int
    resource_interval_s: float

    @classmethod
    def resolve(
        cls,
        *,
        service: str | None = None,
        endpoint: str | None = None,
        key: str | None = None,
        release: str | None = None,
        environment: str | None = None,
        sample_rate: float | None = None,
        n_plus_one_threshold: int | None = None,
        resource_interval_s: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """Resolve every option: the argument, then ``environ`` (``os.environ``), then the default."""
        env = os.environ if environ is None else environ
        return cls(
            service=_pick(service, env, ENV_SERVICE, str, "unknown_service", _name),
            endpoint=_pick(endpoint, env, ENV_ENDPOINT, str, None, _endpoint),
            key=_pick(key, env, ENV_INGEST_KEY, str, "", _any),
            release=_pick(release, env, ENV_RELEASE, str, "", _short),
            environment=_pick(environment, env, ENV_ENVIRONMENT, str, "production", _name),
            sample_rate=_pick(sample_rate, env, ENV_SAMPLE_RATE, float, 1.0, _rate),
            n_plus_one_threshold=_pick(
                n_plus_one_threshold, env, ENV_N_PLUS_ONE_THRESHOLD, int, 5, _threshold
            ),
            resource_interval_s=_pick(
                resource_interval_s, env, ENV_RESOURCE_INTERVAL, float, 10.0, _interval
            ),
        )


def _pick(
    arg: _T | None,
    env: Mapping[str, str],
    name: str,
    parse: Callable[[str], _T],
    default: _T,
    check: Callable[[_T], str | None],
) -> _T:
    if arg is not None:
        problem = check(arg)
        if problem is not None:
            raise ValueError(f"perfpulse.agent.init: {problem}: {arg!r}")
        return arg
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        problem = "not a number"
    else:
        checked = check(value)
        if checked is None:
            return value
        problem = checked
    _log.warning("perfpulse agent: ignoring %s=%r (%s); using %r", name, raw, problem, default)
    return default


def _any(value: object) -> str | None:
    return None


def _name(value: str) -> str | None:
    return None if 1 <= len(value) <= 200 else "must be 1 to 200 characters"


def _short(value: str) -> str | None:
    return None if len(value) <= 200 else "must be at most 200 characters"


def _endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "endpoint must be an http:// or https:// URL"
    return None


def _rate(value: float) -> str | None:
    return None if math.isfinite(value) and 0.0 <= value <= 1.0 else "sample_rate must be in [0, 1]"


def _threshold(value: int) -> str | None:
    return None if value >= 2 else "n_plus_one_threshold must be at least 2"


def _interval(value: float) -> str | None:
    ok = math.isfinite(value) and (value == 0 or value >= 0.01)
    return None if ok else "resource_interval_s must be 0 (off) or at least 0.01"
