"""The iPaaS.com simulator under test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators.ipaas import IpaasSimulator, SimulatorConfig


@pytest.fixture
async def ipaas_sim() -> AsyncIterator[IpaasSimulator]:
    async with IpaasSimulator(SimulatorConfig(seed=1)) as sim:
        yield sim
