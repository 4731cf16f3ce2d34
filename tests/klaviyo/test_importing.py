"""The profile importer on its own, over a fake Klaviyo: how records queue, share jobs, wait for each other's
identifiers, get their import errors, and are abandoned on close (never completed, so never committed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from consumer.errors import Outage
from consumer.klaviyo import KlaviyoRejected, Profile, ProfileAttributes
from consumer.klaviyo.errors import ErrorBody
from consumer.klaviyo.importing import Identifier, Imported, ImportRejected, ProfileImporter
from consumer.klaviyo.models import BulkImportError, BulkImportJob, ImportRow
from consumer.klaviyo.ratelimits import DEFAULT_LIMITS, EndpointLimit


@dataclass
class FakeKlaviyo:
    """Klaviyo's bulk import as far as the importer sees it; every job completes at its first read once ``open``."""

    rate_limited: bool = False
    jobs: list[list[dict[str, Any]]] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    errors: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    """Import errors by job number (0: the first job)."""
    refusals: list[KlaviyoRejected] = field(default_factory=list)
    """Raised by the next posts, in turn."""
    poison: str | None = None
    """A job holding this email is refused with no pointer."""
    read_failure: Exception | None = None
    open: asyncio.Event = field(default_factory=asyncio.Event)
    sent: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.open.set()

    def endpoint_limit(self, endpoint_class: str) -> EndpointLimit:
        return DEFAULT_LIMITS[endpoint_class]

    def admission_delay(self, endpoint_class: str) -> float:
        return 0.0

    async def find_profiles(self, field: str, values: Sequence[str]) -> list[Profile]:
        return [p for p in self.profiles if getattr(p.attributes, field) in values]

    async def send_import_job(self, rows: Sequence[ImportRow]) -> BulkImportJob:
        self.sent.set()
        if self.refusals:
            raise self.refusals.pop(0)
        if self.poison is not None and any(self.poison.encode() in row.resource for row in rows):
            raise refusal(None)
        self.jobs.append([orjson.loads(row.resource) for row in rows])
        return self._job(len(self.jobs) - 1, "queued")

    async def get_bulk_import_job(self, job_id: str) -> BulkImportJob:
        await self.open.wait()
        if self.read_failure is not None:
            raise self.read_failure
        return self._job(int(job_id), "complete")

    async def get_bulk_import_errors(self, job_id: str) -> list[BulkImportError]:
        return [BulkImportError.model_validate({"type": "import-error", "id": str(i), "attributes": error})
                for i, error in enumerate(self.errors.get(int(job_id), []))]

    def _job(self, number: int, status: str) -> BulkImportJob:
        failed = len(self.errors.get(number, [])) if status == "complete" else 0
        return BulkImportJob.model_validate({"type": "profile-bulk-import-job", "id": str(number), "attributes": {
            "status": status, "total_count": len(self.jobs[number]), "failed_count": failed}})

    def emails(self, job: int) -> list[str]:
        return [row["attributes"]["email"] for row in self.jobs[job]]


@dataclass
class Change:
    """A record asking for ``email``: created, or updated by id when a profile holds it."""

    email: str
    eligible: bool = True
    size: int = 200
    decline: bool = False

    @property
    def identifiers(self) -> frozenset[Identifier]:
        return frozenset({("email", self.email)})

    def resolve(self, holders: Mapping[Identifier, Profile]) -> Imported | None:
        if self.decline:
            return None
        holder = holders.get(("email", self.email))
        return Imported(ProfileAttributes(email=self.email), holder.id if holder else None)


@pytest.fixture
def api() -> FakeKlaviyo:
    return FakeKlaviyo()


@pytest.fixture
async def importer(api: FakeKlaviyo) -> AsyncIterator[ProfileImporter]:
    async with ProfileImporter(api, first_poll_s=0.01) as imports:
        yield imports


async def outcome(importer: ProfileImporter, change: Change) -> Imported | None:
    async with importer.submit(change) as imported:
        return imported


async def backlog(importer: ProfileImporter, changes: list[Change]) -> list[Any]:
    return await asyncio.gather(*(outcome(importer, c) for c in changes), return_exceptions=True)


def emails(count: int, start: int = 0) -> list[Change]:
    return [Change(f"p{n}@shop.test") for n in range(start, start + count)]


async def test_a_backlog_shares_one_job(api: FakeKlaviyo, importer: ProfileImporter) -> None:
    api.profiles.append(Profile(id="01OLD", attributes=ProfileAttributes(email="p3@shop.test")))
    results = await backlog(importer, emails(50))
    assert len(api.jobs) == 1 and len(api.jobs[0]) == 50
    assert all(isinstance(result, Imported) for result in results)
    assert results[3].profile_id == "01OLD" and api.jobs[0][3]["id"] == "01OLD"  # an update names its profile
    assert results[4].profile_id is None and "id" not in api.jobs[0][4]


async def test_a_trickle_is_handed_back_without_a_job(api: FakeKlaviyo, importer: ProfileImporter) -> None:
    assert await outcome(importer, Change("alone@shop.test")) is None
    assert api.jobs == [] and not api.sent.is_set()


async def test_records_the_bulk_path_cannot_take_are_handed_back(api: FakeKlaviyo, importer: ProfileImporter) -> None:
    changes = [*emails(20), Change("mixed@shop.test", eligible=False), Change("huge@shop.test", size=200_000),
               Change("conflict@shop.test", decline=True)]
    results = await backlog(importer, changes)
    assert results[20:] == [None, None, None]
    assert sorted(e for job in range(len(api.jobs)) for e in api.emails(job)) == sorted(c.email for c in emails(20))


async def test_jobs_respect_the_profile_cap(api: FakeKlaviyo) -> None:
    async with ProfileImporter(api, max_profiles=7, first_poll_s=0.01) as importer:
        results = await backlog(importer, emails(20))
    assert all(isinstance(result, Imported) for result in results)
    assert sorted(len(job) for job in api.jobs) == [6, 7, 7]


async def test_records_sharing_an_identifier_are_never_in_flight_together(
    api: FakeKlaviyo, importer: ProfileImporter
) -> None:
    api.open.clear()
    changes = [*emails(100), Change("p4@shop.test")]  # a burst: no trickle, whatever the machine's speed
    pending = asyncio.gather(*(outcome(importer, c) for c in changes))
    await api.sent.wait()
    assert len(api.jobs) == 1 and api.emails(0).count("p4@shop.test") == 1
    assert importer.queued == 1
    api.open.set()
    results = await pending
    assert len(api.jobs) == 2 and api.emails(1) == ["p4@shop.test"]
    assert all(isinstance(result, Imported) for result in results)


async def test_a_handed_back_record_holds_its_identifiers_until_its_block_ends(
    api: FakeKlaviyo, importer: ProfileImporter
) -> None:
    async with importer.submit(Change("p0@shop.test")) as imported:
        assert imported is None  # a trickle: the per-record path runs here
        pending = asyncio.gather(*(outcome(importer, c) for c in emails(100)))
        await api.sent.wait()
        assert "p0@shop.test" not in api.emails(0)
    await pending
    assert api.emails(len(api.jobs) - 1) == ["p0@shop.test"]


async def test_an_import_error_fails_its_row_alone(api: FakeKlaviyo, importer: ProfileImporter) -> None:
    api.errors[0] = [{"code": "invalid", "title": "Invalid input.", "detail": "Invalid email address",
                      "source": {"pointer": "/data/attributes/profiles/data/5/attributes/email"},
                      "original_payload": None}]
    results = await backlog(importer, emails(20))
    refused = results[5]
    assert isinstance(refused, ImportRejected)
    assert (refused.field, refused.error_code) == ("email", "invalid")
    assert refused.detail == "field 'email': invalid: Invalid email address"
    assert all(isinstance(result, Imported) for n, result in enumerate(results) if n != 5)
    assert len(api.jobs) == 1


async def test_an_import_error_is_placed_by_its_payload_when_it_points_nowhere(
    api: FakeKlaviyo, importer: ProfileImporter
) -> None:
    api.errors[0] = [{"code": "invalid", "title": "Invalid input.", "detail": "Bad", "source": {},
                      "original_payload": {"type": "profile", "attributes": {"email": "p7@shop.test"}}}]
    results = await backlog(importer, emails(20))
    assert isinstance(results[7], ImportRejected)
    assert sum(isinstance(result, Imported) for result in results) == 19


async def test_import_errors_that_say_the_account_changed_hand_the_record_back(
    api: FakeKlaviyo, importer: ProfileImporter
) -> None:
    api.errors[0] = [{"code": "duplicate_profile", "title": "Conflict.", "detail": "exists",
                      "source": {"pointer": "/data/attributes/profiles/data/2"}}]
    results = await backlog(importer, emails(20))
    assert results[2] is None
    assert sum(isinstance(result, Imported) for result in results) == 19


async def test_import_errors_no_row_can_be_told_for_hand_the_whole_job_back(
    api: FakeKlaviyo, importer: ProfileImporter
) -> None:
    api.errors[0] = [{"code": "invalid", "title": "Invalid input.", "detail": "?", "source": {}}]
    results = await backlog(importer, emails(20))
    assert results == [None] * 20  # the per-record path redoes them: harmless, and it finds the one at fault


def refusal(pointer: str | None) -> KlaviyoRejected:
    body = ErrorBody(code="invalid", title="Invalid input.", detail="Each profile may be at most 100 KB.",
                     source={"pointer": pointer} if pointer else {}, count=1)
    return KlaviyoRejected("400 invalid: Each profile may be at most 100 KB.", http_status=400, error_code="invalid",
                           errors=(body,), operation="bulk_import_profiles")


async def test_a_job_refused_for_one_row_fails_it_and_sends_the_rest_again(
    api: FakeKlaviyo, importer: ProfileImporter
) -> None:
    api.refusals.append(refusal("/data/attributes/profiles/data/4"))
    results = await backlog(importer, emails(20))
    assert isinstance(results[4], ImportRejected) and results[4].field == ""
    assert api.emails(0) == [c.email for n, c in enumerate(emails(20)) if n != 4]
    assert sum(isinstance(result, Imported) for result in results) == 19


async def test_a_job_refused_without_a_pointer_is_bisected_to_the_record_at_fault(
    api: FakeKlaviyo, importer: ProfileImporter
) -> None:
    api.poison = "p11@shop.test"
    results = await backlog(importer, emails(16))
    refused = [n for n, result in enumerate(results) if isinstance(result, KlaviyoRejected)]
    assert refused == [11]  # the job, a half, a quarter, an eighth, then the one record: refused alone
    assert sorted(e for job in range(len(api.jobs)) for e in api.emails(job)) == sorted(
        c.email for n, c in enumerate(emails(16)) if n != 11)


async def test_an_outage_reaches_every_waiting_record(api: FakeKlaviyo, importer: ProfileImporter) -> None:
    api.open.clear()
    api.read_failure = KlaviyoRejected("401 authentication_failed", http_status=401, outage=Outage.UNAUTHORIZED,
                                       retryable=True)
    pending = asyncio.gather(*(outcome(importer, c) for c in [*emails(20), Change("p1@shop.test")]),
                             return_exceptions=True)
    await api.sent.wait()
    assert importer.queued == 1  # p1's second change waits for the first
    api.open.set()
    results = await pending
    assert all(isinstance(result, KlaviyoRejected) and result.outage is Outage.UNAUTHORIZED for result in results)
    assert len({id(result) for result in results}) == 21  # each record its own copy


async def test_a_credential_without_the_bulk_scopes_sends_profiles_one_by_one(
    api: FakeKlaviyo, importer: ProfileImporter
) -> None:
    api.refusals.append(KlaviyoRejected("403 permission_denied", http_status=403, outage=Outage.UNAUTHORIZED,
                                        retryable=True, operation="bulk_import_profiles"))
    assert await backlog(importer, emails(30)) == [None] * 30  # handed back: the per-record path, not an outage
    assert await backlog(importer, emails(30, start=30)) == [None] * 30  # and no job is tried for a while
    assert api.jobs == []


async def test_close_abandons_queued_records(api: FakeKlaviyo) -> None:
    importer = ProfileImporter(api, linger_s=60)
    waiting = [asyncio.ensure_future(outcome(importer, c)) for c in emails(5)]
    await asyncio.sleep(0)  # the submissions run up to their wait
    assert importer.queued == 5
    await importer.aclose()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    assert api.jobs == [] and not api.sent.is_set()
    with pytest.raises(RuntimeError):
        await outcome(importer, Change("late@shop.test"))


async def test_close_abandons_records_whose_job_is_in_flight(api: FakeKlaviyo) -> None:
    api.open.clear()
    importer = ProfileImporter(api, first_poll_s=0.01)
    waiting = asyncio.ensure_future(backlog(importer, emails(20)))
    await api.sent.wait()
    await importer.aclose()
    results = await waiting
    assert all(isinstance(result, asyncio.CancelledError) for result in results)  # never completed: not committed
    assert len(api.jobs) == 1
