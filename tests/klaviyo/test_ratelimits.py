"""The endpoint-class table, checked against the spec."""

from __future__ import annotations

import pytest

from consumer.klaviyo.ratelimits import (
    DEFAULT_LIMITS,
    ENDPOINTS,
    EndpointLimit,
    resolve_limits,
    uniform_limits,
)
from simulators.klaviyo import Spec


def test_table_matches_the_spec(openapi_spec: Spec) -> None:
    for name, endpoint in ENDPOINTS.items():
        method, path, _ = openapi_spec.operations[name]
        assert (method, path) == (endpoint.method, endpoint.path), name
        assert openapi_spec.rate_limit(name) == (endpoint.limit.burst, endpoint.limit.steady), name
        assert openapi_spec.scopes(name) == endpoint.scopes, name


def test_overrides_and_scaling() -> None:
    small = EndpointLimit(5, 30, 0.5)
    limits = resolve_limits({"create_event": small})
    assert limits["create_event"] == small and limits["get_profile"] == DEFAULT_LIMITS["get_profile"]
    with pytest.raises(ValueError):
        resolve_limits({"no_such_operation": small})
    assert EndpointLimit(75, 750).scaled(0.1) == EndpointLimit(8, 75)
    assert EndpointLimit(1, 15).scaled(0.01) == EndpointLimit(1, 1)
    assert set(uniform_limits(small).values()) == {small}


def test_the_default_oauth_scopes_cover_every_operation_the_service_calls() -> None:
    from consumer.settings import OAuthSettings

    needed = {scope for endpoint in ENDPOINTS.values() for scope in endpoint.scopes}
    assert needed <= set(OAuthSettings().scopes)
