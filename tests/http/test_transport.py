import httpx
import pytest

from consumer.http.transport import build_limits, build_timeout, describe_transport_error, is_retryable_status


def test_timeouts_are_explicit_per_phase() -> None:
    timeout = build_timeout(2.0, 10.0)
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (2.0, 10.0, 10.0, 2.0)


def test_pool_limits() -> None:
    limits = build_limits(50)
    assert limits.max_connections == 50 and limits.max_keepalive_connections == 50


@pytest.mark.parametrize(("status", "expected"), [(429, True), (500, True), (503, True), (599, True),
                                                  (400, False), (401, False), (404, False), (409, False)])
def test_retryable_statuses(status: int, expected: bool) -> None:
    assert is_retryable_status(status) is expected


def test_transport_error_descriptions() -> None:
    assert describe_transport_error(httpx.ReadTimeout("")) == "ReadTimeout: timed out"
    assert describe_transport_error(httpx.ConnectError("All connection attempts failed")) == (
        "ConnectError: All connection attempts failed"
    )
    assert describe_transport_error(TimeoutError()) == "TimeoutError: timed out"
