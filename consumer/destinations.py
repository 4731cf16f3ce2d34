"""Destination health: whether Klaviyo and iPaaS.com can take work now, and what brings them back.

A failure that blames a destination (``IntegrationError.outage``) moves it out of ``up`` once per episode
(``down``, ``unauthorized`` or ``misconfigured``). The runtime then pauses the sources that need it (their
routes say so) and parks their waiting records without spending attempts. While it is out, a probe (a cheap,
read-only call) runs every ``probe_min_s`` growing to ``probe_max_s``; the first probe that succeeds brings the
destination back and wakes every record waiting for it. Listeners hear each change once (metrics, logs, the
error log's outage and recovery records); while an episode lasts, one summary line is logged a minute.

A probe only reads: when the records' own calls keep failing although it succeeds (a proxy that answers the
writes only, a WAF), the destination fails again right after it came back. Within ``settle_s`` of a recovery
that is a *relapse*: the same episode goes on (its start, its count of waiting records, the probe's growing
interval), and listeners are told (``Change.relapse``), so an episode is reported once however often it flaps.

Without a probe (a destination nobody registered one for) the destination is tried again after the same
delays ("half-open"): the records waiting for it go, and the next failure starts a new wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from consumer.errors import IntegrationError, Outage

log = logging.getLogger("consumer.destinations")

Probe = Callable[[], Awaitable[None]]
"""Returns when the destination answers as it should; raises otherwise."""

UNNAMED = "unnamed"
SUMMARY_EVERY_S = 60.0
SETTLE_S = 10.0
"""A failure within this long of a recovery is a relapse of the same episode."""


class DestinationState(StrEnum):
    UP = "up"
    DOWN = "down"
    UNAUTHORIZED = "unauthorized"
    MISCONFIGURED = "misconfigured"


_STATE_OF = {
    Outage.DOWN: DestinationState.DOWN,
    Outage.UNAUTHORIZED: DestinationState.UNAUTHORIZED,
    Outage.MISCONFIGURED: DestinationState.MISCONFIGURED,
}


@dataclass(frozen=True, slots=True)
class Change:
    """One state change of a destination, as listeners hear it."""

    destination: str
    previous: DestinationState
    current: DestinationState
    detail: str
    since: datetime
    """When the episode began (for a recovery: when the outage began)."""
    duration_s: float = 0.0
    """For a recovery: how long the outage lasted."""
    waited: int = 0
    """For a recovery: how many records waited for the destination during the outage."""
    error: IntegrationError | None = None
    """For an outage: the failure that began it."""
    relapse: bool = False
    """For an outage: it failed again within ``settle_s`` of a recovery, the episode of ``since`` goes on."""
    relapses: int = 0
    """For a recovery: how often the episode relapsed so far."""


Listener = Callable[[Change], None]


class Destination:
    """The health of one destination."""

    def __init__(
        self, name: str, probe: Probe | None, notify: Callable[[Change], None], *,
        probe_min_s: float, probe_max_s: float, settle_s: float = SETTLE_S,
    ) -> None:
        self.name = name
        self.probe = probe
        self._notify = notify
        self._probe_min_s = probe_min_s
        self._probe_max_s = probe_max_s
        self._settle_s = settle_s
        self._interval = probe_min_s
        self._recovered_at: float | None = None
        self._relapses = 0
        self.state = DestinationState.UP
        self.detail = ""
        self.since = datetime.now(UTC)
        self._started = time.monotonic()
        self._up = asyncio.Event()
        self._up.set()
        self._waited = 0
        self._waiting = 0
        self._prober: asyncio.Task[None] | None = None
        self._probe_now = asyncio.Event()

    @property
    def available(self) -> bool:
        return self.state is DestinationState.UP

    @property
    def waiting(self) -> int:
        """Records parked until this destination is back."""
        return self._waiting

    def fail(self, error: IntegrationError) -> None:
        """The destination failed (``error.outage`` says how); the first failure of an episode is announced."""
        state = _STATE_OF[error.outage] if error.outage is not None else DestinationState.DOWN
        previous = self.state
        detail = error.message
        if previous is state:
            self.detail = detail
            return
        self.state = state
        self.detail = detail
        relapse = False
        if previous is DestinationState.UP:
            relapse = self._recovered_at is not None and time.monotonic() - self._recovered_at < self._settle_s
            if relapse:  # the probe's success did not hold: the same episode, probed less often
                self._relapses += 1
                self._interval = min(self._probe_max_s, self._interval * 2)
            else:
                self.since = datetime.now(UTC)
                self._started = time.monotonic()
                self._waited = 0
                self._relapses = 0
                self._interval = self._probe_min_s
            self._up.clear()
        self._notify(Change(self.name, previous, state, detail, self.since, error=error, relapse=relapse))
        self._ensure_prober()

    def recovered(self) -> None:
        if self.state is DestinationState.UP:
            return
        previous = self.state
        self.state = DestinationState.UP
        self._recovered_at = time.monotonic()
        duration = self._recovered_at - self._started
        self._up.set()
        self._notify(Change(self.name, previous, DestinationState.UP, self.detail, self.since,
                            duration_s=duration, waited=self._waited, relapses=self._relapses))
        self.detail = ""

    def probe_soon(self) -> None:
        """Probe now rather than at the next interval (e.g. new credentials were stored)."""
        self._probe_now.set()

    async def wait_up(self) -> None:
        """Return once the destination is available (at once when it is)."""
        if self._up.is_set():
            return
        self._waiting += 1
        self._waited += 1
        try:
            await self._up.wait()
        finally:
            self._waiting -= 1

    def _ensure_prober(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        while self.state is not DestinationState.UP:
            self._probe_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probe_now.wait(), self._interval)
            if self.state is DestinationState.UP:
                return
            if self.probe is None:
                self.recovered()  # half-open: let the waiting records try
                return
            try:
                await self.probe()
            except asyncio.CancelledError:
                raise
            except IntegrationError as error:
                if error.outage is not None:
                    self.fail(error)
                else:
                    self.recovered()  # it answers as the API does; the refusal was the probe's own business
                    return
            except Exception as error:
                self.detail = f"probe failed: {type(error).__name__}"
            else:
                self.recovered()
                return
            self._interval = min(self._probe_max_s, self._interval * 2)
            if time.monotonic() >= next_summary:
                next_summary = time.monotonic() + SUMMARY_EVERY_S
                log.warning("destination still unavailable", extra={
                    "destination": self.name, "state": self.state.value,
                    "for_s": round(time.monotonic() - self._started, 1), "waiting": self._waiting,
                    "detail": self.detail})

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None


class Destinations:
    """Every destination's health, with the probes that bring them back."""

    def __init__(
        self, probes: Mapping[str, Probe] | None = None, *, probe_min_s: float = 0.5, probe_max_s: float = 2.0,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._probes = dict(probes or {})
        self._probe_min_s = probe_min_s
        self._probe_max_s = probe_max_s
        self.settle_s = settle_s
        self._destinations: dict[str, Destination] = {}
        self._listeners: list[Listener] = []
        for name in self._probes:
            self[name]

    def __getitem__(self, name: str) -> Destination:
        destination = self._destinations.get(name)
        if destination is None:
            destination = self._destinations[name] = Destination(
                name, self._probes.get(name), self._announce,
                probe_min_s=self._probe_min_s, probe_max_s=self._probe_max_s, settle_s=self.settle_s)
        return destination

    def __iter__(self) -> Iterator[Destination]:
        return iter(list(self._destinations.values()))

    def add_probe(self, name: str, probe: Probe) -> None:
        self._probes[name] = probe
        self[name].probe = probe

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def available(self, name: str) -> bool:
        destination = self._destinations.get(name)
        return destination is None or destination.available

    def unavailable(self) -> dict[str, DestinationState]:
        return {d.name: d.state for d in self._destinations.values() if not d.available}

    def report(self, error: IntegrationError) -> Destination:
        """A failure that blames a destination: mark it (once per episode) and return it."""
        destination = self[error.destination or UNNAMED]
        destination.fail(error)
        return destination

    def _announce(self, change: Change) -> None:
        if change.current is DestinationState.UP:
            log.log(logging.INFO if change.relapses else logging.WARNING, "destination available again", extra={
                "destination": change.destination, "after_s": round(change.duration_s, 1),
                "records_waited": change.waited})
        elif change.relapse:
            log.info("destination failed again right after it came back; the outage goes on", extra={
                "destination": change.destination, "state": change.current.value, "detail": change.detail})
        else:
            log.warning("destination unavailable; sources that need it are paused", extra={
                "destination": change.destination, "state": change.current.value, "detail": change.detail})
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # a listener's bug must not stop the others
                log.exception("destination listener failed")

    async def aclose(self) -> None:
        for destination in list(self._destinations.values()):
            await destination.aclose()
