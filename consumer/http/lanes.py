"""``LaneTransport``: an httpx transport that spreads requests over several small connection pools.

httpcore's pool re-scans every queued and active request against every connection whenever a request starts or
finishes, so its cost per request grows with the square of the concurrency: at a few dozen requests in flight
it costs more CPU than the HTTP exchange itself. Splitting one pool of N connections into N/lane_size lanes of
``lane_size`` connections, and never letting more than ``lane_size`` requests into a lane, keeps each scan small.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from consumer.http.transport import build_limits


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its lane slot back when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._release()


class _Lane:
    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.in_flight = 0


class LaneTransport(httpx.AsyncBaseTransport):
    """At most ``max_connections`` requests in flight, over lanes of at most ``lane_size`` connections each.

    ``transport_factory(limits)`` builds each lane's transport (default: ``httpx.AsyncHTTPTransport``). Waiting
    for a free slot honours the request's ``pool`` timeout (``httpx.PoolTimeout``).
    """

    def __init__(
        self,
        max_connections: int,
        *,
        lane_size: int = 8,
        keepalive_expiry_s: float = 30.0,
        transport_factory: Callable[[httpx.Limits], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        if max_connections < 1 or lane_size < 1:
            raise ValueError("max_connections and lane_size must be >= 1")
        lanes = math.ceil(max_connections / lane_size)
        per_lane = math.ceil(max_connections / lanes)
        limits = build_limits(per_lane, keepalive_expiry_s=keepalive_expiry_s)
        if transport_factory is None:
            # one TLS context for every lane: building one loads the CA bundle (~50 ms), once per lane otherwise
            ssl_context = httpx.create_ssl_context()

            def transport_factory(lane_limits: httpx.Limits) -> httpx.AsyncBaseTransport:
                return httpx.AsyncHTTPTransport(limits=lane_limits, verify=ssl_context)

        self._lanes = [_Lane(transport_factory(limits)) for _ in range(lanes)]
        self._slots = asyncio.Semaphore(max_connections)
        self.max_connections = max_connections

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        try:
            async with asyncio.timeout(timeout.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection slot within the pool timeout", request=request) from None
        lane = min(self._lanes, key=lambda candidate: candidate.in_flight)
        lane.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                lane.in_flight -= 1
                self._slots.release()

        try:
            response = await lane.transport.handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ReleasingStream(response.stream, release),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.transport.aclose()
