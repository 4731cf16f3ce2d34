"""Destination health: one change per episode, probes bring it back, and a relapse right after is the same episode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, CatalogError
from consumer.destinations import Change, Destinations, DestinationState
from consumer.errors import Outage


def down(detail: str = "ConnectError") -> CatalogError:
    return CatalogError(KLAVIYO_CONNECTION_ERROR, detail, retryable=True, destination="klaviyo", outage=Outage.DOWN)


class Health:
    """Destinations with one probed destination whose probe succeeds while ``answering`` is set."""

    def __init__(self, settle_s: float) -> None:
        self.answering = asyncio.Event()
        self.changes: list[Change] = []
        self._changed = asyncio.Event()
        self.destinations = Destinations({"klaviyo": self._probe}, probe_min_s=0.01, probe_max_s=0.02,
                                         settle_s=settle_s)
        self.destinations.listen(self._heard)

    async def _probe(self) -> None:
        if not self.answering.is_set():
            raise down("still down")

    def _heard(self, change: Change) -> None:
        self.changes.append(change)
        self._changed.set()

    async def heard(self, count: int) -> list[Change]:
        async with asyncio.timeout(10):
            while len(self.changes) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.changes


@pytest.fixture
async def relapsing() -> AsyncIterator[Health]:
    health = Health(settle_s=60.0)
    yield health
    await health.destinations.aclose()


@pytest.fixture
async def settled() -> AsyncIterator[Health]:
    health = Health(settle_s=0.0)
    yield health
    await health.destinations.aclose()


async def test_an_outage_is_one_change_until_a_probe_succeeds(settled: Health) -> None:
    klaviyo = settled.destinations["klaviyo"]
    settled.destinations.report(down())
    settled.destinations.report(down("again"))  # the same episode: nobody hears it twice
    waiter = asyncio.create_task(klaviyo.wait_up())
    [outage] = await settled.heard(1)
    assert (outage.previous, outage.current, outage.relapse) == (DestinationState.UP, DestinationState.DOWN, False)
    assert klaviyo.detail.endswith("(again)") and not waiter.done()
    settled.answering.set()
    _, recovery = await settled.heard(2)
    await waiter
    assert recovery.current is DestinationState.UP and recovery.waited == 1 and recovery.relapses == 0
    assert recovery.since == outage.since and recovery.duration_s > 0


async def test_failing_again_right_after_a_recovery_is_a_relapse_of_the_same_episode(relapsing: Health) -> None:
    destinations = relapsing.destinations
    destinations.report(down())
    relapsing.answering.set()
    outage, _ = await relapsing.heard(2)
    relapsing.answering.clear()
    destinations.report(down("the writes still fail"))  # the probe's read passed, the records' writes did not
    waiter = asyncio.create_task(destinations["klaviyo"].wait_up())
    _, _, relapse = await relapsing.heard(3)
    assert relapse.relapse and relapse.since == outage.since and relapse.current is DestinationState.DOWN
    relapsing.answering.set()
    *_, recovery = await relapsing.heard(4)
    await waiter
    assert recovery.relapses == 1 and recovery.since == outage.since and recovery.waited == 1


async def test_a_failure_after_the_settle_time_is_a_new_episode(settled: Health) -> None:
    settled.destinations.report(down())
    settled.answering.set()
    outage, _ = await settled.heard(2)
    settled.answering.clear()
    settled.destinations.report(down("later"))
    *_, second = await settled.heard(3)
    assert not second.relapse and second.since >= outage.since
