"""The logging handler: structured records land in the collector's log table."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Server
from perfpulse.agent import scope
from perfpulse.agent.logs import PerfpulseHandler


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("shop.payments")
    log.propagate = False
    handler = PerfpulseHandler(level=logging.INFO)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield log
    log.removeHandler(handler)


def test_records_reach_the_log_search_with_request_and_trace_ids(
    server: Server, agent: Any, logger: logging.Logger
) -> None:
    agent(endpoint=server.url)
    token = scope.enter_request(
        scope.RequestScope(route="/pay", request_id="req-42", trace_id="ab" * 16)
    )
    try:
        try:
            raise TimeoutError("gateway did not answer")
        except TimeoutError:
            logger.exception(
                "payment failed for order %d", 77, extra={"order": 77, "obj": object()}
            )
    finally:
        scope.exit_request(token)
    logger.info("nightly report done")
    logger.debug("below the handler's level: not sent")

    deadline = time.monotonic() + 10
    logs: list[dict[str, Any]] = []
    while len(logs) < 2 and time.monotonic() < deadline:
        logs = server.get("/api/v1/logs", service="shop", **{"from": time.time() - 60}).json()[
            "logs"
        ]
        time.sleep(0.1)
    assert [x["message"] for x in logs] == ["nightly report done", "payment failed for order 77"]
    info, error = logs
    assert (info["level"], info["request_id"]) == ("info", None)
    assert error["level"] == "error"
    assert error["logger"] == "shop.payments"
    assert (error["request_id"], error["trace_id"]) == ("req-42", "ab" * 16)
    assert (
        error["exception"].startswith("Traceback")
        and "TimeoutError: gateway did not answer" in error["exception"]
    )
    assert error["attributes"] == {"order": 77}  # what JSON cannot hold is left out
    by_request = server.get(
        "/api/v1/logs", request_id="req-42", **{"from": time.time() - 60}
    ).json()["logs"]
    assert [x["id"] for x in by_request] == [error["id"]]


def test_handler_is_silent_when_the_agent_is_off(logger: logging.Logger) -> None:
    assert not scope.enabled()
    logger.error("nobody is listening")  # must not raise or send
