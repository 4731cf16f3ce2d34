"""Contract: every request body the client can send validates against Klaviyo's OpenAPI spec.

The spec is the vendored contract, simulators/klaviyo/contract/openapi-klaviyo.json (or $KLAVIYO_OPENAPI_SPEC),
trimmed from Klaviyo's public openapi-stable.json by scripts/vendor_klaviyo_spec.py; without it these tests fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from consumer.klaviyo import ApiKeyAuth, KlaviyoClient, Location, NewEvent, PatchProperties, ProfileAttributes
from consumer.klaviyo.ratelimits import ENDPOINTS
from consumer.settings import KlaviyoSettings
from simulators.klaviyo import Spec

PROFILE = {"type": "profile", "id": "01GDDKASAP8TKDDA2GRZDSVP4H", "attributes": {"email": "a@b.test"},
           "links": {"self": "https://a.klaviyo.com/api/profiles/01GDDKASAP8TKDDA2GRZDSVP4H/"}}
JOB = {"type": "profile-bulk-import-job", "id": "01J", "links": {"self": "x"},
       "attributes": {"status": "queued", "created_at": "2025-01-01T00:00:00+00:00", "total_count": 1}}

FULL = ProfileAttributes(
    email="sarah.mason@klaviyo-demo.com", phone_number="+15005550006", external_id="C-1", first_name="Sarah",
    last_name="Mason", organization="Example Corporation", locale="en-US", title="Regional Manager",
    image="https://images.example/x.jpg",
    location=Location(address1="89 E 42nd St", address2="1st floor", city="New York", country="United States",
                      region="NY", zip="10017", timezone="America/New_York", latitude="40.7128", longitude=74.006,
                      ip="127.0.0.1"),
    properties={"pseudonym": "Dr. Octopus", "tags": ["a", "b"], "nested": {"x": 1}},
)
CLEARING = ProfileAttributes(first_name=None, location=None, properties=None, phone_number=None)
EVENT = NewEvent(metric="Placed Order", profile=FULL, unique_id="ORD-1", value=99.95, value_currency="USD",
                 time=datetime(2025, 5, 1, 12, 0, tzinfo=UTC), backfill=True,
                 properties={"OrderId": "ORD-1", "Items": [{"SKU": "S1", "Quantity": 2}], "ItemNames": ["Hat"]})
MINIMAL_EVENT = NewEvent(metric="Ordered Product", profile_id="01GDDKASAP8TKDDA2GRZDSVP4H")


def respond(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if request.method == "GET" and path == "/api/profiles":
        return httpx.Response(200, json={"data": [PROFILE], "links": {"self": "x"}})
    if path == "/api/lists":
        return httpx.Response(200, json={"data": [], "links": {"self": "x"}})
    if path.endswith("/relationships/profiles"):
        return httpx.Response(204)
    if path in ("/api/events", "/api/event-bulk-create-jobs") or path.startswith("/api/profile-subscription-"):
        return httpx.Response(202)
    if path.startswith("/api/profile-bulk-import-jobs"):
        if path.endswith("/import-errors"):
            return httpx.Response(200, json={"data": [], "links": {"self": "x"}})
        return httpx.Response(202 if request.method == "POST" else 200, json={"data": JOB})
    return httpx.Response(201 if request.method == "POST" else 200, json={"data": PROFILE})


Call = Callable[[KlaviyoClient], Any]
CALLS: dict[str, Call] = {
    "create_profile full": lambda c: c.create_profile(FULL),
    "create_profile minimal": lambda c: c.create_profile(ProfileAttributes(external_id="X")),
    "update_profile full": lambda c: c.update_profile("01P", FULL),
    "update_profile clearing": lambda c: c.update_profile(
        "01P", CLEARING, patch_properties=PatchProperties(append={"skus": "1"}, unappend={"skus": ["2"]}, unset="x")
    ),
    "upsert_profile full": lambda c: c.upsert_profile(FULL),
    "upsert_profile by id": lambda c: c.upsert_profile(CLEARING, profile_id="01P",
                                                       patch_properties=PatchProperties(unset=["a", "b"])),
    "create_event full": lambda c: c.create_event(EVENT),
    "create_event minimal": lambda c: c.create_event(MINIMAL_EVENT),
    "bulk_create_events": lambda c: c.bulk_create_events([EVENT, MINIMAL_EVENT, EVENT.model_copy(
        update={"unique_id": "ORD-2", "profile": ProfileAttributes(phone_number="+15005550006")})]),
    "bulk_import_profiles": lambda c: c.bulk_import_profiles([FULL, CLEARING], list_id="Y6nRLr"),
    "bulk_import_profiles no list": lambda c: c.bulk_import_profiles([ProfileAttributes(email="a@b.test")]),
    "get_profile": lambda c: c.get_profile("01P"),
    "find_profile_by_email": lambda c: c.find_profile_by_email("a@b.test"),
    "list_profiles_updated_after": lambda c: c.list_profiles_updated_after(datetime(2025, 1, 1, tzinfo=UTC)),
    "get_bulk_import_job": lambda c: c.get_bulk_import_job("01J"),
    "get_bulk_import_errors": lambda c: c.get_bulk_import_errors("01J"),
    "subscribe_profiles": lambda c: c.subscribe_profiles("Y6nRLr", ["a@b.test", "c@d.test"]),
    "unsubscribe_profiles": lambda c: c.unsubscribe_profiles("Y6nRLr", ["a@b.test"]),
    "unsubscribe_profiles no list": lambda c: c.unsubscribe_profiles(None, ["a@b.test"]),
    "get_profile_subscriptions": lambda c: c.get_profile_subscriptions("01P"),
    "find_list_id": lambda c: c.find_list_id('VIP "gold"'),
    "add_profiles_to_list": lambda c: c.add_profiles_to_list("Y6nRLr", ["01P", "01Q"]),
    "remove_profiles_from_list": lambda c: c.remove_profiles_from_list("Y6nRLr", ["01P"]),
}


def operation_of(request: httpx.Request) -> str:
    for name, endpoint in ENDPOINTS.items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", endpoint.path) + "$"
        if endpoint.method == request.method and re.match(pattern, request.url.path):
            return name
    raise AssertionError(f"no operation for {request.method} {request.url.path}")


async def capture(call: Call) -> list[httpx.Request]:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return respond(request)

    settings = KlaviyoSettings(base_url="https://a.klaviyo.com", api_key="pk_" + "x" * 34)
    async with KlaviyoClient(settings, ApiKeyAuth(settings.api_key or ""), transport=httpx.MockTransport(handler)) as c:
        await call(c)
    return sent


@pytest.mark.parametrize("name", CALLS)
async def test_request_conforms_to_the_spec(name: str, openapi_spec: Spec) -> None:
    requests = await capture(CALLS[name])
    assert requests
    for request in requests:
        operation = operation_of(request)
        method, _, _ = openapi_spec.operations[operation]
        assert method == request.method
        assert request.headers["revision"] == openapi_spec.version
        if openapi_spec.request_schema(operation) is None:
            assert not request.content
            continue
        assert request.headers["content-type"] == "application/vnd.api+json"
        issue = openapi_spec.validate_request(operation, orjson.loads(request.content))
        assert issue is None, f"{name}: {operation} body does not conform: {issue}"


async def test_every_body_taking_operation_is_covered(openapi_spec: Spec) -> None:
    covered = {operation_of(r) for call in CALLS.values() for r in await capture(call)}
    with_bodies = {name for name in ENDPOINTS if openapi_spec.request_schema(name) is not None}
    assert with_bodies <= covered
    assert with_bodies == {"create_profile", "update_profile", "create_or_update_profile", "create_event",
                           "bulk_create_events", "bulk_import_profiles", "bulk_subscribe_profiles",
                           "bulk_unsubscribe_profiles", "add_profiles_to_list", "remove_profiles_from_list"}


@pytest.mark.parametrize(
    ("operation", "body", "pointer"),
    [
        ("create_event", {"data": {"type": "event", "attributes": {"properties": {}}}}, "/data/attributes/metric"),
        ("create_event", {"data": {"type": "event", "attributes": {
            "properties": {}, "value": "9.99", "metric": {"data": {"type": "metric", "attributes": {"name": "M"}}},
            "profile": {"data": {"type": "profile", "attributes": {}}}}}}, "/data/attributes/value"),
        ("create_event", {"data": {"type": "event", "attributes": {
            "properties": {}, "time": "yesterday", "metric": {"data": {"type": "metric", "attributes": {"name": "M"}}},
            "profile": {"data": {"type": "profile", "attributes": {}}}}}}, "/data/attributes/time"),
        ("create_profile", {"data": {"type": "profiles", "attributes": {}}}, "/data/type"),
        ("create_profile", {"data": {"type": "profile", "attributes": {"email": 5}}}, "/data/attributes/email"),
        ("create_profile", {"data": {"type": "profile", "attributes": {"location": {"latitude": True}}}},
         "/data/attributes/location/latitude"),
        ("update_profile", {"data": {"type": "profile", "attributes": {}}}, "/data/id"),
        ("bulk_import_profiles", {"data": {"type": "profile-bulk-import-job", "attributes": {}}},
         "/data/attributes/profiles"),
    ],
)
def test_the_validator_rejects_nonconforming_bodies(
    operation: str, body: dict[str, Any], pointer: str, openapi_spec: Spec
) -> None:
    issue = openapi_spec.validate_request(operation, body)
    assert issue is not None and issue.pointer == pointer


def test_nullable_fields_accept_null(openapi_spec: Spec) -> None:
    body = {"data": {"type": "profile", "id": "x", "attributes": {"email": None, "location": None,
                                                                  "properties": None}}}
    assert openapi_spec.validate_request("update_profile", body) is None
