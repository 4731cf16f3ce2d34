"""The order flow's cache of platform Customers: kept a while, bounded, one read at a time per customer."""

from __future__ import annotations

import asyncio

import pytest

from consumer.flows.customers import CustomerCache
from consumer.records import Customer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """A reader of Customers that counts its calls and can be held open or made to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self) -> Customer:
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise LookupError("no such customer")
        return Customer(id="C1", first_name=f"read {self.calls}")


async def test_a_customer_is_kept_for_its_time_then_read_again() -> None:
    clock, reads = Clock(), Reads()
    cache = CustomerCache(ttl_s=60.0, clock=clock)
    first = await cache.customer("C1", reads)
    clock.now = 59.9
    assert await cache.customer("C1", reads) is first and reads.calls == 1
    clock.now = 60.0
    assert (await cache.customer("C1", reads)).first_name == "read 2"


def test_the_oldest_read_leaves_first_when_full() -> None:
    cache = CustomerCache(size=2)
    for customer_id in ("A", "B", "C"):
        cache.put(customer_id, Customer(id=customer_id))
    assert [cache.get(name) is not None for name in ("A", "B", "C")] == [False, True, True]


async def test_orders_of_one_customer_at_once_share_one_read() -> None:
    reads = Reads()
    reads.gate.clear()
    cache = CustomerCache()
    waiting = [asyncio.create_task(cache.customer("C1", reads)) for _ in range(5)]
    await asyncio.sleep(0)
    reads.gate.set()
    customers = await asyncio.gather(*waiting)
    assert reads.calls == 1 and len({id(customer) for customer in customers}) == 1


async def test_a_failed_read_is_not_kept_and_fails_only_its_own_order() -> None:
    reads = Reads()
    reads.gate.clear()
    reads.fail = True
    cache = CustomerCache()
    first = asyncio.create_task(cache.customer("C1", reads))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.customer("C1", reads))  # waits for the first read
    await asyncio.sleep(0)
    reads.gate.set()
    with pytest.raises(LookupError):
        await first
    with pytest.raises(LookupError):
        await second  # its own read, its own error
    assert reads.calls == 2 and cache.get("C1") is None
    reads.fail = False
    assert (await cache.customer("C1", reads)).first_name == "read 3"
