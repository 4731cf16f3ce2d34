"""The iPaaS.com simulator over raw HTTP: auth, error bodies, search rules, admin API, standalone mode."""

from __future__ import annotations

import asyncio
import sys
import time

import httpx

from simulators.ipaas import DEFAULT_TOKEN, Faults, IpaasSimulator

AUTH = {"authorization": f"Bearer {DEFAULT_TOKEN}"}


async def test_every_api_call_needs_a_valid_bearer_token(ipaas_sim: IpaasSimulator) -> None:
    async with httpx.AsyncClient(base_url=ipaas_sim.base_url) as http:
        for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": f"Basic {DEFAULT_TOKEN}"}):
            response = await http.get("/customers/v2/Customer/1", headers=headers)
            assert response.status_code == 401
            assert response.json()["title"] == "Unauthorized"
        assert (await http.get("/customers/v2/Customer/1", headers=AUTH)).status_code == 404
    assert [r.auth_scheme for r in ipaas_sim.received()] == [None, "Bearer", "Basic", "Bearer"]


async def test_bodies_are_json_objects_and_failures_are_problem_details(ipaas_sim: IpaasSimulator) -> None:
    async with httpx.AsyncClient(base_url=ipaas_sim.base_url, headers=AUTH) as http:
        text = await http.post("/customers/v2/Customer", content=b"email=x", headers={"content-type": "text/plain"})
        assert text.status_code == 415
        broken = await http.post("/customers/v2/Customer", content=b"{", headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "$" in broken.json()["errors"]
        wrong = await http.post("/customers/v2/Customer", json={"email_address": "a@b.test", "first_name": ["x"]})
        assert wrong.status_code == 400
        assert wrong.json()["errors"] == {"FirstName": ["The field FirstName must be a string."]}
        assert (await http.delete("/customers/v2/Customer/1")).status_code == 405
        assert (await http.get("/customers/v2/Nothing")).status_code == 404
        no_action = await http.get("/customers/v2/Customers", params={"EmailAddress": "a@b.test"})
        assert no_action.status_code == 400
        bad_field = await http.get("/customers/v2/Customers", params={"action": "equals", "Password": "x"})
        assert bad_field.status_code == 400
        created = await http.post("/customers/v2/Customer", json={"email_address": "a@b.test", "id": "forced"})
        assert created.status_code == 201 and created.json()["id"] != "forced"


async def test_paths_are_case_insensitive_like_aspnet_routing(ipaas_sim: IpaasSimulator) -> None:
    customer = ipaas_sim.seed_customer(email_address="case@shop.test")
    async with httpx.AsyncClient(base_url=ipaas_sim.base_url, headers=AUTH) as http:
        response = await http.get(f"/CUSTOMERS/v2/customer/{customer.id}")
        assert response.status_code == 200 and response.json()["email_address"] == "case@shop.test"


async def test_admin_api_seeds_inspects_injects_and_resets(ipaas_sim: IpaasSimulator) -> None:
    async with httpx.AsyncClient(base_url=ipaas_sim.base_url) as http:
        seeded = await http.post("/__admin/customers", json={
            "email_address": "seed@shop.test", "klaviyo_profile_id": "01SEED",
            "addresses": [{"city": "Lyon"}]})
        assert seeded.status_code == 201
        customer_id = seeded.json()["id"]
        state = (await http.get("/__admin/state")).json()
        assert state["customers"][0]["addresses"][0]["city"] == "Lyon"
        assert state["external_ids"] == [{"table_name": "customer", "system_id": 1, "internal_id": customer_id,
                                          "external_id": "01SEED"}]
        assert (await http.put("/__admin/faults", json={"fail_next": [500]})).json()["fail_next"] == [500]
        api = await http.get(f"/customers/v2/Customer/{customer_id}", headers=AUTH)
        assert api.status_code == 500
        assert (await http.get(f"/customers/v2/Customer/{customer_id}", headers=AUTH)).status_code == 200
        requests = (await http.get("/__admin/requests", params={"operation": "get_customer"})).json()
        assert [r["status"] for r in requests["data"]] == [500, 200]
        assert requests["data"][0]["fault"] == "status:500"
        assert (await http.delete(f"/__admin/customers/{customer_id}")).status_code == 200
        lookup = await http.post("/customers/v2/External/LookupSpecial", headers=AUTH, json={
            "table_name": "customer", "system_id": 1, "external_id": "01SEED"})
        assert lookup.json() == f"DELETED:{customer_id}"
        assert (await http.post("/__admin/transactions", json={"id": "T9", "total": 5})).status_code == 201
        assert (await http.get("/transactions/v2/Transaction/T9", headers=AUTH)).json()["total"] == 5
        assert (await http.post("/__admin/reset")).json() == {"reset": True}
        assert (await http.get("/__admin/state")).json()["customers"] == []


async def test_a_revoked_token_refuses_every_call_until_cleared_or_for_a_while(ipaas_sim: IpaasSimulator) -> None:
    customer = ipaas_sim.seed_customer(email_address="gate@shop.test")
    async with httpx.AsyncClient(base_url=ipaas_sim.base_url, headers=AUTH) as http:
        ipaas_sim.faults = Faults(unauthorized=True)
        refused = await http.get(f"/customers/v2/Customer/{customer.id}")
        assert refused.status_code == 401 and refused.json()["title"] == "Unauthorized"
        ipaas_sim.faults = Faults()
        assert (await http.get(f"/customers/v2/Customer/{customer.id}")).status_code == 200
        ipaas_sim.faults = Faults(error_rates={503: 1.0}, for_s=0.2)
        assert (await http.get(f"/customers/v2/Customer/{customer.id}")).status_code == 503
        assert ipaas_sim.faults.ends_at is not None
        await asyncio.sleep(max(0.0, ipaas_sim.faults.ends_at - time.monotonic()))  # the time box under test
        assert (await http.get(f"/customers/v2/Customer/{customer.id}")).status_code == 200
    assert [r.fault for r in ipaas_sim.received()] == ["unauthorized", None, "status:503", None]


async def test_standalone_module_serves_until_stopped() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.ipaas", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("iPaaS.com simulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1].strip()
        async with httpx.AsyncClient(base_url=base_url) as http:
            assert (await http.get("/customers/v2/Customer/1")).status_code == 401
            assert (await http.get("/customers/v2/Customer/1", headers=AUTH)).status_code == 404
    finally:
        process.terminate()
        await process.wait()
