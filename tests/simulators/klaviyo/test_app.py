"""The simulator's request pipeline over real HTTP: auth, revision, media types, validation, routes, quotas."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from consumer.klaviyo.ratelimits import EndpointLimit
from simulators.klaviyo import ApiKeyGrant, KlaviyoSimulator, SimulatorConfig, Spec

from .conftest import HEADERS, body, event_body, profile_body


def first_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/vnd.api+json"
    error: dict[str, Any] = response.json()["errors"][0]
    return error


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        (None, 401, "not_authenticated"),
        ("Token abc", 401, "not_authenticated"),
        ("Klaviyo-API-Key", 401, "not_authenticated"),
        ("Klaviyo-API-Key pk_nope", 401, "authentication_failed"),
        ("Bearer not-a-token", 401, "authentication_failed"),
    ],
)
async def test_authentication(http: httpx.AsyncClient, authorization: str | None, status: int, code: str) -> None:
    headers = dict(HEADERS)
    headers.pop("authorization")
    if authorization is not None:
        headers["authorization"] = authorization
    async with httpx.AsyncClient(base_url=str(http.base_url), headers=headers) as other:
        response = await other.get("/api/profiles")
    assert response.status_code == status and first_error(response)["code"] == code


async def test_missing_scope_is_403(http: httpx.AsyncClient, simulator: KlaviyoSimulator) -> None:
    key = "pk_eventsonlyeventsonlyeventsonlyevent"
    simulator.config.api_keys[key] = ApiKeyGrant(scopes=frozenset({"events:write"}))
    headers = {"authorization": f"Klaviyo-API-Key {key}"}
    assert (await http.post("/api/events", content=event_body(), headers=headers)).status_code == 202
    response = await http.get("/api/profiles", headers=headers)
    assert response.status_code == 403 and first_error(response)["code"] == "permission_denied"


@pytest.mark.parametrize(("revision", "status"), [(None, 400), ("2026-07-15", 200), ("2026-07-15.pre", 400),
                                                   ("latest", 400), ("2023-02-22", 400)])
async def test_revision_header_is_required(http: httpx.AsyncClient, revision: str | None, status: int) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != "revision"}
    if revision:
        headers["revision"] = revision
    async with httpx.AsyncClient(base_url=str(http.base_url), headers=headers) as other:
        response = await other.get("/api/profiles")
    assert response.status_code == status
    if status == 200:
        assert response.headers["revision"] == revision
    else:
        assert first_error(response)["source"] == {"parameter": "revision"}


async def test_lenient_revision_policy(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    simulator.config.require_revision = False
    assert (await http.get("/api/profiles", headers={"revision": "2024-10-15"})).status_code == 200


@pytest.mark.parametrize(("content_type", "status"), [("application/json", 201), ("application/vnd.api+json", 201),
                                                      ("text/plain", 415), ("application/x-www-form-urlencoded", 415)])
async def test_media_types(http: httpx.AsyncClient, content_type: str, status: int) -> None:
    response = await http.post("/api/profiles", content=profile_body(email="m@shop.test"),
                               headers={"content-type": content_type})
    assert response.status_code == status


async def test_trailing_slash_paths_work(http: httpx.AsyncClient) -> None:
    created = await http.post("/api/profiles/", content=profile_body(email="slash@shop.test"))
    assert created.status_code == 201
    profile_id = created.json()["data"]["id"]
    assert (await http.get(f"/api/profiles/{profile_id}/")).status_code == 200
    assert (await http.post("/api/events/", content=event_body())).status_code == 202


async def test_unknown_paths_and_methods(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/nothing")).status_code == 404
    response = await http.delete("/api/profiles")
    assert response.status_code == 405 and first_error(response)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"data": {"type": "event", "attributes": {"properties": {}}}}, "/data/attributes/metric"),
        ({"data": {"type": "events", "attributes": {}}}, "/data/type"),
        ({"nope": 1}, "/data"),
    ],
)
async def test_schema_violations_are_400_with_a_pointer(
    http: httpx.AsyncClient, payload: dict[str, Any], pointer: str, openapi_spec: Spec
) -> None:
    response = await http.post("/api/events", content=body(payload))
    error = first_error(response)
    assert response.status_code == 400 and error["code"] == "invalid" and error["source"] == {"pointer": pointer}
    assert set(error) >= {"id", "status", "code", "title", "detail", "source", "meta"}


async def test_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/profiles", content=b"{nope")
    assert response.status_code == 400 and "JSON" in first_error(response)["detail"]


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"metric": {"data": {"type": "metric", "attributes": {"name": "x" * 128}}}},
         "/data/attributes/metric/data/attributes/name"),
        ({"time": "2999-01-01T00:00:00+00:00"}, "/data/attributes/time"),
        ({"time": "1980-01-01T00:00:00+00:00"}, "/data/attributes/time"),
        ({"profile": {"data": {"type": "profile", "attributes": {"first_name": "No id"}}}},
         "/data/attributes/profile/data/attributes"),
        ({"properties": {str(i): i for i in range(401)}}, "/data/attributes/properties"),
    ],
)
async def test_event_semantic_checks(http: httpx.AsyncClient, attributes: dict[str, Any], pointer: str) -> None:
    response = await http.post("/api/events", content=event_body(**attributes))
    assert response.status_code == 400 and first_error(response)["source"] == {"pointer": pointer}


async def test_filters_sort_and_pages(http: httpx.AsyncClient) -> None:
    for i in range(5):
        await http.post("/api/profiles", content=profile_body(email=f"f{i}@shop.test", external_id=f"X{i}"))
    response = await http.get("/api/profiles", params={"filter": "any(external_id,['X1','X3'])", "sort": "-email"})
    assert [p["attributes"]["email"] for p in response.json()["data"]] == ["f3@shop.test", "f1@shop.test"]
    page = (await http.get("/api/profiles", params={"page[size]": 2, "sort": "email"})).json()
    assert [p["attributes"]["email"] for p in page["data"]] == ["f0@shop.test", "f1@shop.test"]
    following = (await http.get(page["links"]["next"])).json()
    assert [p["attributes"]["email"] for p in following["data"]] == ["f2@shop.test", "f3@shop.test"]
    empty = (await http.get("/api/profiles", params={"filter": 'equals(email,"none@shop.test")'})).json()
    assert empty["data"] == [] and "next" not in empty["links"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"filter": 'equals(first_name,"A")'}, "filter"),
        ({"filter": 'contains(email,"a")'}, "filter"),
        ({"filter": "greater-than(updated,yesterday)"}, "filter"),
        ({"filter": "equals(email"}, "filter"),
        ({"page[size]": "0"}, "page[size]"),
        ({"page[size]": "101"}, "page[size]"),
        ({"sort": "first_name"}, "sort"),
        ({"page[cursor]": "garbage!"}, "page[cursor]"),
    ],
)
async def test_bad_query_parameters(http: httpx.AsyncClient, params: dict[str, str], parameter: str) -> None:
    response = await http.get("/api/profiles", params=params)
    assert response.status_code == 400 and first_error(response)["source"] == {"parameter": parameter}


async def test_bad_include_is_400(http: httpx.AsyncClient) -> None:
    created = (await http.post("/api/profiles", content=profile_body(email="inc@shop.test"))).json()["data"]
    response = await http.get(f"/api/profiles/{created['id']}", params={"include": "profiless"})
    assert response.status_code == 400
    assert first_error(response)["detail"] == "'profiless' is not an allowed include parameter for this resource."


async def test_patch_id_must_match_the_path(http: httpx.AsyncClient) -> None:
    created = (await http.post("/api/profiles", content=profile_body(email="id@shop.test"))).json()["data"]
    response = await http.patch(f"/api/profiles/{created['id']}", content=body(
        {"data": {"type": "profile", "id": "01OTHER", "attributes": {}}}))
    assert response.status_code == 400 and first_error(response)["source"] == {"pointer": "/data/id"}
    missing = await http.patch("/api/profiles/01NOPE", content=body(
        {"data": {"type": "profile", "id": "01NOPE", "attributes": {}}}))
    assert missing.status_code == 404 and first_error(missing)["code"] == "not_found"


async def test_update_to_another_profiles_email_is_409(http: httpx.AsyncClient) -> None:
    a = (await http.post("/api/profiles", content=profile_body(email="a@shop.test"))).json()["data"]
    b = (await http.post("/api/profiles", content=profile_body(email="b@shop.test"))).json()["data"]
    response = await http.patch(f"/api/profiles/{b['id']}", content=body(
        {"data": {"type": "profile", "id": b["id"], "attributes": {"email": "a@shop.test"}}}))
    error = first_error(response)
    assert response.status_code == 409 and error["meta"] == {"duplicate_profile_id": a["id"]}


async def test_oversize_bodies_are_refused(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    too_big = profile_body(email="big@shop.test", properties={"blob": "x" * (101 * 1024)})
    response = await http.post("/api/profiles", content=too_big)
    assert response.status_code == 400 and "100 KB" in first_error(response)["detail"]
    simulator.config.max_body_bytes = 1024
    simulator._server._max_body = 1024
    response = await http.post("/api/events", content=event_body(properties={"blob": "x" * 2048}))
    assert response.status_code == 413


async def test_quota_headers_and_429(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    simulator.config.with_limits({"get_profiles": EndpointLimit(2, 3, burst_window_s=60, steady_window_s=120)})
    first = await http.get("/api/profiles")
    assert first.headers["ratelimit-limit"] == "3, 2;w=60, 3;w=120"
    assert first.headers["ratelimit-remaining"] == "2"
    assert 0 < int(first.headers["ratelimit-reset"]) <= 120
    await http.get("/api/profiles")
    throttled = await http.get("/api/profiles")
    assert throttled.status_code == 429
    error = first_error(throttled)
    assert error["code"] == "throttled" and error["detail"].startswith("Request was throttled. Expected available in")
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert not any(name.startswith("ratelimit-") for name in throttled.headers)
    assert (await http.get("/api/events")).status_code == 200  # another endpoint class has its own quota


async def test_quota_is_per_account(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    simulator.config.with_limits({"get_profiles": EndpointLimit(1, 10, burst_window_s=60)})
    other = "pk_otheraccountotheraccountotheraccou"
    simulator.config.api_keys[other] = ApiKeyGrant(account="acct-2")
    assert (await http.get("/api/profiles")).status_code == 200
    assert (await http.get("/api/profiles")).status_code == 429
    assert (await http.get("/api/profiles", headers={"authorization": f"Klaviyo-API-Key {other}"})).status_code == 200


async def test_include_charges_its_own_stricter_counter(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    created = (await http.post("/api/profiles", content=profile_body(email="q@shop.test"))).json()["data"]
    url = f"/api/profiles/{created['id']}"
    assert (await http.get(url, params={"include": "lists"})).status_code == 200
    assert (await http.get(url, params={"include": "lists"})).status_code == 429  # 1/s for include=lists
    assert (await http.get(url)).status_code == 200


async def test_no_retry_after_variant(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    simulator.config.with_limits({"get_profiles": EndpointLimit(1, 10, burst_window_s=60)})
    simulator.config.send_retry_after = False
    await http.get("/api/profiles")
    throttled = await http.get("/api/profiles")
    assert throttled.status_code == 429 and "retry-after" not in throttled.headers


async def test_limits_off() -> None:
    async with KlaviyoSimulator(SimulatorConfig(rate_limits_enabled=False)) as sim, httpx.AsyncClient(
        base_url=sim.base_url, headers=HEADERS
    ) as http:
        sim.config.with_limits({"get_profiles": EndpointLimit(1, 1)})
        statuses = {(await http.get("/api/profiles")).status_code for _ in range(5)}
        assert statuses == {200}
        assert "ratelimit-limit" not in (await http.get("/api/profiles")).headers


async def test_responses_conform_to_the_spec(http: httpx.AsyncClient, openapi_spec: Spec) -> None:
    async def check(operation: str, response: httpx.Response) -> dict[str, Any]:
        document = response.json()
        assert openapi_spec.validate_response(operation, response.status_code, document) is None, operation
        return dict(document)

    created = await check("create_profile", await http.post("/api/profiles", content=profile_body(
        email="spec@shop.test", location={"city": "Oslo"}, properties={"a": 1})))
    pid = created["data"]["id"]
    await check("create_profile", await http.post("/api/profiles", content=profile_body(email="spec@shop.test")))
    await check("get_profile", await http.get(f"/api/profiles/{pid}"))
    await check("get_profiles", await http.get("/api/profiles", params={"page[size]": 1}))
    await check("update_profile", await http.patch(f"/api/profiles/{pid}", content=body(
        {"data": {"type": "profile", "id": pid, "attributes": {"title": "T"}}})))
    await check("create_or_update_profile", await http.post("/api/profile-import", content=profile_body(
        email="spec2@shop.test")))
    await http.post("/api/events", content=event_body(email="spec@shop.test"))
    await check("get_events", await http.get("/api/events"))
    job = await check("bulk_import_profiles", await http.post("/api/profile-bulk-import-jobs", content=body(
        {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "j@shop.test"}}]}}}})))
    job_url = f"/api/profile-bulk-import-jobs/{job['data']['id']}"
    for _ in range(2):
        await check("get_bulk_import_profiles_job", await http.get(job_url))
    await check("get_errors_for_bulk_import_profiles_job", await http.get(f"{job_url}/import-errors"))


async def test_hundreds_of_concurrent_connections(simulator: KlaviyoSimulator) -> None:
    """300 clients at once, each on its own keep-alive connection (raw sockets: no client-side pool in the way)."""
    simulator.config.rate_limits_enabled = False
    head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())

    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
        try:
            replies = []
            for j in range(2):
                payload = event_body(email=f"c{i}@shop.test", unique_id=f"{i}-{j}")
                writer.write(f"POST /api/events HTTP/1.1\r\nhost: x\r\n{head}content-length: {len(payload)}\r\n\r\n"
                             .encode() + payload)
                await writer.drain()
                replies.append(await reader.readuntil(b"\r\n\r\n"))
            return b"".join(replies)
        finally:
            writer.close()

    replies = await asyncio.gather(*(one(i) for i in range(300)))
    assert all(r.count(b"HTTP/1.1 202 Accepted") == 2 for r in replies)
    assert len(simulator.store.events) == 600
    assert simulator.state.stats["status:202"] == 600
