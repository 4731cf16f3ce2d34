from datetime import UTC, datetime

import httpx
import pytest

from consumer.http.headers import parse_ratelimit_headers, parse_retry_after
from consumer.http.ratelimit import Window


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1.0), (" 30 ", 30.0), ("0.5", 0.5), ("-3", 0.0), ("", None), (None, None), ("soon", None), ("nan", None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:45 GMT", now=now) == pytest.approx(45.0)
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0


def test_ratelimit_headers_with_policies() -> None:
    headers = httpx.Headers(
        {"RateLimit-Limit": "750, 75;w=1, 750;w=60", "RateLimit-Remaining": "749", "RateLimit-Reset": "44"}
    )
    info = parse_ratelimit_headers(headers)
    assert (info.limit, info.remaining, info.reset_s) == (750, 749, 44.0)
    assert info.policies == (Window(75, 1.0), Window(750, 60.0))
    assert not info.empty


def test_ratelimit_policy_header_and_bare_limit() -> None:
    info = parse_ratelimit_headers(httpx.Headers({"RateLimit-Limit": "10", "RateLimit-Policy": "10;w=1"}))
    assert info.limit == 10 and info.policies == (Window(10, 1.0),)


def test_no_ratelimit_headers() -> None:
    info = parse_ratelimit_headers(httpx.Headers({"content-type": "application/json"}))
    assert info.empty and info.policies == ()
