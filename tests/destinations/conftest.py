"""Destination outages end to end: the service on the real broker, the simulators in front of it misbehaving.

Helpers: the simulators, settings pointing at them, change records of customers and transactions, what the
simulators hold once everything went through, and ``Watch``, which timestamps every destination change and
finished record so a test awaits the outage, the recovery and the records instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from consumer.destinations import Change, DestinationState
from consumer.failures.errorlog import read_error_log
from consumer.klaviyo import Profile
from consumer.poller import change_record
from consumer.runtime import InboundMessage
from simulators.ipaas import IpaasSimulator
from simulators.ipaas import SimulatorConfig as IpaasConfig
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator, SimulatorConfig, Spec
from tests.support.kafka import end_offsets, group_offsets
from tests.support.service import RunningService, service_settings


@pytest.fixture
async def klaviyo_sim(openapi_spec: Spec) -> AsyncIterator[KlaviyoSimulator]:
    """Klaviyo, validating every request body against its contract; no quota (the tests send bursts)."""
    sim = KlaviyoSimulator(SimulatorConfig(seed=11, rate_limits_enabled=False))
    sim.state.spec = openapi_spec
    async with sim:
        yield sim


@pytest.fixture
async def ipaas_sim() -> AsyncIterator[IpaasSimulator]:
    async with IpaasSimulator(IpaasConfig(seed=11)) as sim:
        yield sim


def settings_for(kafka_bootstrap: str, unique: str, klaviyo: KlaviyoSimulator, *,
                 ipaas: IpaasSimulator | None = None, api_key: str | None = DEFAULT_API_KEY, **overrides: Any) -> Any:
    """Service settings on the simulators: one retry per call, two attempts per record, no client-side quota."""
    klaviyo_settings = {"base_url": klaviyo.base_url, "max_retries": 1, "rate_limit": False,
                        "connect_timeout_s": 2.0, "read_timeout_s": 5.0, "total_timeout_s": 10.0}
    if api_key is not None:
        klaviyo_settings["api_key"] = api_key
    values: dict[str, Any] = {"runtime": {"retry_attempts": 2}, "klaviyo": klaviyo_settings}
    if ipaas is not None:
        values["ipaas"] = {"base_url": ipaas.base_url, "api_token": ipaas.token, "max_retries": 1}
    for name, value in overrides.items():
        values[name] = {**values.get(name, {}), **value} if isinstance(value, dict) else value
    return service_settings(kafka_bootstrap, unique, **values)


# --- change records ------------------------------------------------------------------------------------------------
def customer_change(cid: str, version: int, **fields: Any) -> tuple[Any, ...]:
    """A Customer change as iPaaS.com's hook sends it: version 0 creates, later versions update."""
    created = version == 0
    record = {"id": cid, "first_name": "Ada", "last_name": f"v{version}", "email_address": f"{cid}@example.com",
              **fields}
    scope = "customer/created" if created else "customer/updated"
    return (cid.encode(), orjson.dumps(record), [("scope", scope.encode())])


def transaction_change(tid: str, customer_id: str) -> tuple[Any, ...]:
    """A Transaction (two lines) as a Debezium change: a Placed Order and two Ordered Product events."""
    record = {
        "id": tid, "transaction_number": f"SO-{tid}", "customer_id": customer_id, "total": 1250,
        "email_address": f"{customer_id}@example.com", "created_datetime": "2026-11-27T10:00:00Z",
        "lines": [
            {"sequence_number": 1, "sku": "ENG-1", "description": "Engine", "qty": 1, "unit_price": 1200,
             "extended_price": 1200},
            {"sequence_number": 2, "sku": "CARD-50", "description": "Cards", "qty": 2, "unit_price": 25,
             "extended_price": 50},
        ],
    }
    document = {"schema": {"type": "struct"},
                "payload": {"before": None, "after": record, "op": "c", "ts_ms": 1_795_000_000_000}}
    return (tid.encode(), orjson.dumps(document))


def klaviyo_profile_change(profile_id: str, email: str) -> tuple[Any, ...]:
    """A new Klaviyo profile as the poller publishes it (its document: the TO flows need no call to Klaviyo)."""
    profile = Profile.model_validate({"type": "profile", "id": profile_id, "attributes": {
        "email": email, "first_name": "Kla", "last_name": "Viyo",
        "created": "2026-11-27T10:00:00+00:00", "updated": "2026-11-27T10:00:00+00:00"}})
    return change_record(profile)


# --- what arrived --------------------------------------------------------------------------------------------------
def profiles_by_external_id(sim: KlaviyoSimulator) -> dict[str, dict[str, Any]]:
    return {str(p.attributes.get("external_id")): p.attributes for p in sim.store.profiles.values()}


def event_ids(sim: KlaviyoSimulator) -> set[tuple[str, str | None]]:
    return {(e.metric_name, e.unique_id) for e in sim.store.events}


def expected_events(transactions: list[str]) -> set[tuple[str, str | None]]:
    return {pair for tid in transactions for pair in (
        ("Placed Order", tid), ("Ordered Product", f"{tid}:1:ENG-1"), ("Ordered Product", f"{tid}:2:CARD-50"))}


async def assert_everything_committed(svc: RunningService, *logical_topics: str, timeout_s: float = 10.0) -> None:
    """The group commits every partition of the topics to its end (the runtime commits every
    ``commit_interval_s``): nothing is left to be read again."""
    bootstrap = svc.settings.kafka.bootstrap_servers
    ends: dict[Any, int] = {}
    for logical in logical_topics:
        ends.update(await end_offsets(bootstrap, svc.topic(logical), svc.catalog.topics[logical].partitions))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        committed = await group_offsets(bootstrap, svc.settings.kafka.group_id)
        behind = {tp: (committed.get(tp, 0), end) for tp, end in ends.items() if committed.get(tp, 0) != end}
        if not behind or loop.time() > deadline:
            break
        await asyncio.sleep(svc.settings.runtime.commit_interval_s)  # the next commit is due by then
    assert not behind, f"not committed to the end (committed, end): {behind}"


async def error_log(svc: RunningService) -> list[dict[str, Any]]:
    """Every error-log record, read to the end of the topic."""
    return [entry.record for entry in await read_error_log(svc.settings.kafka, svc.topic("error-log"))]


def gauge(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# --- awaiting what the service does --------------------------------------------------------------------------------
@dataclass
class Watch:
    """Every destination change and finished record of a running service, with when it happened."""

    changes: list[tuple[float, Change]] = field(default_factory=list)
    finished: list[tuple[float, InboundMessage, str]] = field(default_factory=list)
    _moved: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def on(cls, svc: RunningService) -> Watch:
        runtime = svc.service.runtime
        assert runtime is not None
        watch = cls()
        runtime.destinations.listen(watch._changed)
        runtime.on_finished(watch._finished)
        return watch

    def _changed(self, change: Change) -> None:
        self.changes.append((time.monotonic(), change))
        self._moved.set()

    def _finished(self, message: InboundMessage, outcome: str) -> None:
        self.finished.append((time.monotonic(), message, outcome))
        self._moved.set()

    async def until(self, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Return once ``condition()`` holds (checked on every change and finished record)."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._moved.clear()
                await self._moved.wait()

    def states(self, destination: str) -> list[DestinationState]:
        """The states ``destination`` went through, in order."""
        return [change.current for _, change in self.changes if change.destination == destination]

    def _entered(self, destination: str, state: DestinationState, after: float) -> float | None:
        return next((at for at, change in self.changes
                     if at >= after and change.destination == destination and change.current is state), None)

    async def state(self, destination: str, state: DestinationState, *, after: float = 0.0,
                    timeout_s: float = 60.0) -> float:
        """Wait until ``destination`` entered ``state`` at or after ``after`` (``time.monotonic()``); returns when."""
        await self.until(lambda: self._entered(destination, state, after) is not None, timeout_s)
        entered = self._entered(destination, state, after)
        assert entered is not None
        return entered

    async def count(self, count: int, timeout_s: float = 60.0) -> None:
        """Wait until ``count`` records finished in total."""
        await self.until(lambda: len(self.finished) >= count, timeout_s)

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, outcome in self.finished:
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def first_finished_after(self, moment: float) -> float | None:
        return next((at for at, _, _ in self.finished if at >= moment), None)
