"""Klaviyo's endpoint classes: the operations the service uses, with their burst/steady limits and scopes.

Numbers come from the OpenAPI spec's ``x-klaviyo-ratelimit`` (revision 2026-07-15); the contract tests check
this table against the spec. Limits are counted per account (per app installation for OAuth) and per
operation; ``include``/``additional-fields`` variants add a stricter counter of their own (``EXTRA_LIMITS``).
The client's limiter and the simulator both read this table, and both accept overrides for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from consumer.http.ratelimit import Window


@dataclass(frozen=True, slots=True)
class EndpointLimit:
    """Burst and steady quota of one endpoint class. Window lengths are 1 s and 60 s at Klaviyo."""

    burst: int
    steady: int
    burst_window_s: float = 1.0
    steady_window_s: float = 60.0

    def windows(self) -> tuple[Window, Window]:
        return Window(self.burst, self.burst_window_s), Window(self.steady, self.steady_window_s)

    def scaled(self, factor: float) -> EndpointLimit:
        """The same windows with ``factor`` times the quota (at least 1)."""
        return replace(self, burst=max(1, round(self.burst * factor)), steady=max(1, round(self.steady * factor)))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Klaviyo operation (``operation`` is the spec's operationId)."""

    operation: str
    method: str
    path: str
    limit: EndpointLimit
    scopes: tuple[str, ...]
    success: tuple[int, ...] = (200,)
    """The statuses the spec documents as this operation's success (anything else is not Klaviyo's success)."""


PROFILES = EndpointLimit(75, 750)
EVENTS = EndpointLimit(350, 3500)
JOBS = EndpointLimit(10, 150)

ENDPOINTS: dict[str, Endpoint] = {
    e.operation: e
    for e in (
        Endpoint("get_profiles", "GET", "/api/profiles", PROFILES, ("profiles:read",)),
        Endpoint("create_profile", "POST", "/api/profiles", PROFILES, ("profiles:write",), (201,)),
        Endpoint("get_profile", "GET", "/api/profiles/{id}", PROFILES, ("profiles:read",)),
        Endpoint("update_profile", "PATCH", "/api/profiles/{id}", PROFILES, ("profiles:write",)),
        Endpoint("create_or_update_profile", "POST", "/api/profile-import", PROFILES, ("profiles:write",), (200, 201)),
        Endpoint("create_event", "POST", "/api/events", EVENTS, ("events:write",), (202,)),
        Endpoint("get_events", "GET", "/api/events", EVENTS, ("events:read",)),
        Endpoint("bulk_create_events", "POST", "/api/event-bulk-create-jobs", JOBS, ("events:write",), (202,)),
        Endpoint(
            "bulk_import_profiles", "POST", "/api/profile-bulk-import-jobs", JOBS, ("lists:write", "profiles:write"),
            (202,),
        ),
        Endpoint(
            "get_bulk_import_profiles_job",
            "GET",
            "/api/profile-bulk-import-jobs/{job_id}",
            JOBS,
            ("lists:read", "profiles:read"),
        ),
        Endpoint(
            "get_errors_for_bulk_import_profiles_job",
            "GET",
            "/api/profile-bulk-import-jobs/{id}/import-errors",
            JOBS,
            ("profiles:read",),
        ),
        Endpoint(
            "bulk_subscribe_profiles", "POST", "/api/profile-subscription-bulk-create-jobs", PROFILES,
            ("lists:write", "profiles:write", "subscriptions:write"), (202,),
        ),
        Endpoint(
            "bulk_unsubscribe_profiles", "POST", "/api/profile-subscription-bulk-delete-jobs", PROFILES,
            ("lists:write", "profiles:write", "subscriptions:write"), (202,),
        ),
        Endpoint("get_lists", "GET", "/api/lists", PROFILES, ("lists:read",)),
        Endpoint(
            "add_profiles_to_list", "POST", "/api/lists/{id}/relationships/profiles", JOBS,
            ("lists:write", "profiles:write"), (204,),
        ),
        Endpoint(
            "remove_profiles_from_list", "DELETE", "/api/lists/{id}/relationships/profiles", JOBS,
            ("lists:write", "profiles:write"), (204,),
        ),
    )
}

# Extra counters charged on top of the operation's own when a request uses these parameters.
GET_PROFILE_INCLUDE = "get_profile:include"
GET_PROFILES_PREDICTIVE = "get_profiles:predictive_analytics"
EXTRA_LIMITS: dict[str, EndpointLimit] = {
    GET_PROFILE_INCLUDE: EndpointLimit(1, 15),
    GET_PROFILES_PREDICTIVE: EndpointLimit(10, 150),
}

DEFAULT_LIMITS: dict[str, EndpointLimit] = {
    **{name: endpoint.limit for name, endpoint in ENDPOINTS.items()},
    **EXTRA_LIMITS,
}


def resolve_limits(overrides: Mapping[str, EndpointLimit] | None = None) -> dict[str, EndpointLimit]:
    """The limit of every endpoint class, with ``overrides`` (by class name) replacing the defaults."""
    limits = dict(DEFAULT_LIMITS)
    if overrides:
        unknown = set(overrides) - set(limits)
        if unknown:
            raise ValueError(f"unknown Klaviyo endpoint classes: {sorted(unknown)}")
        limits.update(overrides)
    return limits


def uniform_limits(limit: EndpointLimit) -> dict[str, EndpointLimit]:
    """Every endpoint class with the same limit (tests and benchmarks)."""
    return dict.fromkeys(DEFAULT_LIMITS, limit)
