"""Outages in the error log: one record when a destination goes out, one when it is back.

A destination's outage is no record's failure, so it is written once per episode, not per record: the
catalog's connection entry (or, when the credential is refused, the rejection that says so) with what failed
and since when, then a recovery record with how long it lasted and how many records waited.

The recovery record waits until the destination stayed up for ``Destinations.settle_s``: one that fails again
sooner relapsed (``Change.relapse``), and its episode goes on without a record of its own. On exit a recovery
still waiting is written at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from consumer.catalog import (
    DESTINATION_RECOVERED,
    IPAAS_CONNECTION_ERROR,
    KLAVIYO_CONNECTION_ERROR,
    TOKEN_EXCHANGE_FAILED,
    CatalogEntry,
    CatalogError,
)
from consumer.destinations import Change, Destinations, DestinationState
from consumer.observability import metrics

log = logging.getLogger("consumer.failures.outages")

_CONNECTION_ENTRIES: dict[str, CatalogEntry] = {"klaviyo": KLAVIYO_CONNECTION_ERROR, "ipaas": IPAAS_CONNECTION_ERROR}
_NAMES = {"klaviyo": "Klaviyo", "ipaas": "iPaaS.com"}
_REPORT_TIMEOUT_S = 15.0


class Reporter(Protocol):
    async def report(self, error: CatalogError, transfer: None) -> None: ...


def _provider_reports(change: Change) -> bool:
    """The change comes from the OAuth token provider losing the authorization (it writes and shows that)."""
    error = change.error
    return isinstance(error, CatalogError) and error.entry is TOKEN_EXCHANGE_FAILED


def outage_record(change: Change) -> CatalogError | None:
    """The error-log record of a state change (None: nothing to write)."""
    name = _NAMES.get(change.destination, change.destination)
    since = change.since.isoformat(timespec="seconds").replace("+00:00", "Z")
    if change.current is DestinationState.UP:
        detail = (f"{name} answers again after {change.duration_s:.0f} s ({change.previous.value} since {since}); "
                  f"{change.waited} records waited")
        return CatalogError(DESTINATION_RECOVERED, detail)
    if change.previous is not DestinationState.UP:
        return None  # the same episode, another way of failing: already reported
    error = change.error
    if _provider_reports(change):
        return None  # the OAuth provider reports a lost authorization itself
    detail = f"{name} {change.current.value} since {since}: {error.message if error else change.detail}"
    if change.current is DestinationState.UNAUTHORIZED and isinstance(error, CatalogError):
        return CatalogError(error.entry, detail, http_status=error.http_status, error_code=error.error_code)
    entry = _CONNECTION_ENTRIES.get(change.destination, KLAVIYO_CONNECTION_ERROR)
    return CatalogError(entry, detail, http_status=error.http_status if error else None)


@asynccontextmanager
async def report_outages(
    destinations: Destinations, error_log: Reporter
) -> AsyncIterator[None]:
    """While inside: every outage and recovery of ``destinations`` is written to ``error_log`` and counted, and
    Klaviyo's ``authorization_state`` is ``unauthorized`` while Klaviyo refuses the credential (a private key, or
    bearer tokens it refuses although they refresh); a lost OAuth authorization is the token provider's to show
    (``needs_reauthorization``, ``consumer.oauth.bind_runtime``)."""
    pending: set[asyncio.Task[None]] = set()
    settling: dict[str, tuple[asyncio.TimerHandle, CatalogError]] = {}
    """Recovery records waiting for their destination to stay up, by destination."""

    async def write(record: CatalogError) -> None:
        try:
            await error_log.report(record, None)
        except Exception as exc:  # the broker may be the thing that is down; the log line stays
            log.warning("could not write the outage to the error log",
                        extra={"code": record.code, "reason": type(exc).__name__})

    def spawn(record: CatalogError) -> None:
        task = asyncio.get_running_loop().create_task(write(record))
        pending.add(task)
        task.add_done_callback(pending.discard)

    def settled(destination: str) -> None:
        _, record = settling.pop(destination)
        spawn(record)

    def on_change(change: Change) -> None:
        if closed:
            return
        relapsed = change.relapse and change.destination in settling
        if change.destination == "klaviyo" and not _provider_reports(change):
            metrics.set_authorization_state(
                "unauthorized" if change.current is DestinationState.UNAUTHORIZED else "connected")
        if relapsed:  # the episode goes on: its recovery is not over, and it is no new outage
            handle, _ = settling.pop(change.destination)
            handle.cancel()
            return
        if change.previous is DestinationState.UP:
            metrics.DESTINATION_OUTAGES.labels(change.destination, change.current.value).inc()
        record = outage_record(change)
        if record is None:
            return
        if change.current is DestinationState.UP:
            previous = settling.pop(change.destination, None)
            if previous is not None:
                previous[0].cancel()
            handle = asyncio.get_running_loop().call_later(destinations.settle_s, settled, change.destination)
            settling[change.destination] = (handle, record)
        else:
            spawn(record)

    closed = False
    destinations.listen(on_change)
    try:
        yield
    finally:
        closed = True
        for destination in list(settling):
            settling[destination][0].cancel()
            settled(destination)
        if pending:
            _, late = await asyncio.wait(set(pending), timeout=_REPORT_TIMEOUT_S)
            for task in late:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

