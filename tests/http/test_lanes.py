"""LaneTransport: bounded in-flight requests spread over small pools, slots returned on close or failure."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest

from consumer.http.lanes import LaneTransport


class Gate(httpx.AsyncBaseTransport):
    """A lane transport that holds every request until released, and records what it saw."""

    entered: list[asyncio.Event] = []

    def __init__(self, limits: httpx.Limits, log: list[Gate], release: asyncio.Event) -> None:
        self.limits = limits
        self.log = log
        self.active = 0
        self.peak = 0
        self.release = release
        self.fail = False
        log.append(self)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.active += 1
        self.peak = max(self.peak, self.active)
        total = sum(g.active for g in self.log)
        for event in Gate.entered[:total]:
            event.set()
        try:
            await self.release.wait()
            if self.fail:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200, content=b"ok")
        finally:
            self.active -= 1


def lanes(max_connections: int, lane_size: int) -> tuple[LaneTransport, list[Gate], asyncio.Event]:
    log: list[Gate] = []
    release = asyncio.Event()
    transport = LaneTransport(max_connections, lane_size=lane_size,
                              transport_factory=lambda limits: Gate(limits, log, release))
    return transport, log, release


async def test_requests_spread_over_lanes_and_in_flight_is_capped() -> None:
    transport, gates, release = lanes(10, 4)
    assert transport.lanes == 3 and all(g.limits.max_connections == 4 for g in gates)
    Gate.entered = [asyncio.Event() for _ in range(10)]
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        tasks = [asyncio.create_task(client.get("/")) for _ in range(25)]
        await Gate.entered[-1].wait()
        for _ in range(50):  # let every other task run as far as it can
            await asyncio.sleep(0)
        assert sum(g.active for g in gates) == 10  # the other 15 wait for a slot
        assert sorted(g.active for g in gates) == [3, 3, 4]
        release.set()
        responses = await asyncio.gather(*tasks)
    assert {r.status_code for r in responses} == {200} and {r.text for r in responses} == {"ok"}
    assert max(g.peak for g in gates) <= 4


async def test_failures_give_the_slot_back() -> None:
    transport, gates, release = lanes(1, 1)
    gates[0].fail = True
    release.set()
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                await client.get("/")
        gates[0].fail = False
        assert (await client.get("/")).status_code == 200


async def test_waiting_for_a_slot_honours_the_pool_timeout() -> None:
    transport, _, release = lanes(1, 1)
    async with httpx.AsyncClient(transport=transport, base_url="http://x", timeout=httpx.Timeout(5, pool=0.05)) as c:
        Gate.entered = [asyncio.Event()]
        first = asyncio.create_task(c.get("/"))
        await Gate.entered[0].wait()
        with pytest.raises(httpx.PoolTimeout):
            await c.get("/")
        release.set()
        assert (await first).status_code == 200


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        LaneTransport(0)


async def test_the_lanes_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    transport = LaneTransport(100)  # 13 lanes: the CA bundle is loaded once, not once per lane
    try:
        assert transport.lanes == 13 and len(loads) == 1
    finally:
        await transport.aclose()
