"""Profile lookups by one identifier, coalesced: concurrent records looking up profiles share requests.

An order names its customer by ``external_id``; unless the link cache knows the profile, the order flow looks it up
(``GET /api/profiles``, whose quota is 75/s and 750/min). One request per order would bind orders with customers to
12.5 a second. ``CoalescedLookups`` sends a lookup at once when nothing else is waiting (``equals(...)``: a trickle
adds no latency) and, while its requests are in flight, gathers the lookups that arrive into the next request
(``any(field,[...])``, up to ``LOOKUP_VALUES`` values): under a backlog, one request answers up to 100 orders.
Waiting callers hold no runtime worker (``consumer.admission``); a failed request reaches each caller it carried,
each with its own copy of the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from consumer import admission
from consumer.errors import own_copy
from consumer.klaviyo.models import Profile

FindOne = Callable[[str], Awaitable[Profile | None]]
FindMany = Callable[[Sequence[str]], Awaitable[list[Profile]]]


class CoalescedLookups:
    """Lookups of one identifier (``field`` of a profile's attributes), at most ``concurrency`` requests at once."""

    def __init__(self, field: str, find_one: FindOne, find_many: FindMany, *, batch: int,
                 concurrency: int = 4) -> None:
        self._field = field
        self._find_one = find_one
        self._find_many = find_many
        self._batch = batch
        self._slots = concurrency
        self._waiting: dict[str, list[asyncio.Future[Profile | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def find(self, value: str) -> Profile | None:
        """The profile holding ``value``, or None."""
        future: asyncio.Future[Profile | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(value, []).append(future)
        self._dispatch()
        async with admission.waiting():
            return await future

    def _dispatch(self) -> None:
        while self._waiting and self._slots > 0:
            values = list(self._waiting)[: self._batch]
            batch = {value: self._waiting.pop(value) for value in values}
            self._slots -= 1
            task = asyncio.get_running_loop().create_task(self._lookup(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _lookup(self, batch: dict[str, list[asyncio.Future[Profile | None]]]) -> None:
        try:
            values = list(batch)
            if len(values) == 1:
                found = await self._find_one(values[0])
                profiles = [found] if found is not None else []
            else:
                profiles = await self._find_many(values)
        except asyncio.CancelledError:
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(own_copy(exc))
            return
        finally:
            self._slots += 1
            self._dispatch()
        holders = {getattr(profile.attributes, self._field, None): profile for profile in profiles}
        for value, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(holders.get(value))

    async def aclose(self) -> None:
        """Cancel what is in flight; waiting callers are cancelled with it."""
        for futures in self._waiting.values():
            for future in futures:
                future.cancel()
        self._waiting.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
