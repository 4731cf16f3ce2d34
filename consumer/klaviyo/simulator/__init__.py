"""A spec-faithful Klaviyo simulator: a real HTTP server on 127.0.0.1 for tests, benchmarks and local runs.

In-process: ``async with KlaviyoSimulator(SimulatorConfig(...)) as sim`` (``sim.base_url``, ``sim.state``).
Standalone: ``python -m consumer.klaviyo.simulator --port 8765`` (or ``serve_forever(host, port)``).
Admin over HTTP: ``/__admin/requests``, ``/__admin/faults``, ``/__admin/reset``, ``/__admin/profiles``,
``/__admin/events``, ``/__admin/stats``, ``/__admin/config``, ``/__admin/oauth``.
"""

from consumer.klaviyo.simulator.app import ReceivedRequest, SimulatorState
from consumer.klaviyo.simulator.config import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_OAUTH_CLIENT_ID,
    DEFAULT_OAUTH_CLIENT_SECRET,
    ApiKeyGrant,
    Faults,
    Latency,
    OAuthClient,
    SimulatorConfig,
)
from consumer.klaviyo.simulator.oauth import pkce_challenge
from consumer.klaviyo.simulator.server import KlaviyoSimulator, serve_forever
from consumer.klaviyo.simulator.spec import Spec, load_spec, spec_path

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_API_KEY",
    "DEFAULT_OAUTH_CLIENT_ID",
    "DEFAULT_OAUTH_CLIENT_SECRET",
    "ApiKeyGrant",
    "Faults",
    "KlaviyoSimulator",
    "Latency",
    "OAuthClient",
    "ReceivedRequest",
    "SimulatorConfig",
    "SimulatorState",
    "Spec",
    "load_spec",
    "pkce_challenge",
    "serve_forever",
    "spec_path",
]
