"""Admission: a handler call that waits for a destination's quota holds no worker.

The runtime runs at most ``max_in_flight`` handler calls at once, but a call that only waits for quota (in a
rate limiter, in a batch queue for its turn in a bulk request) uses no CPU and no connection. (A backoff after a
failed request is not such a wait: that call keeps its worker, so a failing destination meets no more calls.)
The runtime gives each handler call a ``Slot`` (in a context variable); code that waits before it sends wraps
the wait in ``waiting()``, and while it waits the call does not count against ``max_in_flight``: other records
(other keys, other flows, other destinations) get the worker. When its wait ends it takes a worker again, in turn
with the other calls whose wait ended, before any new record starts: never more than ``max_in_flight`` work.

A wait that is *abandonable* is one where nothing of the call's current request was sent yet: on a revoke or
a stop the runtime cancels those calls at once instead of waiting out its drain deadline (their records are not
committed and are read again by the partition's next owner). ``Slot.sending()`` tells the runtime a batch
took the call's work into a request, so it is no longer abandoned but given the drain deadline to finish.

Outside the runtime (a replay, a test) there is no slot and ``waiting()`` does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any


class Slot:
    """One handler call's hold on a worker; ``parked`` while it waits and holds none."""

    __slots__ = ("_on_park", "_on_unpark", "abandonable", "parked")

    def __init__(self, on_park: Callable[[], None], on_unpark: Callable[[], Awaitable[None]]) -> None:
        self._on_park = on_park
        self._on_unpark = on_unpark
        self.parked = False
        self.abandonable = False
        """Parked with nothing of its current request sent: cancelling it loses no work."""

    def park(self, *, abandonable: bool = True) -> None:
        if not self.parked:
            self.parked = True
            self.abandonable = abandonable
            self._on_park()

    async def unpark(self) -> None:
        """Take a worker again: waits while ``max_in_flight`` calls work (the runtime re-admits in turn)."""
        if self.parked:
            self.parked = False
            self.abandonable = False
            await self._on_unpark()

    def sending(self) -> None:
        """A batch took the call's work into a request: it may no longer be abandoned (it still holds no worker)."""
        self.abandonable = False


_current: ContextVar[tuple[Slot, asyncio.Task[Any] | None] | None] = ContextVar(
    "ipaas_klaviyo_admission_slot", default=None)


def current() -> Slot | None:
    """The slot of the handler call running in this task, if the runtime runs it.

    Only in the task that entered it: a task started from a handler (a batch's sender, say) copies the context
    variable, but its waits are not the handler's."""
    entered = _current.get()
    if entered is None or entered[1] is not asyncio.current_task():
        return None
    return entered[0]


def enter(slot: Slot) -> object:
    """Make ``slot`` the slot of the current task's handler calls; returns the token for ``leave``."""
    return _current.set((slot, asyncio.current_task()))


def leave(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


@asynccontextmanager
async def waiting(slot: Slot | None = None, *, abandonable: bool = True) -> AsyncIterator[Slot | None]:
    """Wrap a wait for quota: the call holds no worker meanwhile, and takes one again when it ends (waiting its
    turn while ``max_in_flight`` others work). A no-op without a slot, or nested."""
    slot = slot if slot is not None else current()
    if slot is None or slot.parked:
        yield slot
        return
    slot.park(abandonable=abandonable)
    try:
        yield slot
    finally:
        await slot.unpark()
