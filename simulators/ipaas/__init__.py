"""An iPaaS.com simulator: a real HTTP server on 127.0.0.1 for tests, benchmarks and the demo.

In-process: ``async with IpaasSimulator(SimulatorConfig(...)) as sim`` (``sim.base_url``, ``sim.token``,
``sim.state``). Standalone: ``python -m simulators.ipaas --port 8766`` (or ``serve_forever(host, port)``).

It serves the paths of iPaaS.com's public API (its help articles and the integration template's
``IPaaSApiCallWrapper``; snake_case JSON, Bearer auth, 401 without it): Customers (unique id, email not unique;
search ``action=equals|contains``), Customer Addresses as children, external-id links (``UpdateExternalId``,
``LookupSpecial``, ``LookupExternal``; deleted links read ``DELETED:...``) and Transactions (seeded through the
admin API). Validation failures answer an ASP.NET ProblemDetails body. Admin over HTTP: ``/__admin/requests``,
``/__admin/faults``, ``/__admin/reset``, ``/__admin/state``, ``/__admin/stats``, ``/__admin/customers`` (GET, POST
to seed; DELETE ``/{id}``), ``/__admin/transactions`` (POST), ``/__admin/external-ids``.
"""

from simulators.ipaas.app import ReceivedRequest, SimulatorState
from simulators.ipaas.config import DEFAULT_TOKEN, Faults, Latency, SimulatorConfig
from simulators.ipaas.server import IpaasSimulator, serve_forever
from simulators.ipaas.store import ApiError, Store

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "Faults",
    "IpaasSimulator",
    "Latency",
    "ReceivedRequest",
    "SimulatorConfig",
    "SimulatorState",
    "Store",
    "serve_forever",
]
