"""What users may import, and how ``init`` behaves: off without an endpoint,
configured once, options from arguments, then the environment, then defaults."""

from __future__ import annotations

import importlib
import logging
import threading

import pytest

import perfpulse.agent
from perfpulse.agent import config, scope
from perfpulse.agent.config import Config

from .conftest import Start


def test_exported_members() -> None:
    assert perfpulse.agent.__all__ == [
        "AgentStats",
        "flush",
        "init",
        "shutdown",
        "stats",
        "traceparent",
    ]
    for name in perfpulse.agent.__all__:
        assert getattr(perfpulse.agent, name).__module__ == "perfpulse.agent"
    integrations = {
        "perfpulse.agent.asgi": [
            "SPEEDUPS",
            "PerfpulseMiddleware",
            "PythonMiddleware",
            "starlette_route",
        ],
        "perfpulse.agent.wsgi": ["PerfpulseWSGIMiddleware", "instrument_flask"],
        "perfpulse.agent.django": ["PerfpulseMiddleware", "django_route"],
    }
    for module, names in integrations.items():
        assert importlib.import_module(module).__all__ == names


def test_environment_variable_names_are_documented_constants() -> None:
    assert {name: getattr(config, name) for name in config.__all__ if name.startswith("ENV_")} == {
        "ENV_SERVICE": "PERFPULSE_SERVICE",
        "ENV_ENDPOINT": "PERFPULSE_ENDPOINT",
        "ENV_INGEST_KEY": "PERFPULSE_INGEST_KEY",
        "ENV_RELEASE": "PERFPULSE_RELEASE",
        "ENV_ENVIRONMENT": "PERFPULSE_ENVIRONMENT",
        "ENV_SAMPLE_RATE": "PERFPULSE_SAMPLE_RATE",
        "ENV_N_PLUS_ONE_THRESHOLD": "PERFPULSE_N_PLUS_ONE_THRESHOLD",
        "ENV_RESOURCE_INTERVAL": "PERFPULSE_RESOURCE_INTERVAL",
    }


def test_without_an_endpoint_init_starts_nothing(
    agent: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERFPULSE_ENDPOINT", raising=False)
    threads = threading.active_count()
    agent(resource_interval_s=10)
    assert threading.active_count() == threads
    assert not scope.enabled()
    scope.record({"kind": "http"})  # a no-op, not an error
    assert perfpulse.agent.stats().running is False
    assert perfpulse.agent.flush() is True


def test_the_agent_runs_one_background_thread(agent: Start) -> None:
    threads = threading.active_count()
    agent(endpoint="http://127.0.0.1:9", resource_interval_s=10)  # sender and sampler
    assert threading.active_count() == threads + 1
    perfpulse.agent.shutdown(timeout_s=0.1)
    assert threading.active_count() == threads


def test_argument_then_environment_then_default() -> None:
    environ = {
        "PERFPULSE_SERVICE": "from-env",
        "PERFPULSE_ENDPOINT": "http://collector:8600",
        "PERFPULSE_INGEST_KEY": "ppi_env",
        "PERFPULSE_SAMPLE_RATE": "0.5",
        "PERFPULSE_N_PLUS_ONE_THRESHOLD": "8",
    }
    resolved = Config.resolve(service="from-arg", environ=environ)
    assert resolved == Config(
        service="from-arg",
        endpoint="http://collector:8600",
        key="ppi_env",
        release="",
        environment="production",
        sample_rate=0.5,
        n_plus_one_threshold=8,
        resource_interval_s=10.0,
    )
    assert Config.resolve(environ={}).endpoint is None
    assert Config.resolve(environ={}).service == "unknown_service"


def test_a_bad_environment_value_falls_back_to_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="perfpulse.agent"):
        resolved = Config.resolve(
            environ={"PERFPULSE_SAMPLE_RATE": "lots", "PERFPULSE_ENDPOINT": "collector:8600"}
        )
    assert resolved.sample_rate == 1.0
    assert resolved.endpoint is None
    assert "PERFPULSE_SAMPLE_RATE" in caplog.text and "PERFPULSE_ENDPOINT" in caplog.text


@pytest.mark.parametrize(
    "options",
    [
        {"sample_rate": 1.5},
        {"endpoint": "ftp://x"},
        {"n_plus_one_threshold": 1},
        {"service": ""},
        {"resource_interval_s": -1.0},
    ],
)
def test_a_bad_argument_is_a_value_error(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        perfpulse.agent.init(**options)  # type: ignore[arg-type]
    assert perfpulse.agent.stats().running is False


def test_a_second_init_warns_and_changes_nothing(
    agent: Start, caplog: pytest.LogCaptureFixture
) -> None:
    agent(endpoint="http://127.0.0.1:9", service="first")
    sink = scope._sink
    with caplog.at_level(logging.WARNING, logger="perfpulse.agent"):
        perfpulse.agent.init(endpoint="http://127.0.0.1:9", service="second")
    assert "called again" in caplog.text
    assert scope._sink is sink
    perfpulse.agent.shutdown()
    assert not scope.enabled()
    agent(endpoint="http://127.0.0.1:9", service="third")  # after shutdown: allowed again
    assert scope.enabled() and perfpulse.agent.stats().running
