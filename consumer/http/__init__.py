"""A small, generic outbound-HTTP toolkit shared by the service's API clients.

Nothing here knows about a particular API: capped exponential backoff with full jitter, a sliding-window rate
limiter with burst and steady windows, ``Retry-After`` and ``RateLimit-*`` header parsing, secret redaction,
non-JSON (HTML) error-page summaries, the httpx timeout/pool-limit builders, and ``LaneTransport`` (a
connection pool that stays cheap at high concurrency).
"""

from consumer.http.backoff import Backoff
from consumer.http.content import is_json_content_type, summarize_non_json
from consumer.http.headers import RateLimitInfo, parse_ratelimit_headers, parse_retry_after
from consumer.http.lanes import LaneTransport
from consumer.http.ratelimit import LimiterRegistry, SlidingWindowLimiter, Window
from consumer.http.redact import Redactor
from consumer.http.transport import build_limits, build_timeout, is_retryable_status

__all__ = [
    "Backoff",
    "LaneTransport",
    "LimiterRegistry",
    "RateLimitInfo",
    "Redactor",
    "SlidingWindowLimiter",
    "Window",
    "build_limits",
    "build_timeout",
    "is_json_content_type",
    "is_retryable_status",
    "parse_ratelimit_headers",
    "parse_retry_after",
    "summarize_non_json",
]
