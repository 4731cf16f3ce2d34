"""The Klaviyo simulator under test, and raw-HTTP access to it (no Klaviyo client in between)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator, SimulatorConfig

HEADERS = {
    "authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}",
    "revision": "2026-07-15",
    "content-type": "application/vnd.api+json",
    "accept": "application/vnd.api+json",
}


@pytest.fixture
async def simulator() -> AsyncIterator[KlaviyoSimulator]:
    async with KlaviyoSimulator(SimulatorConfig(seed=1)) as sim:
        yield sim


@pytest.fixture
async def http(simulator: KlaviyoSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.base_url, headers=HEADERS) as client:
        yield client


def body(document: Any) -> bytes:
    return orjson.dumps(document)


def profile_body(**attributes: Any) -> bytes:
    return body({"data": {"type": "profile", "attributes": attributes}})


def event_body(email: str = "e@shop.test", **attributes: Any) -> bytes:
    attrs = {"properties": {}, "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
             "profile": {"data": {"type": "profile", "attributes": {"email": email}}}}
    attrs.update(attributes)
    return body({"data": {"type": "event", "attributes": attrs}})
