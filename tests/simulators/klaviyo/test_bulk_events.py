"""The bulk event endpoint (``POST /api/event-bulk-create-jobs``) as Klaviyo documents it: at most 1,000 events
and 5 MB a request, all or nothing, validation errors that point into the request, a repeated unique_id for one
profile and metric refused, its own quota (the spec's ``x-klaviyo-ratelimit``), bodies checked against the spec."""

from __future__ import annotations

from typing import Any

import httpx

from consumer.klaviyo.ratelimits import EndpointLimit
from simulators.klaviyo import Faults, KlaviyoSimulator, Spec

from .conftest import body, profile_body

JOBS = "/api/event-bulk-create-jobs"
BASE = "/data/attributes/events-bulk-create/data"


def event(unique_id: str, name: str = "Ordered Product", **attributes: Any) -> dict[str, Any]:
    return {"type": "event", "attributes": {
        "properties": {}, "unique_id": unique_id, "metric": {"data": {"type": "metric", "attributes": {"name": name}}},
        **attributes}}


def entry(profile: dict[str, Any], *events: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event-bulk-create", "attributes": {
        "profile": {"data": {"type": "profile", **profile}}, "events": {"data": list(events)}}}


def by_email(email: str) -> dict[str, Any]:
    return {"attributes": {"email": email}}


def job(*entries: dict[str, Any]) -> bytes:
    return body({"data": {"type": "event-bulk-create-job",
                          "attributes": {"events-bulk-create": {"data": list(entries)}}}})


def error_of(response: httpx.Response) -> dict[str, Any]:
    errors: list[dict[str, Any]] = response.json()["errors"]
    return errors[0]


async def test_a_valid_job_is_accepted_and_stored(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    response = await http.post(JOBS, content=job(entry(by_email("a@shop.test"), event("1"), event("2")),
                                                 entry(by_email("b@shop.test"), event("1"))))
    assert response.status_code == 202 and response.content == b""
    assert sorted((e.unique_id, e.metric_name) for e in simulator.store.events) == [
        ("1", "Ordered Product"), ("1", "Ordered Product"), ("2", "Ordered Product")]


async def test_at_most_1000_events(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    half = [event(str(i)) for i in range(501)]
    response = await http.post(JOBS, content=job(entry(by_email("a@shop.test"), *half),
                                                 entry(by_email("b@shop.test"), *half[:500])))
    assert response.status_code == 400 and error_of(response)["source"] == {"pointer": BASE}
    assert simulator.store.events == []
    accepted = await http.post(JOBS, content=job(entry(by_email("a@shop.test"), *half[:500]),
                                                 entry(by_email("b@shop.test"), *half[:500])))
    assert accepted.status_code == 202 and len(simulator.store.events) == 1000


async def test_at_most_5_mb(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    blob = "x" * 90_000
    events = [event(str(i), properties={"blob": blob}) for i in range(56)]  # ~5.04 MB
    too_big = job(entry(by_email("a@shop.test"), *events))
    assert 5_000_000 < len(too_big) < simulator.config.max_body_bytes
    response = await http.post(JOBS, content=too_big)
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"
    assert simulator.store.events == []
    fits = job(entry(by_email("a@shop.test"), *events[:55]))
    assert (await http.post(JOBS, content=fits)).status_code == 202


async def test_validation_errors_point_at_the_event_or_entry_and_store_nothing(
    simulator: KlaviyoSimulator, http: httpx.AsyncClient
) -> None:
    bad_time = job(entry(by_email("a@shop.test"), event("1")),
                   entry(by_email("b@shop.test"), event("2"), event("3", time="1980-01-01T00:00:00Z")))
    response = await http.post(JOBS, content=bad_time)
    assert response.status_code == 400
    assert error_of(response)["source"] == {"pointer": f"{BASE}/1/attributes/events/data/1/attributes/time"}
    bad_profile = job(entry(by_email("a@shop.test"), event("1")), entry(by_email("not-an-email"), event("2")))
    response = await http.post(JOBS, content=bad_profile)
    assert error_of(response)["source"] == {"pointer": f"{BASE}/1/attributes/profile/data/attributes/email"}
    assert simulator.store.events == [] and simulator.store.profiles == {}


async def test_the_spec_checks_the_body_with_a_pointer(
    simulator: KlaviyoSimulator, http: httpx.AsyncClient, openapi_spec: Spec
) -> None:
    simulator.state.spec = openapi_spec
    missing_metric = job(entry(by_email("a@shop.test"), {"type": "event", "attributes": {"properties": {}}}))
    response = await http.post(JOBS, content=missing_metric)
    assert response.status_code == 400
    assert error_of(response)["source"]["pointer"].startswith(f"{BASE}/0/attributes/events/data/0/attributes")


async def test_a_repeated_unique_id_for_one_profile_and_metric_refuses_the_request(
    simulator: KlaviyoSimulator, http: httpx.AsyncClient
) -> None:
    created = (await http.post("/api/profiles", content=profile_body(email="a@shop.test"))).json()["data"]
    # the same profile named by id in one entry and by email in another
    response = await http.post(JOBS, content=job(entry({"id": created["id"], "attributes": {}}, event("1")),
                                                 entry(by_email("a@shop.test"), event("2"), event("1"))))
    assert response.status_code == 400
    assert error_of(response)["source"] == {"pointer": f"{BASE}/1/attributes/events/data/1/attributes/unique_id"}
    assert simulator.store.events == []
    other_metric = job(entry(by_email("a@shop.test"), event("1"), event("1", name="Placed Order")),
                       entry(by_email("b@shop.test"), event("1")))
    assert (await http.post(JOBS, content=other_metric)).status_code == 202
    assert len(simulator.store.events) == 3


async def test_a_resent_job_stores_nothing_new(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    content = job(entry(by_email("a@shop.test"), event("1"), event("2")))
    assert (await http.post(JOBS, content=content)).status_code == 202
    assert (await http.post(JOBS, content=content)).status_code == 202
    assert len(simulator.store.events) == 2


async def test_its_own_quota_is_the_specs(
    simulator: KlaviyoSimulator, http: httpx.AsyncClient, openapi_spec: Spec
) -> None:
    limit = simulator.config.rate_limits["bulk_create_events"]
    assert (limit.burst, limit.steady) == openapi_spec.rate_limit("bulk_create_events") == (10, 150)
    content = job(entry(by_email("a@shop.test"), event("1")))
    first = await http.post(JOBS, content=content)
    assert first.headers["ratelimit-limit"] == "150, 10;w=1, 150;w=60"
    simulator.config.with_limits({"bulk_create_events": EndpointLimit(1, 150, burst_window_s=60)})
    simulator.state.quota.reset()
    assert (await http.post(JOBS, content=content)).status_code == 202
    assert (await http.post(JOBS, content=content)).status_code == 429
    events = {"data": {"type": "event", "attributes": {
        "properties": {}, "metric": {"data": {"type": "metric", "attributes": {"name": "M"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": "a@shop.test"}}}}}}
    assert (await http.post("/api/events", content=body(events))).status_code == 202  # create_event's own quota


async def test_errors_without_a_pointer_on_request(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    simulator.faults = Faults(omit_error_sources=True, operations=["bulk_create_events"])
    response = await http.post(JOBS, content=job(entry(by_email("not-an-email"), event("1"))))
    assert response.status_code == 400 and error_of(response)["source"] == {}
    assert error_of(response)["detail"] == "Invalid email address"
