"""Outages in the error log: one record when a destination goes out and one when it is back for good, however
often it relapsed in between; a recovery still settling is written on exit."""

from __future__ import annotations

import asyncio

from consumer.catalog import DESTINATION_RECOVERED, KLAVIYO_CONNECTION_ERROR, CatalogError
from consumer.destinations import Change, Destinations, DestinationState
from consumer.errors import Outage
from consumer.failures.outages import report_outages


class Collected:
    """A ``Reporter`` keeping what it was given."""

    def __init__(self) -> None:
        self.records: list[CatalogError] = []
        self.arrived = asyncio.Event()

    async def report(self, error: CatalogError, transfer: None) -> None:
        self.records.append(error)
        self.arrived.set()

    async def count(self, count: int) -> list[CatalogError]:
        async with asyncio.timeout(10):
            while len(self.records) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.records


def down() -> CatalogError:
    return CatalogError(KLAVIYO_CONNECTION_ERROR, "ConnectError", retryable=True, destination="klaviyo",
                        outage=Outage.DOWN)


async def flap(destinations: Destinations, answering: asyncio.Event, times: int) -> list[Change]:
    """The destination fails, a probe brings it back, ``times`` over; returns what listeners heard."""
    heard: list[Change] = []
    back = asyncio.Event()

    def listen(change: Change) -> None:
        heard.append(change)
        if change.current is DestinationState.UP:
            back.set()

    destinations.listen(listen)
    for _ in range(times):
        answering.clear()
        back.clear()
        destinations.report(down())
        answering.set()
        await asyncio.wait_for(back.wait(), 10)
    return heard


def probed(answering: asyncio.Event, settle_s: float) -> Destinations:
    async def probe() -> None:
        if not answering.is_set():
            raise down()

    return Destinations({"klaviyo": probe}, probe_min_s=0.01, probe_max_s=0.02, settle_s=settle_s)


async def test_an_episode_that_relapsed_is_one_outage_record_and_one_recovery_written_on_exit() -> None:
    answering = asyncio.Event()
    destinations = probed(answering, settle_s=60.0)
    log = Collected()
    async with report_outages(destinations, log):
        heard = await flap(destinations, answering, times=3)
        await log.count(1)
        assert [record.code for record in log.records] == [KLAVIYO_CONNECTION_ERROR.code]  # recovery still settling
    await destinations.aclose()
    assert [change.relapse for change in heard if change.current is DestinationState.DOWN] == [False, True, True]
    outage, recovery = log.records
    assert recovery.entry is DESTINATION_RECOVERED
    assert "Klaviyo down since" in outage.message and "(down since" in (recovery.detail or "")
    assert (recovery.detail or "").endswith("; 0 records waited")


async def test_a_recovery_is_written_once_the_destination_stayed_up() -> None:
    answering = asyncio.Event()
    destinations = probed(answering, settle_s=0.05)
    log = Collected()
    async with report_outages(destinations, log):
        await flap(destinations, answering, times=1)
        records = await log.count(2)  # written by itself, before the exit
        assert [record.code for record in records] == [KLAVIYO_CONNECTION_ERROR.code, DESTINATION_RECOVERED.code]
        answering.clear()
        destinations.report(down())  # later than the settle time: a new episode, a new record
        await log.count(3)
    await destinations.aclose()
    assert [record.code for record in log.records][2] == KLAVIYO_CONNECTION_ERROR.code
