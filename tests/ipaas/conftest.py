"""Fixtures for the iPaaS.com client and simulator tests: a running simulator and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from consumer.http.backoff import Backoff
from consumer.ipaas import IpaasClient
from consumer.settings import IpaasSettings
from simulators.ipaas import IpaasSimulator, SimulatorConfig
from tests.support.sleeps import RecordedSleeps

FAST_BACKOFF = Backoff(base_s=0.01, cap_s=0.05)


def ipaas_settings(sim: IpaasSimulator, **overrides: Any) -> IpaasSettings:
    values: dict[str, Any] = {
        "base_url": sim.base_url,
        "api_token": sim.token,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 5.0,
        "total_timeout_s": 10.0,
        "max_retries": 4,
    }
    values.update(overrides)
    return IpaasSettings(**values)


@pytest.fixture
async def ipaas_sim() -> AsyncIterator[IpaasSimulator]:
    async with IpaasSimulator(SimulatorConfig(seed=1)) as sim:
        yield sim


MakeIpaas = Callable[..., IpaasClient]


@pytest.fixture
async def make_ipaas(ipaas_sim: IpaasSimulator, sleeps: RecordedSleeps) -> AsyncIterator[MakeIpaas]:
    """Build clients against the simulator (fast backoff, slept through ``sleeps``: recorded, not waited; the
    limiters keep real time); all are closed after the test."""
    clients: list[IpaasClient] = []

    def make(*, sim: IpaasSimulator | None = None, backoff: Backoff = FAST_BACKOFF, token: str | None = None,
             **overrides: Any) -> IpaasClient:
        settings = ipaas_settings(sim or ipaas_sim, **overrides)
        client = IpaasClient(settings, token=token, backoff=backoff, sleep=sleeps)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def ipaas(make_ipaas: MakeIpaas) -> IpaasClient:
    return make_ipaas()
