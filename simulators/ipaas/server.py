"""``IpaasSimulator``: the simulator as an in-process async context manager, and ``serve_forever``."""

from __future__ import annotations

import asyncio
from typing import Any

from simulators.ipaas.app import ReceivedRequest, SimulatorApp, SimulatorState
from simulators.ipaas.config import DEFAULT_TOKEN, Faults, SimulatorConfig
from simulators.ipaas.store import CustomerRow, Store
from simulators.scaffold import SimulatorServer


class IpaasSimulator(SimulatorServer):
    """An iPaaS.com look-alike HTTP server on ``host:port`` (port 0: a free one).

    ``async with IpaasSimulator() as sim`` starts it; ``sim.base_url`` is what a client points at (with
    ``sim.token``), and ``sim.state`` (``store``, ``requests``, ``faults``, ``config``) is the in-process admin
    handle.
    """

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.state = SimulatorState(self.config)
        super().__init__(SimulatorApp(self.state), host=host, port=port, max_body=self.config.max_body_bytes)

    @property
    def token(self) -> str:
        """A token the simulator accepts."""
        return DEFAULT_TOKEN if DEFAULT_TOKEN in self.config.tokens else next(iter(self.config.tokens))

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

    def seed_customer(self, addresses: list[dict[str, Any]] | None = None, *, customer_id: str | None = None,
                      **fields: Any) -> CustomerRow:
        """Create a Customer (and its addresses) directly in the store, under ``customer_id`` when given (a
        platform's own id, as the samples' transactions name it); returns its row."""
        row = self.store.create_customer(fields, customer_id=customer_id)
        for address in addresses or []:
            self.store.create_address(row.id, address)
        return row

    def customer(self, customer_id: str) -> dict[str, Any]:
        """A Customer as ``/__admin/state`` shows it (with ``addresses`` and ``version``)."""
        for document in self.store.snapshot()["customers"]:
            if document["id"] == customer_id:
                return dict(document)
        raise KeyError(customer_id)


async def serve_forever(host: str, port: int, config: SimulatorConfig | None = None) -> None:
    """Run a simulator until cancelled (``python -m simulators.ipaas``)."""
    async with IpaasSimulator(config, host=host, port=port) as simulator:
        print(f"iPaaS.com simulator listening on {simulator.base_url}", flush=True)
        await asyncio.Event().wait()
