"""Fixtures for the Klaviyo client tests: a running simulator and a client pointed at it.

``openapi_spec`` (Klaviyo's contract) comes from ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from consumer.http.backoff import Backoff
from consumer.http.ratelimit import LimiterRegistry
from consumer.klaviyo import ApiKeyAuth, Auth, KlaviyoClient
from consumer.settings import KlaviyoSettings
from simulators.klaviyo import DEFAULT_API_KEY, KlaviyoSimulator, SimulatorConfig
from tests.support.sleeps import RecordedSleeps

FAST_BACKOFF = Backoff(base_s=0.01, cap_s=0.05)


@pytest.fixture
async def simulator() -> AsyncIterator[KlaviyoSimulator]:
    async with KlaviyoSimulator(SimulatorConfig(seed=1)) as sim:
        yield sim


def klaviyo_settings(sim: KlaviyoSimulator, **overrides: Any) -> KlaviyoSettings:
    values: dict[str, Any] = {
        "base_url": sim.base_url,
        "api_key": DEFAULT_API_KEY,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 5.0,
        "total_timeout_s": 10.0,
        "max_retries": 4,
    }
    values.update(overrides)
    return KlaviyoSettings(**values)


MakeClient = Callable[..., KlaviyoClient]


@pytest.fixture
async def make_client(simulator: KlaviyoSimulator, sleeps: RecordedSleeps) -> AsyncIterator[MakeClient]:
    """Build clients against the simulator (fast backoff, slept through ``sleeps``: recorded, not waited; the
    limiters keep real time, as the simulator's quota does); all are closed after the test."""
    clients: list[KlaviyoClient] = []

    def make(
        *, auth: Auth | None = None, sim: KlaviyoSimulator | None = None, limiters: LimiterRegistry | None = None,
        rate_limits: Any = None, backoff: Backoff = FAST_BACKOFF, **overrides: Any,
    ) -> KlaviyoClient:
        settings = klaviyo_settings(sim or simulator, **overrides)
        client = KlaviyoClient(
            settings, auth or ApiKeyAuth(settings.api_key or DEFAULT_API_KEY), rate_limits=rate_limits,
            limiters=limiters, backoff=backoff, sleep=sleeps,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: MakeClient) -> KlaviyoClient:
    return make_client()
