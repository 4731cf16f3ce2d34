"""httpx configuration builders and the retry classification shared by the API clients."""

from __future__ import annotations

import httpx


def build_timeout(
    connect_s: float, read_s: float, *, write_s: float | None = None, pool_s: float | None = None
) -> httpx.Timeout:
    """Explicit per-phase timeouts. httpx has no total timeout: wrap each attempt in ``asyncio.timeout``."""
    return httpx.Timeout(
        connect=connect_s,
        read=read_s,
        write=write_s if write_s is not None else read_s,
        pool=pool_s if pool_s is not None else connect_s,
    )


def build_limits(
    max_connections: int, *, max_keepalive: int | None = None, keepalive_expiry_s: float = 30.0
) -> httpx.Limits:
    """Connection-pool limits; keep-alive connections default to the pool size."""
    return httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive if max_keepalive is not None else max_connections,
        keepalive_expiry=keepalive_expiry_s,
    )


def is_retryable_status(status: int) -> bool:
    """429 and every 5xx are worth another try; other 4xx are not."""
    return status == 429 or 500 <= status <= 599


def describe_transport_error(exc: BaseException) -> str:
    """A short, secret-free description of a transport failure (no URL, no headers)."""
    name = type(exc).__name__
    text = str(exc).strip()
    if isinstance(exc, TimeoutError | httpx.TimeoutException) and not text:
        text = "timed out"
    return f"{name}: {text}" if text else name
