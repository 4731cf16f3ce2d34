"""The bulk profile import endpoint (``POST /api/profile-bulk-import-jobs``) as Klaviyo documents it: at most 10,000
profiles, 5 MB a request and 100 KB a profile; a job queued, then processing, then complete, with its counts; an
upsert that never clears a field; import errors (``ImportErrorResponseObjectResource``) pointing at the profile;
the quotas of the spec's ``x-klaviyo-ratelimit``, one per operation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from consumer.klaviyo.ratelimits import EndpointLimit
from simulators.klaviyo import KlaviyoSimulator, Spec
from simulators.klaviyo.store import ImportPace, Store

from .conftest import body

JOBS = "/api/profile-bulk-import-jobs"
ROWS = "/data/attributes/profiles/data"


def profile(**attributes: Any) -> dict[str, Any]:
    return {"type": "profile", "attributes": attributes}


def job(*profiles: dict[str, Any]) -> bytes:
    return body({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": list(profiles)}}}})


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_with_time_a_job_is_queued_then_processes_its_rows_in_order_then_completes() -> None:
    clock = Clock()
    store = Store(clock)
    pace = ImportPace(queued_s=1.0, profiles_per_s=10)
    job_ = store.create_import_job([profile(email=f"p{n}@shop.test") for n in range(20)], [], 100_000)
    store.run_jobs(pace)
    assert (job_.status, job_.completed_count, store.profiles) == ("queued", 0, {})
    clock.advance(1.5)
    store.run_jobs(pace)  # nobody reads the job: its rows are imported all the same
    assert (job_.status, job_.completed_count, len(store.profiles)) == ("processing", 5, 5)
    assert job_.started_at is not None and job_.completed_at is None
    clock.advance(2.0)
    store.run_jobs(pace)
    assert (job_.status, job_.completed_count, job_.failed_count) == ("complete", 20, 0)
    assert job_.completed_at is not None and job_.expires_at is not None
    assert [r.attributes["email"] for r in store.profiles.values()] == [f"p{n}@shop.test" for n in range(20)]


async def test_the_job_over_http_with_counts_and_import_errors_pointing_at_the_profile(
    simulator: KlaviyoSimulator, http: httpx.AsyncClient, openapi_spec: Spec
) -> None:
    simulator.state.spec = openapi_spec
    content = job(profile(email="a@shop.test"), profile(email="b@shop.test", phone_number="555"),
                  profile(email="c@shop.test", external_id="C3"))
    posted = await http.post(JOBS, content=content)
    assert posted.status_code == 202
    created = posted.json()["data"]
    assert openapi_spec.validate_response("bulk_import_profiles", 202, posted.json()) is None
    assert (created["attributes"]["status"], created["attributes"]["total_count"]) == ("queued", 3)
    statuses = []
    for _ in range(2):  # without a pace, each read moves the job one step
        read = await http.get(f"{JOBS}/{created['id']}")
        assert openapi_spec.validate_response("get_bulk_import_profiles_job", 200, read.json()) is None
        statuses.append(read.json()["data"]["attributes"]["status"])
    assert statuses == ["processing", "complete"]
    attributes = read.json()["data"]["attributes"]
    assert (attributes["completed_count"], attributes["failed_count"]) == (2, 1)
    errors = await http.get(f"{JOBS}/{created['id']}/import-errors", params={"page[size]": 100})
    assert openapi_spec.validate_response("get_errors_for_bulk_import_profiles_job", 200, errors.json()) is None
    (error,) = errors.json()["data"]
    assert error["type"] == "import-error"
    assert error["attributes"]["source"] == {"pointer": f"{ROWS}/1/attributes/phone_number"}
    assert error["attributes"]["original_payload"] == profile(email="b@shop.test", phone_number="555")
    assert sorted(r.attributes["email"] for r in simulator.store.profiles.values()) == ["a@shop.test", "c@shop.test"]


async def test_an_import_upserts_by_identifier_or_id_and_never_clears_a_field(
    simulator: KlaviyoSimulator, http: httpx.AsyncClient
) -> None:
    store = simulator.store
    known = store.create_profile({"email": "a@shop.test", "title": "Countess", "location": {"city": "London"}})
    other = store.create_profile({"email": "b@shop.test", "external_id": "B"})
    content = job(profile(email="a@shop.test", external_id="A", title=None, location={"city": None, "zip": "SW1"}),
                  {"type": "profile", "id": other.id, "attributes": {"first_name": "Bea"}},
                  profile(email="b@shop.test", external_id="Z"), profile(email="a@shop.test", external_id="Z"))
    created = (await http.post(JOBS, content=content)).json()["data"]
    for _ in range(2):
        await http.get(f"{JOBS}/{created['id']}")
    assert (known.attributes["external_id"], known.attributes["title"]) == ("A", "Countess")
    assert known.location["city"] == "London" and known.location["zip"] == "SW1"
    assert other.attributes["first_name"] == "Bea"
    assert other.attributes["external_id"] == "Z"  # matched by email: the upsert takes it, as Klaviyo's does
    errors = (await http.get(f"{JOBS}/{created['id']}/import-errors")).json()["data"]
    assert [(e["attributes"]["code"], e["attributes"]["source"]["pointer"]) for e in errors] == [
        ("duplicate_profile", f"{ROWS}/3")]  # its email and its external_id on two profiles
    assert len(store.profiles) == 2


async def test_caps_10000_profiles_5_mb_and_100_kb_a_profile(
    simulator: KlaviyoSimulator, http: httpx.AsyncClient
) -> None:
    too_many = await http.post(JOBS, content=job(*[profile(email=f"p{n}@shop.test") for n in range(10_001)]))
    assert too_many.status_code == 400 and too_many.json()["errors"][0]["source"] == {"pointer": ROWS}
    huge = await http.post(JOBS, content=job(profile(email="a@shop.test"), profile(properties={"x": "y" * 103_000})))
    assert huge.status_code == 400 and huge.json()["errors"][0]["source"] == {"pointer": f"{ROWS}/1"}
    blob = "y" * 99_000
    too_big = job(*[profile(email=f"p{n}@shop.test", properties={"x": blob}) for n in range(51)])
    assert 5_000_000 < len(too_big) < simulator.config.max_body_bytes
    response = await http.post(JOBS, content=too_big)
    assert response.status_code == 413 and response.json()["errors"][0]["code"] == "request_too_large"
    assert simulator.store.jobs == {}


async def test_each_operation_has_its_own_quota_as_the_spec_says(
    simulator: KlaviyoSimulator, http: httpx.AsyncClient, openapi_spec: Spec
) -> None:
    operations = ("bulk_import_profiles", "get_bulk_import_profiles_job", "get_errors_for_bulk_import_profiles_job")
    for operation in operations:
        limit = simulator.config.rate_limits[operation]
        assert (limit.burst, limit.steady) == openapi_spec.rate_limit(operation) == (10, 150)
    simulator.config.with_limits({name: EndpointLimit(1, 150, burst_window_s=60) for name in (
        "bulk_import_profiles", "get_bulk_import_profiles_job")})
    created = (await http.post(JOBS, content=job(profile(email="a@shop.test")))).json()["data"]
    assert (await http.post(JOBS, content=job(profile(email="b@shop.test")))).status_code == 429
    assert (await http.get(f"{JOBS}/{created['id']}")).status_code == 200  # the job's reads count on their own
    assert (await http.get(f"{JOBS}/{created['id']}")).status_code == 429


async def test_many_identifiers_in_one_lookup(simulator: KlaviyoSimulator, http: httpx.AsyncClient) -> None:
    store = simulator.store
    ids = [store.create_profile({"email": f"p{n}@shop.test", "external_id": f"E{n}"}).id for n in range(150)]
    wanted = ",".join(f'"p{n}@shop.test"' for n in range(0, 150, 2))
    page = await http.get("/api/profiles", params={"filter": f"any(email,[{wanted},\"nobody@shop.test\"])",
                                                   "page[size]": 100})
    assert sorted(p["id"] for p in page.json()["data"]) == sorted(ids[0::2])
    one = await http.get("/api/profiles", params={"filter": 'equals(external_id,"E7")'})
    assert [p["id"] for p in one.json()["data"]] == [ids[7]]
