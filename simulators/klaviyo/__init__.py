"""A spec-faithful Klaviyo simulator: a real HTTP server on 127.0.0.1 for tests, benchmarks and local runs.

In-process: ``async with KlaviyoSimulator(SimulatorConfig(...)) as sim`` (``sim.base_url``, ``sim.state``).
Standalone: ``python -m simulators.klaviyo --port 8765`` (or ``serve_forever(host, port)``).
Admin over HTTP: ``/__admin/requests``, ``/__admin/faults``, ``/__admin/reset``, ``/__admin/profiles``,
``/__admin/events``, ``/__admin/stats``, ``/__admin/config``, ``/__admin/oauth``.
"""

from simulators.klaviyo.app import ReceivedRequest, SimulatorState
from simulators.klaviyo.config import (
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
from simulators.klaviyo.oauth import pkce_challenge
from simulators.klaviyo.server import KlaviyoSimulator, serve_forever
from simulators.klaviyo.spec import Spec, load_spec, spec_path

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
