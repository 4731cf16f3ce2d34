"""How the client fails, retries and throttles, against the running simulator's fault injection."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import httpx
import pytest

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST
from consumer.errors import Outage
from consumer.http.ratelimit import LimiterRegistry, Window
from consumer.klaviyo import (
    ApiKeyAuth,
    KlaviyoClient,
    KlaviyoConnectionError,
    KlaviyoRejected,
    NewEvent,
    ProfileAttributes,
)
from consumer.klaviyo.client import DEFAULT_BACKOFF
from consumer.klaviyo.ratelimits import EndpointLimit
from consumer.observability.metrics import KLAVIYO_RATE_LIMIT_WAITS, KLAVIYO_REQUESTS, KLAVIYO_THROTTLED
from consumer.settings import KlaviyoSettings
from simulators.klaviyo import ApiKeyGrant, Faults, KlaviyoSimulator
from tests.support.sleeps import RecordedSleeps

from .conftest import FAST_BACKOFF, MakeClient

SMALL = EndpointLimit(burst=5, steady=30, burst_window_s=0.5, steady_window_s=60.0)


def event(i: int) -> NewEvent:
    return NewEvent(metric="Placed Order", profile=ProfileAttributes(email=f"storm{i}@shop.test"),
                    unique_id=f"ORD-{i}", value=1.0)


async def test_409_duplicate_surfaces_the_existing_profile_id(make_client: MakeClient) -> None:
    client = make_client()
    existing = await client.create_profile(ProfileAttributes(email="dup@shop.test"))
    with pytest.raises(KlaviyoRejected) as caught:
        await client.create_profile(ProfileAttributes(email="dup@shop.test", first_name="Again"))
    error = caught.value
    assert error.entry is KLAVIYO_REJECTED_REQUEST
    assert error.duplicate_profile_id == existing.id
    assert (error.http_status, error.error_code, error.retryable, error.infrastructure) == (
        409, "duplicate_profile", False, False
    )
    assert str(error) == (
        "Error calling Klaviyo (409 duplicate_profile: A profile already exists with one of these identifiers.)"
    )


async def test_400_is_rejected_with_klaviyos_detail_and_pointer(make_client: MakeClient) -> None:
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client().create_profile(ProfileAttributes(email="ok@shop.test", phone_number="555-1234"))
    error = caught.value
    assert (error.http_status, error.error_code, error.retryable) == (400, "invalid", False)
    assert error.message == (
        "Error calling Klaviyo (400 invalid: Invalid phone number format (Example of a valid format: +12345678901))"
    )
    assert error.source == {"pointer": "/data/attributes/phone_number"}


async def test_5xx_burst_is_retried_then_succeeds(
    make_client: MakeClient, simulator: KlaviyoSimulator, sleeps: RecordedSleeps
) -> None:
    simulator.faults = Faults(fail_next=[503, 500, 502])
    before = KLAVIYO_REQUESTS.labels("create_profile", "POST", "503")._value.get()
    profile = await make_client(max_retries=4).create_profile(ProfileAttributes(email="burst@shop.test"))
    statuses = [r.status for r in simulator.received("create_profile")]
    assert statuses == [503, 500, 502, 201]
    assert len(sleeps.delays) == 3  # a backoff before each retry, within its attempt's ceiling
    assert all(0 <= delay <= FAST_BACKOFF.ceiling(attempt) for attempt, delay in enumerate(sleeps.delays))
    assert list(simulator.store.profiles) == [profile.id]
    assert KLAVIYO_REQUESTS.labels("create_profile", "POST", "503")._value.get() == before + 1


async def test_persistent_5xx_raises_a_retryable_infrastructure_error(
    make_client: MakeClient, simulator: KlaviyoSimulator
) -> None:
    simulator.faults = Faults(fail_next=[503, 503, 503])
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client(max_retries=2).create_profile(ProfileAttributes(email="down@shop.test"))
    error = caught.value
    assert (error.http_status, error.error_code, error.retryable, error.infrastructure) == (
        503, "service_unavailable", True, True
    )
    assert len(simulator.received("create_profile")) == 3


async def test_html_error_pages_are_handled(make_client: MakeClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(fail_next=[502])
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client(max_retries=0).get_profile("01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert caught.value.message == "Error calling Klaviyo (502 Bad Gateway: text/html page: 502 Bad Gateway)"
    assert caught.value.error_code is None and caught.value.infrastructure

    simulator.faults = Faults(challenge_next=1)
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client().get_profile("01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert caught.value.http_status == 403 and caught.value.outage is Outage.MISCONFIGURED  # a WAF, not the record
    assert "text/html page: 403 Forbidden" in caught.value.message and "challenge" in caught.value.message


async def test_timeout_is_a_connection_error_with_detail(make_client: MakeClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(hang_next=1, hang_s=10)
    with pytest.raises(KlaviyoConnectionError) as caught:
        await make_client(read_timeout_s=0.2, max_retries=0).create_event(event(0))
    error = caught.value
    assert error.entry is KLAVIYO_CONNECTION_ERROR
    assert error.retryable and error.infrastructure
    assert error.message == (
        "An error occurred while contacting Klaviyo (ReadTimeout: timed out on POST /api/events, after 1 attempt)"
    )


async def test_total_timeout_bounds_an_attempt(make_client: MakeClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(hang_next=1, hang_s=10)
    with pytest.raises(KlaviyoConnectionError) as caught:
        await make_client(read_timeout_s=30, total_timeout_s=0.2, max_retries=0).create_event(event(0))
    assert "TimeoutError: timed out" in caught.value.message


async def test_dropped_connection_is_retried(make_client: MakeClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(drop_next=2)
    await make_client(max_retries=3).create_event(event(1))
    assert [r.fault for r in simulator.received("create_event")] == ["drop", "drop", None]
    assert len(simulator.store.events) == 1


async def test_connection_errors_after_retries(make_client: MakeClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(drop_next=5)
    with pytest.raises(KlaviyoConnectionError) as caught:
        await make_client(max_retries=1).create_event(event(2))
    assert caught.value.message.startswith(
        "An error occurred while contacting Klaviyo (RemoteProtocolError: Server disconnected"
    )
    assert caught.value.message.endswith("on POST /api/events, after 2 attempts)")


async def test_unreachable_host_is_a_connection_error(make_client: MakeClient, simulator: KlaviyoSimulator) -> None:
    client = make_client(base_url="http://127.0.0.1:9", max_retries=1)
    with pytest.raises(KlaviyoConnectionError) as caught:
        await client.get_profile("x")
    assert "ConnectError" in caught.value.message


async def test_401_and_403_blame_the_credential_not_the_record(
    make_client: MakeClient, simulator: KlaviyoSimulator
) -> None:
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client(api_key="pk_unknownunknownunknownunknownunknow").get_profile("x")
    assert (caught.value.http_status, caught.value.error_code, caught.value.outage) == (
        401, "authentication_failed", Outage.UNAUTHORIZED
    )
    simulator.config.api_keys["pk_readonlyreadonlyreadonlyreadonlyre"] = ApiKeyGrant(
        scopes=frozenset({"profiles:read"})
    )
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client(api_key="pk_readonlyreadonlyreadonlyreadonlyre").create_event(event(3))
    assert (caught.value.http_status, caught.value.error_code, caught.value.outage) == (
        403, "permission_denied", Outage.UNAUTHORIZED
    )
    assert len(simulator.received("create_event")) == 1  # not retried by the client: the destination pauses


def arrivals_per_window(sim: KlaviyoSimulator, operation: str, window_s: float) -> Counter[int]:
    return Counter(math.floor(r.at / window_s) for r in sim.received(operation))


async def test_429_storm_client_paces_itself_to_the_limit_and_loses_nothing(
    make_client: MakeClient, simulator: KlaviyoSimulator
) -> None:
    simulator.config.with_limits({"create_event": SMALL})
    client = make_client(rate_limits={"create_event": SMALL})
    waits_before = KLAVIYO_RATE_LIMIT_WAITS.labels("create_event")._value.get()
    await asyncio.gather(*(client.create_event(event(i)) for i in range(20)))
    assert KLAVIYO_RATE_LIMIT_WAITS.labels("create_event")._value.get() - waits_before >= 10
    assert sorted(e.unique_id or "" for e in simulator.store.events) == sorted(f"ORD-{i}" for i in range(20))
    throttled = simulator.state.stats["throttled"]
    assert throttled <= 2  # the limiter, not Klaviyo, holds the requests back
    assert max(arrivals_per_window(simulator, "create_event", SMALL.burst_window_s).values()) <= SMALL.burst + 1


async def test_429_storm_without_client_limits_honours_retry_after_and_loses_nothing(
    make_client: MakeClient, simulator: KlaviyoSimulator
) -> None:
    simulator.config.with_limits({"create_event": SMALL})
    client = make_client(rate_limit=False, max_retries=8)
    throttled_before = KLAVIYO_THROTTLED.labels("create_event")._value.get()
    await asyncio.gather(*(client.create_event(event(i)) for i in range(12)))
    assert len(simulator.store.events) == 12
    received = simulator.received("create_event")
    first_429 = next(r for r in received if r.status == 429)
    later = [r for r in received if r.seq > first_429.seq and r.at > first_429.at + 0.05]
    assert later and min(r.at for r in later) >= first_429.at + 0.9  # waited out Retry-After: 1
    assert simulator.state.stats["throttled"] >= 5
    assert KLAVIYO_THROTTLED.labels("create_event")._value.get() - throttled_before == simulator.state.stats[
        "throttled"
    ]


async def test_429_without_retry_after_uses_the_detail_hint(
    make_client: MakeClient, simulator: KlaviyoSimulator
) -> None:
    simulator.config.with_limits({"create_event": SMALL})
    simulator.config.send_retry_after = False
    client = make_client(rate_limit=False, max_retries=8)
    await asyncio.gather(*(client.create_event(event(i)) for i in range(8)))
    assert len(simulator.store.events) == 8
    assert simulator.state.stats["throttled"] >= 1


async def test_exhausted_429_retries_raise_retryable_with_retry_after(
    make_client: MakeClient, simulator: KlaviyoSimulator, sleeps: RecordedSleeps
) -> None:
    simulator.faults = Faults(fail_next=[429, 429])
    virtual_time = LimiterRegistry(clock=sleeps.clock, sleep=sleeps)  # the limiter waits out the 429, recorded
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client(max_retries=1, limiters=virtual_time).create_event(event(4))
    assert sleeps.delays == [1.0]  # Retry-After: 1, waited before the one retry
    error = caught.value
    assert (error.http_status, error.error_code, error.retryable, error.infrastructure) == (
        429, "throttled", True, False
    )
    assert error.retry_after == 1.0


async def test_client_adopts_the_quota_klaviyo_advertises(
    make_client: MakeClient, simulator: KlaviyoSimulator
) -> None:
    simulator.config.with_limits({"create_event": SMALL})
    registry = LimiterRegistry(margin_s=0.05)
    generous = EndpointLimit(burst=50, steady=1000, burst_window_s=0.5, steady_window_s=60.0)
    client = make_client(rate_limits={"create_event": generous}, limiters=registry)
    await client.create_event(event(100))
    limiter = registry.get((client._auth.account_key, "create_event"))
    assert Window(5, 0.5) in limiter.windows and Window(30, 60.0) in limiter.windows
    await asyncio.gather(*(client.create_event(event(i)) for i in range(12)))
    assert len(simulator.store.events) == 13
    assert simulator.state.stats["throttled"] <= 2


async def test_a_success_status_with_a_non_json_body_blames_the_destination(sleeps: RecordedSleeps) -> None:
    page = b"<html><head><title>Just a moment...</title></head></html>"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=page,
                                                                   headers={"content-type": "text/html"}))
    settings = KlaviyoSettings(api_key="pk_" + "m" * 34)
    async with KlaviyoClient(settings, ApiKeyAuth("pk_" + "m" * 34), transport=transport, sleep=sleeps) as client:
        with pytest.raises(KlaviyoRejected) as caught:
            await client.get_profile("01P")
    # a proxy's page may be a blip: the read was asked again after each default backoff, then blamed the destination
    assert len(sleeps.delays) == settings.max_retries
    assert all(0 <= delay <= DEFAULT_BACKOFF.ceiling(attempt) for attempt, delay in enumerate(sleeps.delays))
    assert caught.value.outage is Outage.MISCONFIGURED and caught.value.http_status == 200
    assert caught.value.message == (
        "Error calling Klaviyo (200 unexpected response on GET /api/profiles/{id}: text/html page: Just a moment...)"
    )


# --- a success without what the operation returns ------------------------------------------------------------
async def test_a_201_without_the_profile_is_a_klaviyo_error_of_the_record(
    make_client: MakeClient, simulator: KlaviyoSimulator
) -> None:
    simulator.faults = Faults(hollow_next=1, operations=["create_profile"])
    with pytest.raises(KlaviyoRejected) as caught:
        await make_client().create_profile(ProfileAttributes(email="hollow@shop.test"))
    error = caught.value
    assert error.message == ("Error calling Klaviyo (Klaviyo answered 201 to POST /api/profiles without the profile "
                             "it should return)")
    assert (error.entry, error.http_status, error.retryable, error.outage) == (KLAVIYO_REJECTED_REQUEST, 201, True,
                                                                               None)
    assert [r.fault for r in simulator.received("create_profile")] == ["hollow"]  # sent once: Klaviyo answered


def _answering(status: int, body: bytes, content_type: str = "application/vnd.api+json") -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body,
                                                              headers={"content-type": content_type}))


@pytest.mark.parametrize(("body", "problem"), [
    (b"", ""),
    (b"{}", ""),
    (b'{"errors": []}', ""),
    (b'{"data": []}', ""),  # a list where the profile belongs
    (b'{"data": {"type": "profile"}}', ""),  # no id
    (b'{"data": {"type": "profile", "id": "01P", "attributes": {"email": 5}}}', " (unreadable attributes.email)"),
])
async def test_a_200_without_a_readable_profile_names_what_is_missing(
    sleeps: RecordedSleeps, body: bytes, problem: str
) -> None:
    settings = KlaviyoSettings(api_key="pk_" + "m" * 34)
    async with KlaviyoClient(settings, ApiKeyAuth("pk_" + "m" * 34), transport=_answering(200, body),
                             sleep=sleeps) as client:
        with pytest.raises(KlaviyoRejected) as caught:
            await client.get_profile("01P")
    error = caught.value
    assert error.message == ("Error calling Klaviyo (Klaviyo answered 200 to GET /api/profiles/{id} without the "
                             f"profile it should return{problem})")
    assert (error.retryable, error.outage, error.http_status) == (True, None, 200)


async def test_a_search_answered_without_its_list_is_not_taken_for_no_match(sleeps: RecordedSleeps) -> None:
    settings = KlaviyoSettings(api_key="pk_" + "m" * 34)
    async with KlaviyoClient(settings, ApiKeyAuth("pk_" + "m" * 34), transport=_answering(200, b'{"links": {}}'),
                             sleep=sleeps) as client:
        with pytest.raises(KlaviyoRejected, match="without the list of profiles it should return"):
            await client.find_profile_by_email("someone@shop.test")  # None would make the flow create a duplicate
        with pytest.raises(KlaviyoRejected, match="without the list of profiles"):
            await client.probe()  # a probe does not bring Klaviyo back on such an answer
