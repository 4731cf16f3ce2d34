"""Simulator configuration: credentials, quotas, policies, and fault injection."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from consumer.klaviyo.ratelimits import EndpointLimit, resolve_limits
from simulators.klaviyo.store import ImportPace
from simulators.scaffold import Latency, TimedFaults

DEFAULT_ACCOUNT = "sim-account"
# "pk_" + 34 alphanumerics, like a real private key.
DEFAULT_API_KEY = "pk_simulator0000000000000000000000000"
DEFAULT_OAUTH_CLIENT_ID = "sim-oauth-client"
DEFAULT_OAUTH_CLIENT_SECRET = "sim-oauth-secret"
REVISION = "2026-07-15"


@dataclass(frozen=True, slots=True)
class ApiKeyGrant:
    """A private key the simulator accepts: its account and scopes (None = every scope)."""

    account: str = DEFAULT_ACCOUNT
    scopes: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A registered OAuth app. Empty ``redirect_uris`` accepts any loopback (127.0.0.1/localhost) URI."""

    client_secret: str
    redirect_uris: tuple[str, ...] = ()
    scopes: frozenset[str] | None = None


@dataclass(slots=True)
class SimulatorConfig:
    """Everything the simulator enforces; mutable, so a test can change it while the server runs."""

    api_keys: dict[str, ApiKeyGrant] = field(default_factory=lambda: {DEFAULT_API_KEY: ApiKeyGrant()})
    oauth_clients: dict[str, OAuthClient] = field(
        default_factory=lambda: {DEFAULT_OAUTH_CLIENT_ID: OAuthClient(DEFAULT_OAUTH_CLIENT_SECRET)}
    )
    oauth_account: str = DEFAULT_ACCOUNT
    access_token_ttl_s: float = 3600.0
    authorization_code_ttl_s: float = 600.0
    rotate_refresh_tokens: bool = False
    rate_limits_enabled: bool = True
    rate_limits: dict[str, EndpointLimit] = field(default_factory=resolve_limits)
    send_retry_after: bool = True
    revisions: tuple[str, ...] = (REVISION,)
    require_revision: bool = True
    validate_bodies: bool = True
    spec_path: Path | None = None
    max_body_bytes: int = 5 * 1024 * 1024
    max_bulk_event_bytes: int = 5_000_000
    """Klaviyo's cap on a bulk event job's payload ("5MB"; read as decimal megabytes, the stricter reading)."""
    max_profile_bytes: int = 100 * 1024
    max_bulk_import_bytes: int = 5_000_000
    """Klaviyo's cap on a bulk profile import job's payload ("5MB", read as decimal megabytes like the events')."""
    import_pace: ImportPace | None = None
    """How bulk profile import jobs move: None, one step each time the job is read (queued -> processing ->
    complete: every state seen, whatever the timing); else with time, at this pace, read or not."""
    max_recorded_requests: int = 10_000
    seed: int | None = None

    def with_limits(self, overrides: dict[str, EndpointLimit]) -> SimulatorConfig:
        """This config with some endpoint-class limits replaced."""
        self.rate_limits = resolve_limits({**self.rate_limits, **overrides})
        return self


class Faults(TimedFaults):
    """Fault injection, applied to API and OAuth requests (never to ``/__admin``), for ``for_s`` seconds from
    when they are set or until cleared (``TimedFaults``).

    ``*_next`` counters are consumed request by request; rates are probabilities per request. ``error_rates``
    maps an HTTP status to its probability. 502, 504 and 524 are always answered with an HTML page (like the
    CDN in front of Klaviyo), and every injected error is when ``html_errors`` is set. ``operations``
    restricts faults (except latency) to those operation ids (the OAuth ones are ``oauth_authorize``,
    ``oauth_token`` and ``oauth_revoke``).

    What stands between the caller and Klaviyo, while they apply:

    - ``captive_portal``: every request is answered ``200`` with an HTML page (a captive portal, a proxy's
      login page); the request never reaches Klaviyo, so nothing it asked for happens;
    - ``redirect_to``: every request is answered ``301 Moved Permanently`` to ``<redirect_to><path>`` (e.g. a
      proxy sending ``https`` to an ``http://`` URL), with a small HTML body, as web servers do;
    - ``unauthorized``: every API request is answered ``401 authentication_failed`` whatever its credential
      (the account's keys or the app's tokens all refused: a 401 storm); the OAuth endpoints are not affected.

    And a broken answer of Klaviyo's own: ``hollow_next`` requests are carried out, then answered with their
    success status and an empty body (a create made its profile, the caller never sees it).
    """

    latency: Latency = Field(default_factory=Latency)
    error_rates: dict[int, float] = Field(default_factory=dict)
    fail_next: list[int] = Field(default_factory=list)
    drop_rate: float = Field(0.0, ge=0, le=1)
    drop_next: int = Field(0, ge=0)
    hang_rate: float = Field(0.0, ge=0, le=1)
    hang_next: int = Field(0, ge=0)
    hang_s: float = Field(30.0, ge=0)
    html_errors: bool = False
    challenge_next: int = Field(0, ge=0)
    captive_portal: bool = False
    redirect_to: str | None = None
    unauthorized: bool = False
    hollow_next: int = Field(0, ge=0)
    omit_error_sources: bool = False
    """Answer the operation's own errors (validation, conflicts) without ``source``: no pointer into the request."""
    operations: list[str] | None = None
