"""The simulator's consent and list endpoints, over raw HTTP: consent kept per profile, list membership as a set,
request bodies validated against Klaviyo's contract, responses conforming to it."""

from __future__ import annotations

from typing import Any

import httpx

from simulators.klaviyo import KlaviyoSimulator, Spec

from .conftest import body, profile_body
from .test_app import first_error


def job(emails: list[str], *, subscribe: bool, list_id: str | None = None, consent: str | None = None) -> bytes:
    value = consent or ("SUBSCRIBED" if subscribe else "UNSUBSCRIBED")
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job" if subscribe else "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": email,
                                               "subscriptions": {"email": {"marketing": {"consent": value}}}}}
            for email in emails]}},
    }
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return body({"data": data})


SUBSCRIBE = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"


async def consent(http: httpx.AsyncClient, profile_id: str, spec: Spec) -> str:
    response = await http.get(f"/api/profiles/{profile_id}", params={"additional-fields[profile]": "subscriptions"})
    document = response.json()
    assert spec.validate_response("get_profile", response.status_code, document) is None
    return str(document["data"]["attributes"]["subscriptions"]["email"]["marketing"]["consent"])


async def test_an_unsubscribed_profile_stays_unsubscribed_until_a_subscription_job(
    http: httpx.AsyncClient, simulator: KlaviyoSimulator, openapi_spec: Spec
) -> None:
    newsletter = simulator.store.create_list("Newsletter")
    created = await http.post("/api/profiles", content=profile_body(email="c@shop.test"))
    pid = created.json()["data"]["id"]
    assert "subscriptions" not in (await http.get(f"/api/profiles/{pid}")).json()["data"]["attributes"]
    assert await consent(http, pid, openapi_spec) == "NEVER_SUBSCRIBED"

    response = await http.post(SUBSCRIBE, content=job(["c@shop.test", "new@shop.test"], subscribe=True,
                                                      list_id=newsletter.id))
    assert response.status_code == 202 and response.content == b""
    assert await consent(http, pid, openapi_spec) == "SUBSCRIBED"
    assert len(simulator.store.profiles) == 2 and len(newsletter.members) == 2  # a new email became a profile

    assert (await http.post(UNSUBSCRIBE, content=job(["c@shop.test"], subscribe=False))).status_code == 202
    assert await consent(http, pid, openapi_spec) == "UNSUBSCRIBED"
    await http.patch(f"/api/profiles/{pid}", content=body(
        {"data": {"type": "profile", "id": pid, "attributes": {"first_name": "C", "properties": {"x": 1}}}}))
    await http.post("/api/profile-import", content=profile_body(email="c@shop.test", last_name="D"))
    assert await consent(http, pid, openapi_spec) == "UNSUBSCRIBED"  # writing the profile gives no consent

    await http.post(SUBSCRIBE, content=job(["c@shop.test"], subscribe=True, list_id=newsletter.id))
    assert await consent(http, pid, openapi_spec) == "SUBSCRIBED"


async def test_subscription_bodies_are_checked_against_the_contract(http: httpx.AsyncClient) -> None:
    wrong = await http.post(SUBSCRIBE, content=job(["c@shop.test"], subscribe=True, consent="YES"))
    assert wrong.status_code == 400 and first_error(wrong)["source"]["pointer"].startswith("/data/attributes/profiles")
    missing_list = await http.post(SUBSCRIBE, content=job(["c@shop.test"], subscribe=True, list_id="NOPE"))
    assert missing_list.status_code == 404


async def test_lists_by_name_and_membership_as_a_set(
    http: httpx.AsyncClient, simulator: KlaviyoSimulator, openapi_spec: Spec
) -> None:
    vip = simulator.store.create_list("VIP")
    simulator.store.create_list("Other")
    found = await http.get("/api/lists", params={"filter": 'equals(name,"VIP")'})
    assert openapi_spec.validate_response("get_lists", found.status_code, found.json()) is None
    assert [item["id"] for item in found.json()["data"]] == [vip.id]
    assert (await http.get("/api/lists", params={"filter": 'equals(name,"vip")'})).json()["data"] == []

    pid = (await http.post("/api/profiles", content=profile_body(email="m@shop.test"))).json()["data"]["id"]
    members = f"/api/lists/{vip.id}/relationships/profiles"
    payload = body({"data": [{"type": "profile", "id": pid}]})
    for _ in range(2):
        response = await http.post(members, content=payload)
        assert response.status_code == 204
    assert vip.members == {pid}
    assert (await http.post(members, content=body({"data": [{"type": "list", "id": pid}]}))).status_code == 400
    assert (await http.post("/api/lists/NOPE/relationships/profiles", content=payload)).status_code == 404
    assert (await http.request("DELETE", members, content=payload)).status_code == 204
    assert vip.members == set()
