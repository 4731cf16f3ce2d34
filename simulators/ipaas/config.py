"""iPaaS.com simulator configuration: accepted tokens, validation limits, an optional quota, fault injection."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field

from simulators.scaffold import Latency, TimedFaults

DEFAULT_TOKEN = "ipaas-sim-token-00000000000000000000"
"""The company API token the simulator accepts unless configured otherwise (not a secret: a test fixture)."""


@dataclass(slots=True)
class SimulatorConfig:
    """Everything the simulator enforces; mutable, so a test can change it while the server runs."""

    tokens: set[str] = field(default_factory=lambda: {DEFAULT_TOKEN})
    max_text_length: int = 255
    """Text fields longer than this are refused with a 400 validation problem (``comment``: 4000)."""
    max_comment_length: int = 4000
    require_email: bool = True
    """``email_address`` is required to create a Customer (the Klaviyo integration treats it as required)."""
    rate_limit_per_s: int | None = None
    """When set, a fixed one-second quota per token: ``RateLimit-*`` headers, and 429 + ``Retry-After`` beyond it."""
    max_body_bytes: int = 1024 * 1024
    max_recorded_requests: int = 10_000
    seed: int | None = None


class Faults(TimedFaults):
    """Fault injection, applied to API requests (never to ``/__admin``), for ``for_s`` seconds from when they are
    set or until cleared (``TimedFaults``).

    ``*_next`` counters are consumed request by request; rates are probabilities per request. ``fail_next``
    answers with those HTTP statuses (a ProblemDetails body; an HTML page for 502/504 or with ``html_errors``);
    ``non_json_next`` answers ``200`` with an HTML page instead of running the operation (a proxy that swallowed
    the request); ``garble_next`` runs the operation and then answers that HTML page (the write happened, the
    caller can't tell); ``hollow_next`` runs it and answers its success status with an empty body (iPaaS.com's
    own broken answer); ``unauthorized`` answers every request ``401`` whatever its token (the company's API token
    revoked or rotated). ``operations`` restricts faults (except latency) to those operation names.
    """

    latency: Latency = Field(default_factory=Latency)
    error_rates: dict[int, float] = Field(default_factory=dict)
    fail_next: list[int] = Field(default_factory=list)
    non_json_next: int = Field(0, ge=0)
    non_json_rate: float = Field(0.0, ge=0, le=1)
    garble_next: int = Field(0, ge=0)
    hollow_next: int = Field(0, ge=0)
    drop_next: int = Field(0, ge=0)
    drop_rate: float = Field(0.0, ge=0, le=1)
    hang_next: int = Field(0, ge=0)
    hang_s: float = Field(30.0, ge=0)
    html_errors: bool = False
    unauthorized: bool = False
    retry_after_s: int = Field(1, ge=0)
    operations: list[str] | None = None
