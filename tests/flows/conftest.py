"""Fixtures for the flow handlers: the in-process Klaviyo simulator, a real client, a real event batcher, and a
flow context whose ``warn`` collects warnings in a list. Change events are decoded from JSON bytes, as the
dispatcher does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from consumer.catalog import CatalogError
from consumer.envelopes import decode
from consumer.flows.context import Change, FlowContext
from consumer.http.backoff import Backoff
from consumer.klaviyo import ApiKeyAuth, KlaviyoClient
from consumer.klaviyo.batching import EventBatcher
from consumer.mapping import MappingCollection, load_collections
from consumer.settings import KlaviyoSettings
from consumer.transfers import TransferRef
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator, SimulatorConfig, Spec
from tests.support.changes import change_of
from tests.support.sleeps import RecordedSleeps

FAST_BACKOFF = Backoff(base_s=0.01, cap_s=0.05)


@dataclass
class Warnings:
    """What the handlers recorded through ``ctx.warn``."""

    items: list[tuple[CatalogError, TransferRef]] = field(default_factory=list)

    async def __call__(self, error: CatalogError, transfer: TransferRef) -> None:
        self.items.append((error, transfer))

    @property
    def codes(self) -> list[str]:
        return [error.code for error, _ in self.items]


@pytest.fixture(scope="session")
async def shared_simulator(openapi_spec: Spec) -> AsyncIterator[KlaviyoSimulator]:
    """One simulator for the flow tests, validating request bodies against Klaviyo's contract."""
    sim = KlaviyoSimulator(SimulatorConfig(seed=7))
    sim.state.spec = openapi_spec
    async with sim:
        yield sim


@pytest.fixture
def simulator(shared_simulator: KlaviyoSimulator) -> KlaviyoSimulator:
    """The simulator, emptied for each test (profiles, events, requests, faults, quota)."""
    shared_simulator.reset()
    return shared_simulator


@pytest.fixture(scope="session")
async def shared_klaviyo(shared_simulator: KlaviyoSimulator) -> AsyncIterator[KlaviyoClient]:
    settings = KlaviyoSettings(
        base_url=shared_simulator.base_url, api_key=DEFAULT_API_KEY, connect_timeout_s=2.0, read_timeout_s=2.0,
        total_timeout_s=3.0, max_retries=3,
    )
    async with KlaviyoClient(settings, ApiKeyAuth(DEFAULT_API_KEY), backoff=FAST_BACKOFF,
                             retry_after_cap_s=0.05, sleep=RecordedSleeps()) as client:
        yield client


@pytest.fixture
def klaviyo(shared_klaviyo: KlaviyoClient, simulator: KlaviyoSimulator) -> KlaviyoClient:
    """A real client of the simulator (3 retries, backoff recorded rather than slept); one per session, as building
    one is slow."""
    return shared_klaviyo


@pytest.fixture(scope="session")
def mappings() -> dict[str, MappingCollection]:
    return load_collections()


MakeContext = Callable[..., FlowContext]


@pytest.fixture
def warnings() -> Warnings:
    return Warnings()


@pytest.fixture
async def events(klaviyo: KlaviyoClient) -> AsyncIterator[EventBatcher]:
    """The service's event batcher over the client (closed after the test)."""
    async with EventBatcher(klaviyo) as batcher:
        yield batcher


@pytest.fixture
def make_ctx(
    klaviyo: KlaviyoClient, events: EventBatcher, mappings: dict[str, MappingCollection], warnings: Warnings
) -> MakeContext:
    """A fresh context (its own, empty link cache: a restarted service) sharing the client, batcher and warnings."""

    def make(**overrides: Any) -> FlowContext:
        values: dict[str, Any] = {"klaviyo": klaviyo, "events": events, "mappings": mappings, "warn": warnings}
        values.update(overrides)
        return FlowContext(**values)

    return make


@pytest.fixture
def ctx(make_ctx: MakeContext) -> FlowContext:
    return make_ctx()


def change(kind: str, action: str, record: dict[str, Any]) -> Change[Any]:
    """The typed change a handler gets, decoded from a plain-JSON wrapper as the dispatcher gets it from Kafka."""
    value = orjson.dumps({"scope": f"{kind}/{action}", "data": record})
    (event,) = decode(kind, str(record.get("id")).encode(), value, [])  # type: ignore[arg-type]
    return change_of(event)


def customer(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "C1",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email_address": "ada@shop.test",
        "phone_number": "+1 (555) 234-5678",
        "company": "Analytical Engines",
        "addresses": [{
            "address_1": "12 St James's Sq", "city": "London", "region": "LND", "country": "GB",
            "postal_code": "SW1Y 4JH", "is_primary_billing": True,
        }],
    }
    base.update(overrides)
    return base


def line(sequence: int, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sequence_number": sequence, "sku": f"SKU-{sequence}", "description": f"Item {sequence}", "qty": "2",
        "unit_price": "5.00", "extended_price": "10.00",
    }
    base.update(overrides)
    return base


def transaction(**overrides: Any) -> dict[str, Any]:
    billing = {
        "first_name": "Ada", "last_name": "Lovelace", "address_1": "12 St James's Sq", "city": "London",
        "region": "LND", "country": "GB", "postal_code": "SW1Y 4JH", "phone_number": "+442071234567",
        "is_primary_billing": True, "is_primary_shipping": True,
    }
    base: dict[str, Any] = {
        "id": "T1",
        "transaction_number": "SO-1001",
        "customer_id": "C1",
        "email_address": "ada@shop.test",
        "total": "25.50",
        "discount_amount": "0",
        "created_datetime": "2025-03-04T05:06:07Z",
        "lines": [line(1), line(2, sku="SKU-2", description="Item 2", extended_price="15.50")],
        "addresses": [billing],
    }
    base.update(overrides)
    return base
