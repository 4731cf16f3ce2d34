"""The event batcher against the running simulator: records share requests, the endpoint follows the quota, a
rejected job fails only the records it points at, outages reach every waiting record, closing abandons."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from consumer.errors import Outage
from consumer.klaviyo import KlaviyoClient, KlaviyoConnectionError, KlaviyoRejected, NewEvent, ProfileAttributes
from consumer.klaviyo.batching import DirectEvents, EventBatcher, bulk_culprits
from consumer.klaviyo.errors import ErrorBody, EventRejected
from consumer.klaviyo.ratelimits import EndpointLimit
from simulators.klaviyo import Faults, KlaviyoSimulator

from .conftest import MakeClient

LONG_AGO = datetime(1980, 1, 1, tzinfo=UTC)
ONE_AT_A_TIME = EndpointLimit(burst=1, steady=1)


def order(n: int, *, lines: int = 3, time: datetime | None = None, email: str | None = None,
          **properties: Any) -> list[NewEvent]:
    """A Placed Order and its Ordered Products, as the order flow builds them."""
    profile = ProfileAttributes(email=email or f"buyer{n}@shop.test")
    placed = NewEvent(metric="Placed Order", profile=profile, unique_id=f"T{n}", value=10.0, time=time,
                      properties=dict(properties))
    return [placed, *(NewEvent(metric="Ordered Product", profile=profile, unique_id=f"T{n}:{i}", value=1.0,
                               time=time) for i in range(lines))]


async def submit_all(batcher: EventBatcher, records: list[list[NewEvent]]) -> list[BaseException | None]:
    """Submit every record at once, as the runtime's workers do; each record's outcome (None: accepted)."""
    return await asyncio.gather(*(batcher.submit(events) for events in records), return_exceptions=True)


def job_events(simulator: KlaviyoSimulator, status: int = 202) -> list[list[str]]:
    """The unique ids of each bulk job the simulator answered with ``status``."""
    jobs = []
    for request in simulator.received("bulk_create_events"):
        if request.status == status:
            entries = request.body["data"]["attributes"]["events-bulk-create"]["data"]
            jobs.append([event["attributes"]["unique_id"] for entry in entries
                         for event in entry["attributes"]["events"]["data"]])
    return jobs


def stored(simulator: KlaviyoSimulator) -> list[str]:
    return sorted(str(event.unique_id) for event in simulator.store.events)


def expected(*numbers: int, lines: int = 3) -> list[str]:
    return sorted(uid for n in numbers for uid in (f"T{n}", *(f"T{n}:{i}" for i in range(lines))))


@pytest.fixture
async def batcher(client: KlaviyoClient) -> Any:
    async with EventBatcher(client) as running:
        yield running


# --- sharing requests -------------------------------------------------------------------------------------------
async def test_concurrent_records_share_one_bulk_job(simulator: KlaviyoSimulator, batcher: EventBatcher) -> None:
    outcomes = await submit_all(batcher, [order(n) for n in range(100)])
    assert outcomes == [None] * 100
    assert [r.operation for r in simulator.received()] == ["bulk_create_events"]
    assert stored(simulator) == expected(*range(100))


async def test_a_trickle_goes_as_single_events(simulator: KlaviyoSimulator, batcher: EventBatcher) -> None:
    await batcher.submit(order(1, lines=1))
    await batcher.submit(order(2, lines=1))
    assert [r.operation for r in simulator.received()] == ["create_event"] * 4
    assert stored(simulator) == expected(1, 2, lines=1)


async def test_jobs_hold_at_most_1000_events_and_keep_records_whole(
    simulator: KlaviyoSimulator, batcher: EventBatcher
) -> None:
    assert await submit_all(batcher, [order(n) for n in range(300)]) == [None] * 300
    jobs = job_events(simulator)
    assert sorted(len(job) for job in jobs) == [200, 1000]
    for n in range(300):
        assert sum(f"T{n}" in job for job in jobs) == 1  # a record's events travel together
    assert stored(simulator) == expected(*range(300))


async def test_a_record_larger_than_a_job_is_split(simulator: KlaviyoSimulator, batcher: EventBatcher) -> None:
    await batcher.submit(order(1, lines=1500))
    assert sorted(len(job) for job in job_events(simulator)) == [501, 1000]  # two jobs, sent at once
    assert len(stored(simulator)) == 1501


async def test_jobs_stay_under_the_payload_cap(simulator: KlaviyoSimulator, client: KlaviyoClient) -> None:
    cap = 60_000
    async with EventBatcher(client, max_bytes=cap) as batcher:
        assert await submit_all(batcher, [order(n, note="x" * 2_000) for n in range(40)]) == [None] * 40
    sizes = [len(orjson.dumps(request.body)) for request in simulator.received("bulk_create_events")]
    assert len(sizes) > 1 and max(sizes) <= cap
    assert stored(simulator) == expected(*range(40))


async def test_events_repeating_another_records_unique_id_go_in_a_later_job(
    simulator: KlaviyoSimulator, batcher: EventBatcher
) -> None:
    records = [order(n) for n in range(40)] + [order(7)]  # a redelivery of record 7 while the first is queued
    assert await submit_all(batcher, records) == [None] * 41
    assert {r.status for r in simulator.received()} == {202}
    for job in job_events(simulator):
        assert len(job) == len(set(job))
    assert stored(simulator) == expected(*range(40))


# --- the endpoint follows the quota -----------------------------------------------------------------------------
async def test_single_events_while_the_job_quota_is_spent(
    simulator: KlaviyoSimulator, make_client: MakeClient
) -> None:
    client = make_client(rate_limits={"bulk_create_events": ONE_AT_A_TIME})
    async with EventBatcher(client) as batcher:
        assert await submit_all(batcher, [order(n) for n in range(100)]) == [None] * 100  # more than 350 events
        await batcher.submit(order(100))
    assert [r.operation for r in simulator.received()] == ["bulk_create_events"] + ["create_event"] * 4


async def test_a_few_events_amid_heavy_traffic_go_in_a_job(simulator: KlaviyoSimulator, batcher: EventBatcher) -> None:
    assert await submit_all(batcher, [order(n) for n in range(100)]) == [None] * 100
    await batcher.submit(order(100))  # 4 events, but 400 arrived a moment ago: a job, not four requests
    assert [r.operation for r in simulator.received()] == ["bulk_create_events"] * 2


async def test_the_pace_follows_this_instances_share_of_the_quota(
    simulator: KlaviyoSimulator, client: KlaviyoClient
) -> None:
    client.set_quota_share(0.1)  # one instance of ten: 1 job/s, 15 a minute
    assert client.endpoint_limit("bulk_create_events") == EndpointLimit(burst=1, steady=15)
    async with EventBatcher(client) as batcher:
        assert await submit_all(batcher, [order(n) for n in range(100)]) == [None] * 100
        await batcher.submit(order(100))  # its share of jobs is spent: single events carry it
    assert [r.operation for r in simulator.received()] == ["bulk_create_events"] + ["create_event"] * 4


async def test_a_job_when_the_single_event_quota_cannot_take_the_record(
    simulator: KlaviyoSimulator, make_client: MakeClient
) -> None:
    client = make_client(rate_limits={"create_event": EndpointLimit(burst=2, steady=100)})
    async with EventBatcher(client) as batcher:
        await batcher.submit(order(1))
    assert [r.operation for r in simulator.received()] == ["bulk_create_events"]


# --- rejections -------------------------------------------------------------------------------------------------
async def test_a_rejected_job_fails_only_the_records_it_points_at(
    simulator: KlaviyoSimulator, batcher: EventBatcher
) -> None:
    bad = {5: order(5, time=LONG_AGO), 17: order(17, email="not-an-email")}
    records = [bad.get(n) or order(n) for n in range(50)]
    outcomes = await submit_all(batcher, records)

    time_error, profile_error = outcomes[5], outcomes[17]
    assert isinstance(time_error, EventRejected) and isinstance(profile_error, EventRejected)
    assert (time_error.index, time_error.field, time_error.http_status) == (0, "time", 400)
    assert time_error.message == ("Error calling Klaviyo (400 invalid: The event time must be after 1990 and at "
                                  "most one year in the future.)")
    assert (profile_error.index, profile_error.field) == (0, "profile/data/attributes/email")
    assert [o for n, o in enumerate(outcomes) if n not in bad] == [None] * 48
    assert stored(simulator) == expected(*(n for n in range(50) if n not in bad))
    statuses = [r.status for r in simulator.received("bulk_create_events")]
    assert statuses.count(202) == 1 and statuses.count(400) == 2  # each innocent record sent once more, no more


async def test_the_event_a_pointer_names_is_reported_with_its_index(
    simulator: KlaviyoSimulator, batcher: EventBatcher
) -> None:
    mixed = order(3)
    mixed[2] = mixed[2].model_copy(update={"time": LONG_AGO})
    outcomes = await submit_all(batcher, [order(n) for n in range(3)] + [mixed] + [order(n) for n in range(4, 40)])
    error = outcomes[3]
    assert isinstance(error, EventRejected) and (error.index, error.field) == (2, "time")
    assert "T3" not in stored(simulator) and len(stored(simulator)) == 39 * 4


async def test_a_rejection_without_a_pointer_is_bisected_down_to_its_records(
    simulator: KlaviyoSimulator, batcher: EventBatcher
) -> None:
    simulator.faults = Faults(omit_error_sources=True, operations=["bulk_create_events"])
    bad = {3, 12}
    records = [order(n, time=LONG_AGO if n in bad else None) for n in range(16)]
    outcomes = await submit_all(batcher, records)

    for n in bad:
        error = outcomes[n]
        assert isinstance(error, KlaviyoRejected) and not isinstance(error, EventRejected)
        assert error.message.startswith("Error calling Klaviyo (400 invalid: The event time must be after 1990")
    assert [o for n, o in enumerate(outcomes) if n not in bad] == [None] * 14
    assert stored(simulator) == expected(*(n for n in range(16) if n not in bad))
    jobs = simulator.received("bulk_create_events")
    assert len(jobs) <= 1 + 2 * len(bad) * math.ceil(math.log2(16))
    for accepted in job_events(simulator):
        assert not {f"T{n}" for n in bad} & set(accepted)


async def test_single_event_rejections_name_the_lowest_refused_event(
    simulator: KlaviyoSimulator, batcher: EventBatcher
) -> None:
    with pytest.raises(EventRejected) as caught:
        await batcher.submit(order(1, time=LONG_AGO))
    assert (caught.value.index, caught.value.field) == (0, "time")
    assert [r.operation for r in simulator.received()] == ["create_event"] * 4 and stored(simulator) == []


# --- outages and other failures ---------------------------------------------------------------------------------
async def test_an_outage_reaches_every_waiting_record_unchanged(
    simulator: KlaviyoSimulator, make_client: MakeClient
) -> None:
    client = make_client(rate_limits={"bulk_create_events": ONE_AT_A_TIME, "create_event": ONE_AT_A_TIME},
                         max_retries=0)
    simulator.faults = Faults(error_rates={503: 1.0})
    async with EventBatcher(client, max_events=100) as batcher:
        outcomes = await submit_all(batcher, [order(n) for n in range(75)])  # three jobs' worth, one may leave

    assert [r.operation for r in simulator.received()] == ["bulk_create_events"]  # the rest failed unsent
    assert all(isinstance(o, KlaviyoRejected) and not isinstance(o, EventRejected) for o in outcomes)
    errors = [o for o in outcomes if isinstance(o, KlaviyoRejected)]
    assert {(e.http_status, e.outage, e.destination, e.retryable) for e in errors} == {
        (503, Outage.DOWN, "klaviyo", True)}
    assert len({id(e) for e in errors}) == 75  # each record raises its own copy


async def test_klaviyo_unreachable_reaches_the_records_as_a_connection_error(
    simulator: KlaviyoSimulator, make_client: MakeClient
) -> None:
    simulator.faults = Faults(drop_rate=1.0)
    async with EventBatcher(make_client(max_retries=0)) as batcher:
        outcomes = await submit_all(batcher, [order(1, lines=1), *(order(n) for n in range(2, 40))])
    assert all(isinstance(o, KlaviyoConnectionError) and o.outage is Outage.DOWN for o in outcomes)


async def test_throttling_past_the_retries_fails_only_the_records_of_that_request(
    simulator: KlaviyoSimulator, make_client: MakeClient
) -> None:
    simulator.faults = Faults(fail_next=[429])
    async with EventBatcher(make_client(max_retries=0)) as batcher:
        outcomes = await submit_all(batcher, [order(n) for n in range(40)])
        assert all(isinstance(o, KlaviyoRejected) and o.retryable and o.outage is None for o in outcomes)
        assert await submit_all(batcher, [order(n) for n in range(40)]) == [None] * 40  # a retry delivers them
    assert stored(simulator) == expected(*range(40))


# --- cancelling and closing -------------------------------------------------------------------------------------
async def test_closing_abandons_what_is_queued(simulator: KlaviyoSimulator, make_client: MakeClient) -> None:
    client = make_client(rate_limits={"bulk_create_events": ONE_AT_A_TIME, "create_event": ONE_AT_A_TIME})
    batcher = EventBatcher(client)
    await batcher.submit(order(1))  # spends the only job
    waiting = asyncio.ensure_future(batcher.submit(order(2)))
    await asyncio.sleep(0)  # the submission runs up to its wait
    assert batcher.queued == 4
    await batcher.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert [r.operation for r in simulator.received()] == ["bulk_create_events"]
    assert stored(simulator) == expected(1)
    with pytest.raises(RuntimeError):
        await batcher.submit(order(3))


async def test_a_cancelled_record_is_not_sent(simulator: KlaviyoSimulator, make_client: MakeClient) -> None:
    client = make_client(rate_limits={"bulk_create_events": ONE_AT_A_TIME, "create_event": ONE_AT_A_TIME})
    async with EventBatcher(client) as batcher:
        await batcher.submit(order(1))
        cancelled = asyncio.ensure_future(batcher.submit(order(2)))
        await asyncio.sleep(0)
        assert batcher.queued == 4
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert batcher.queued == 0
    assert stored(simulator) == expected(1)


# --- one record at a time ---------------------------------------------------------------------------------------
async def test_direct_events_send_each_record_on_its_own(simulator: KlaviyoSimulator, client: KlaviyoClient) -> None:
    direct = DirectEvents(client)
    await asyncio.gather(direct.submit(order(1)), direct.submit(order(2, lines=0)))
    assert sorted(r.operation or "" for r in simulator.received()) == ["bulk_create_events", "create_event"]
    bad = order(3)
    bad[1] = bad[1].model_copy(update={"time": LONG_AGO})
    with pytest.raises(EventRejected) as caught:
        await direct.submit(bad)
    assert (caught.value.index, caught.value.field) == (1, "time")


# --- pointers ---------------------------------------------------------------------------------------------------
def test_pointers_name_events_or_whole_entries() -> None:
    base = "/data/attributes/events-bulk-create/data"
    pointers = [f"{base}/1/attributes/events/data/0/attributes/time", f"{base}/0/attributes/profile/data/id",
                f"{base}/9/attributes/events/data/0", f"{base}", "/data"]
    error = KlaviyoRejected("400 invalid", http_status=400, errors=tuple(
        ErrorBody(code="invalid", detail="bad", source={"pointer": p}) for p in pointers))
    found = bulk_culprits(error, [[0, 2], [1, 3]])
    assert {position: field for position, (_, field) in found.items()} == {
        1: "time", 0: "profile/data/id", 2: "profile/data/id"}
