"""``KlaviyoSimulator``: the simulator as an in-process async context manager, and ``serve_forever``."""

from __future__ import annotations

import asyncio
import logging

from simulators.klaviyo.app import ReceivedRequest, SimulatorApp, SimulatorState
from simulators.klaviyo.config import Faults, SimulatorConfig
from simulators.klaviyo.spec import load_spec, spec_path
from simulators.klaviyo.store import Store
from simulators.scaffold import SimulatorServer

logger = logging.getLogger("simulators.klaviyo")


class KlaviyoSimulator(SimulatorServer):
    """A Klaviyo look-alike HTTP server on ``host:port`` (port 0: a free one).

    ``async with KlaviyoSimulator() as sim`` starts it; ``sim.base_url`` is what a client points at, and
    ``sim.state`` (``store``, ``requests``, ``faults``, ``config``, ``oauth``) is the in-process admin handle.
    """

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.state = SimulatorState(self.config)
        super().__init__(SimulatorApp(self.state), host=host, port=port, max_body=self.config.max_body_bytes)

    async def start(self) -> None:
        if self.config.validate_bodies and self.state.spec is None:
            path = spec_path(self.config.spec_path)
            self.state.spec = await asyncio.to_thread(load_spec, path)
            if self.state.spec is None:
                logger.warning("Klaviyo OpenAPI spec not found at %s; request bodies get structural checks only", path)
        await super().start()

    # --- in-process admin shortcuts ------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.state.faults = faults

    def received(self, operation: str | None = None) -> list[ReceivedRequest]:
        """Requests received so far, optionally of one operation."""
        return self.state.received(operation)

    def reset(self) -> None:
        self.state.reset()


async def serve_forever(host: str, port: int, config: SimulatorConfig | None = None) -> None:
    """Run a simulator until cancelled (``ipaas-klaviyo simulate klaviyo``)."""
    async with KlaviyoSimulator(config, host=host, port=port) as simulator:
        logger.info("Klaviyo simulator listening on %s", simulator.base_url)
        await asyncio.Event().wait()
