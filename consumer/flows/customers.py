"""The order's customer: the platform Customer an order's profile is made from, read from iPaaS.com and kept a while.

When an order names a customer Klaviyo does not know yet, the order flow creates the customer's profile through
the Add Profile flow. It builds it from the platform Customer (``IpaasPort.fetch_record``: the Customer with its
addresses) when iPaaS.com is configured, so a failure describes the real record; ``CustomerCache`` keeps what it
read for ``ttl_s``, so the orders of one customer that arrive together cost one read (concurrent ones share it).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from consumer.records import Customer

__all__ = ["CustomerCache"]

TTL_S = 300.0
"""How long a Customer read from iPaaS.com is used for new orders (it only seeds a profile Klaviyo lacks)."""
SIZE = 1024


class CustomerCache:
    """Customers by id, each kept ``ttl_s`` (at most ``size``, the oldest read first out); ``clock`` is monotonic
    seconds. Only Customers are kept, never a failure: each order that finds none reads for itself."""

    def __init__(self, ttl_s: float = TTL_S, size: int = SIZE, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._clock = clock
        self._kept: OrderedDict[str, tuple[float, Customer]] = OrderedDict()
        self._reading: dict[str, asyncio.Event] = {}

    def get(self, customer_id: str) -> Customer | None:
        """The Customer read within ``ttl_s``, or None."""
        kept = self._kept.get(customer_id)
        if kept is None:
            return None
        if self._clock() - kept[0] >= self._ttl_s:
            del self._kept[customer_id]
            return None
        return kept[1]

    def put(self, customer_id: str, customer: Customer) -> None:
        self._kept.pop(customer_id, None)
        self._kept[customer_id] = (self._clock(), customer)
        while len(self._kept) > self._size:
            self._kept.popitem(last=False)

    async def customer(self, customer_id: str, read: Callable[[], Awaitable[Customer]]) -> Customer:
        """The kept Customer, else what ``read`` returns (kept); while one read of ``customer_id`` runs, the others
        wait for it rather than read too. A failed read raises in its own order only."""
        while True:
            kept = self.get(customer_id)
            if kept is not None:
                return kept
            reading = self._reading.get(customer_id)
            if reading is None:
                break
            await reading.wait()
            if self.get(customer_id) is None:  # that read failed: this order reads for itself
                break
        done = self._reading.setdefault(customer_id, asyncio.Event())
        try:
            customer = await read()
            self.put(customer_id, customer)
            return customer
        finally:
            if self._reading.get(customer_id) is done:
                del self._reading[customer_id]
            done.set()
