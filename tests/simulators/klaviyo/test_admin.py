"""The admin endpoint and fault injection."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from simulators.klaviyo import Faults, KlaviyoSimulator, Latency

from .conftest import HEADERS, event_body, profile_body


async def test_admin_shows_requests_profiles_events_and_stats(http: httpx.AsyncClient) -> None:
    await http.post("/api/profiles", content=profile_body(email="adm@shop.test"))
    await http.post("/api/events", content=event_body(email="adm@shop.test", unique_id="1"))
    requests = (await http.get("/__admin/requests")).json()
    assert requests["count"] == 2
    assert [(r["operation"], r["status"]) for r in requests["data"]] == [("create_profile", 201), ("create_event", 202)]
    assert requests["data"][0]["body"]["data"]["attributes"] == {"email": "adm@shop.test"}
    assert requests["data"][0]["auth_scheme"] == "Klaviyo-API-Key"
    assert "authorization" not in requests["data"][0]["headers"]
    only = (await http.get("/__admin/requests", params={"operation": "create_event"})).json()["data"]
    assert [r["operation"] for r in only] == ["create_event"]
    profiles = (await http.get("/__admin/profiles")).json()["data"]
    assert [p["attributes"]["email"] for p in profiles] == ["adm@shop.test"]
    events = (await http.get("/__admin/events")).json()["data"]
    assert events[0]["metric"] == "Placed Order" and events[0]["profile_id"] == profiles[0]["id"]
    stats = (await http.get("/__admin/stats")).json()
    assert stats["requests"] == 2 and stats["status:201"] == 1 and stats["operation:create_event"] == 1


async def test_admin_seeds_profiles_and_resets(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    seeded = await http.post("/__admin/profiles", json={"attributes": {"email": "seed@shop.test"}})
    assert seeded.status_code == 201
    assert (await http.post("/api/profiles", content=profile_body(email="seed@shop.test"))).status_code == 409
    await http.put("/__admin/faults", json={"fail_next": [500]})
    assert (await http.post("/__admin/reset")).json() == {"reset": True}
    assert simulator.store.profiles == {} and len(simulator.received()) == 0 and simulator.faults.fail_next == []


async def test_faults_over_http(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    document = (await http.put("/__admin/faults", json={"fail_next": [503, 500], "latency": {"mean_ms": 1}})).json()
    assert document["fail_next"] == [503, 500] and document["latency"]["mean_ms"] == 1
    statuses = [(await http.get("/api/profiles")).status_code for _ in range(3)]
    assert statuses == [503, 500, 200]
    assert (await http.put("/__admin/faults", json={"drop_rate": 7})).status_code == 400
    assert (await http.delete("/__admin/faults")).json()["fail_next"] == []


async def test_injected_error_bodies(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(fail_next=[503, 502, 524, 429])
    unavailable = await http.get("/api/profiles")
    assert unavailable.json()["errors"][0]["code"] == "service_unavailable"
    for status in (502, 524):
        page = await http.get("/api/profiles")
        assert page.status_code == status and page.headers["content-type"].startswith("text/html")
        assert f"<title>{status} " in page.text
    throttled = await http.get("/api/profiles")
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
    simulator.faults = Faults(fail_next=[500], html_errors=True)
    assert (await http.get("/api/profiles")).headers["content-type"].startswith("text/html")


async def test_an_injected_client_error_has_the_body_klaviyo_gives_its_status(
    http: httpx.AsyncClient, simulator: KlaviyoSimulator
) -> None:
    simulator.faults = Faults(fail_next=[400, 404, 500])
    bad, missing, broken = [(await http.get("/api/profiles")).json()["errors"][0] for _ in range(3)]
    assert (bad["status"], bad["code"], bad["title"]) == (400, "invalid", "Invalid input.")
    assert "server error" not in bad["detail"]
    assert (missing["code"], broken["code"], broken["detail"]) == ("not_found", "error", "A server error occurred.")


async def test_a_hollow_answer_is_carried_out_and_answered_without_its_body(
    http: httpx.AsyncClient, simulator: KlaviyoSimulator
) -> None:
    simulator.faults = Faults(hollow_next=1)
    created = await http.post("/api/profiles", content=profile_body(email="hollow@shop.test"))
    assert (created.status_code, created.content) == (201, b"")
    assert len(simulator.store.profiles) == 1 and simulator.received()[0].fault == "hollow"
    assert (await http.get("/api/profiles")).json()["data"]


async def test_error_rates_and_operation_filter(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(error_rates={500: 1.0}, operations=["create_event"])
    assert (await http.get("/api/profiles")).status_code == 200
    assert (await http.post("/api/events", content=event_body())).status_code == 500
    simulator.faults = Faults(error_rates={500: 0.5})
    statuses = [(await http.get("/api/profiles")).status_code for _ in range(60)]
    assert 10 < statuses.count(500) < 50 and set(statuses) == {200, 500}


async def test_dropped_connections(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(drop_next=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await http.get("/api/profiles")
    assert (await http.get("/api/profiles")).status_code == 200
    assert [r.fault for r in simulator.received()] == ["drop", None]


async def test_admin_config_and_oauth(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    config = (await http.post("/__admin/config", json={
        "rate_limits_enabled": False, "rate_limits": {"create_event": {"burst": 5, "steady": 30}},
    })).json()
    assert config["rate_limits_enabled"] is False and config["rate_limits"]["create_event"]["burst"] == 5
    assert not simulator.config.rate_limits_enabled
    scaled = (await http.post("/__admin/config", json={"rate_limit_scale": 0.1})).json()
    assert scaled["rate_limits"]["get_profile"]["burst"] == 8
    assert (await http.post("/__admin/oauth", json={"deny_next": 2})).json()["access_tokens"] == 0
    assert simulator.state.oauth.deny_next == 2
    assert (await http.get("/__admin/nothing")).status_code == 404


@pytest.mark.parametrize(
    ("latency", "low", "high"),
    [
        (Latency(mean_ms=100), 0.1, 0.1),
        (Latency(distribution="uniform", mean_ms=100, spread_ms=20), 0.08, 0.12),
        (Latency(distribution="normal", mean_ms=100, spread_ms=10), 0.0, 1.0),
        (Latency(distribution="exponential", mean_ms=50), 0.0, 10.0),
        (Latency(), 0.0, 0.0),
    ],
)
def test_latency_distributions(latency: Latency, low: float, high: float) -> None:
    rng = random.Random(3)
    samples = [latency.sample_s(rng) for _ in range(500)]
    assert all(low <= s <= high for s in samples)
    if latency.distribution != "fixed":
        assert len(set(samples)) > 100


async def test_latency_is_applied_to_replies(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(latency=Latency(mean_ms=30))
    response = await http.get("/api/profiles")
    assert response.status_code == 200 and response.elapsed.total_seconds() >= 0.03


# --- what stands between a caller and Klaviyo ---------------------------------------------------------------------
async def test_a_captive_portal_answers_200_html_and_the_request_never_reaches_klaviyo(
    http: httpx.AsyncClient, simulator: KlaviyoSimulator
) -> None:
    simulator.faults = Faults(captive_portal=True)
    page = await http.post("/api/profiles", content=profile_body(email="portal@shop.test"))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<form" in page.text
    assert simulator.store.profiles == {}
    assert [r.fault for r in simulator.received()] == ["captive_portal"]


async def test_a_redirect_moves_every_request_to_the_configured_url(
    http: httpx.AsyncClient, simulator: KlaviyoSimulator
) -> None:
    simulator.faults = Faults(redirect_to="http://a.klaviyo.com/", operations=["get_profiles", "create_event"])
    moved = await http.get("/api/profiles", params={"page[size]": "1"})
    assert moved.status_code == 301
    assert moved.headers["location"] == "http://a.klaviyo.com/api/profiles?page%5Bsize%5D=1"
    assert (await http.post("/api/events", content=event_body())).headers["location"] == \
        "http://a.klaviyo.com/api/events"
    assert (await http.post("/api/profiles", content=profile_body(email="r@shop.test"))).status_code == 201


async def test_a_401_storm_refuses_every_api_call_but_not_the_token_endpoint(
    http: httpx.AsyncClient, simulator: KlaviyoSimulator
) -> None:
    simulator.faults = Faults(unauthorized=True)
    refused = await http.get("/api/profiles")
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "authentication_failed"
    token = await http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "unknown"},
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert token.json() == {"error": "invalid_client", "error_description": "Client authentication failed"}
    assert [r.fault for r in simulator.received()] == ["unauthorized", None]


async def test_faults_apply_for_their_time_box_only(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    simulator.faults = Faults(error_rates={503: 1.0}, for_s=0.2)
    assert simulator.faults.active() and simulator.faults.ends_at is not None
    assert (await http.get("/api/profiles")).status_code == 503
    await asyncio.sleep(max(0.0, simulator.faults.ends_at - time.monotonic()))  # the time box under test
    assert not simulator.faults.active()
    assert (await http.get("/api/profiles")).status_code == 200
    document = (await http.put("/__admin/faults", json={"unauthorized": True, "for_s": 60})).json()
    assert document["for_s"] == 60 and (await http.get("/api/profiles")).status_code == 401
    assert (await http.put("/__admin/faults", json={"for_s": 0})).status_code == 400
    assert Faults().ends_at is None and Faults().active()  # until cleared


async def test_refused_connections_until_it_listens_again_on_the_same_port(simulator: KlaviyoSimulator) -> None:
    base = simulator.base_url
    async with httpx.AsyncClient(base_url=base, headers=HEADERS) as http:
        await simulator.refuse_connections()
        assert not simulator.accepting.is_set()
        with pytest.raises(httpx.ConnectError):
            await http.get("/api/profiles")
        await simulator.accept_connections()
        assert simulator.base_url == base and (await http.get("/api/profiles")).status_code == 200
        await simulator.refuse_connections(for_s=0.2)
        with pytest.raises(httpx.ConnectError):
            await http.get("/api/profiles")
        await asyncio.wait_for(simulator.accepting.wait(), 5)
        assert (await http.get("/api/profiles")).status_code == 200
