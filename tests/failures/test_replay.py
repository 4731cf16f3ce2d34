"""Replay: the retry decision of a direct replay, and against the real broker reading, filtering, replay
(republish and direct), dry runs, interrupted replays resuming without duplicates, and a replayed record that
fails again keeping its history."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST, CatalogError, Flow
from consumer.cli import replay_dispatch
from consumer.errors import Outage
from consumer.failures import headers as dl
from consumer.failures.deadletters import DeadLetter, read_dead_letters
from consumer.failures.filters import LetterFilter, dead_letter_topics
from consumer.failures.replay import (
    ReplayProgress,
    ReplayResult,
    default_run_id,
    load_replay_state,
    replay,
    replay_retry_delay,
)
from consumer.failures.scan import TopicScan
from consumer.flows.context import Change, FlowContext
from consumer.routing import Source
from consumer.runtime import Failure, RetryPolicy
from consumer.settings import Settings
from consumer.topics import TopicCatalog
from tests.failures.helpers import all_offsets, dead_letter, prepared
from tests.support.changes import customer_source
from tests.support.kafka import read_all
from tests.support.service import running_service, service_settings
from tests.support.topic_space import TopicSpace

SELECTED, OTHER = KLAVIYO_REJECTED_REQUEST.code, KLAVIYO_CONNECTION_ERROR.code


# --- without the broker ------------------------------------------------------------------------------------------
def test_a_direct_replay_retries_what_the_runtime_retries_and_waits_out_outages():
    policy = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=30.0)

    def failure(attempts: int, *, retryable: bool = False, outage: Outage | None = None,
                retry_after: float | None = None) -> Failure:
        return Failure(code="X", message="x", exception_fqcn="x", attempts=attempts, retryable=retryable,
                       outage=outage, retry_after=retry_after)

    assert 0 <= replay_retry_delay(policy, failure(1, retryable=True)) <= 0.5  # type: ignore[operator]
    assert replay_retry_delay(policy, failure(2, retryable=True, retry_after=7.0)) == 7.0
    assert replay_retry_delay(policy, failure(3, retryable=True)) is None  # the policy's attempts are spent
    assert replay_retry_delay(policy, failure(1)) is None  # not retryable: fails at once
    # a destination's outage is never the letter's: the replay waits, however long it lasts
    assert replay_retry_delay(policy, failure(50, retryable=True, outage=Outage.UNAUTHORIZED)) is not None
    assert replay_retry_delay(policy, failure(50, outage=Outage.DOWN, retry_after=3.0)) == 3.0


async def test_a_direct_replay_needs_the_dispatcher_from_its_caller():
    with pytest.raises(ValueError, match="dispatcher"):
        await replay(service_settings(TopicSpace("127.0.0.1:1"), "x"), mode="direct")


# --- through the broker ------------------------------------------------------------------------------------------
async def _direct(settings: Settings, catalog: TopicCatalog, routes: list[Source], **options: Any) -> ReplayResult:
    """A direct replay as ``dlq replay --direct`` runs it: through the service's dispatcher, built by the CLI."""
    async with replay_dispatch(settings, catalog, routes=routes) as dispatch:
        return await replay(settings, catalog=catalog, mode="direct", dispatch=dispatch, **options)


async def _committed(settings: Settings, topic: str, expected: int) -> list[ConsumerRecord]:
    """What a read_committed consumer (like the service) sees on ``topic``, once ``expected`` records arrived."""
    async with TopicScan(settings.kafka, [topic]) as scan:
        records = [record async for record in scan.records()]
    assert len(records) >= expected
    return records


async def _physical(settings: Settings, topic: str) -> int:
    """Records on ``topic`` as a read_uncommitted consumer sees them (aborted ones included)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None,
                                isolation_level="read_uncommitted", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or range(8)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        count = 0
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            batch = await consumer.getmany(timeout_ms=500)
            count += sum(len(records) for records in batch.values())
        return count
    finally:
        await consumer.stop()


def _recording_routes(handled: list[Change[Any]], failing: set[str] | None = None) -> list[Source]:
    async def handle(event: Change[Any], ctx: FlowContext) -> None:
        if failing is not None and event.record_id in failing:
            raise CatalogError(KLAVIYO_REJECTED_REQUEST, "400 invalid: email is not valid", http_status=400)
        handled.append(event)

    return [customer_source(handle, updated=Flow.ADD_PROFILE_FROM_IPAAS)]


async def test_replay_of_1000_letters_selected_by_a_filter_reaches_the_handler_once_each(
    topic_space: TopicSpace, unique: str
):
    settings, catalog = await prepared(topic_space, unique)
    await dead_letter(settings, catalog, range(1000), SELECTED)
    await dead_letter(settings, catalog, range(1000, 1200), OTHER)  # not selected

    listed = await read_dead_letters(settings.kafka, dead_letter_topics(catalog), LetterFilter.build(codes=[SELECTED]))
    assert len(listed) == 1000
    result = await replay(settings, catalog=catalog, topics=["customer-changes"],
                          selection=LetterFilter.build(codes=[SELECTED]), batch_size=128, rate=100_000)
    assert (result.replayed, result.skipped, result.resumed, result.total_replayed) == (1000, 0, False, 1000)
    assert REGISTRY.get_sample_value("ipaas_klaviyo_dead_letters_replayed_total", {
        "flow": Flow.ADD_PROFILE_FROM_IPAAS.slug, "mode": "republish"}) >= 1000

    handled: list[Change[Any]] = []
    async with running_service(settings, routes=_recording_routes(handled)) as svc:
        finished = await svc.wait_finished(1000)
    assert Counter(event.record_id for event in handled) == Counter(f"c-{i}" for i in range(1000))
    assert len(finished) == 1000
    # nothing else is on the source topic, in the original partitions, with the headers and a replay count
    replayed = await _committed(settings, catalog.name("customer-changes"), 1000)
    assert len(replayed) == 1000
    for record in replayed:
        headers = dl.decoded_headers(record.headers)
        number = int(record.key.decode().removeprefix("c-"))
        assert record.partition == number % 8
        assert headers["trace"] == f"t-{number}" and headers[dl.REPLAY_COUNT] == "1"
        assert headers[dl.ORIGINAL_OFFSET] == str(10_000 + number) and headers[dl.ERROR_CODE] == SELECTED
    # per partition, in dead-letter order (the source's per-key order)
    letters_order = [(letter.partition, letter.key) for letter in listed]
    for partition in range(8):
        assert [r.key for r in replayed if r.partition == partition] == [k for p, k in letters_order if p == partition]
    # re-running the same command resumes the finished run: nothing is sent again
    again = await replay(settings, catalog=catalog, topics=["customer-changes"],
                         selection=LetterFilter.build(codes=[SELECTED]))
    assert (again.run_id, again.resumed, again.replayed, again.total_replayed) == (result.run_id, True, 0, 1000)


async def test_a_dry_run_lists_what_would_be_replayed_and_writes_nothing(topic_space: TopicSpace, unique: str):
    settings, catalog = await prepared(topic_space, unique)
    await dead_letter(settings, catalog, range(300), SELECTED)
    await dead_letter(settings, catalog, range(300, 400), OTHER)
    before = await all_offsets(settings, catalog)

    result = await replay(settings, catalog=catalog, selection=LetterFilter.build(codes=[SELECTED]), dry_run=True)
    assert result.dry_run and result.replayed == 300
    assert sorted(letter.key for letter in result.letters) == sorted(f"c-{i}".encode() for i in range(300))
    assert await all_offsets(settings, catalog) == before  # no record, no progress, no transaction marker
    assert await load_replay_state(settings.kafka, catalog.name("replay-state"), result.run_id) is None


async def test_an_interrupted_replay_resumes_without_duplicates(topic_space: TopicSpace, unique: str):
    settings, catalog = await prepared(topic_space, unique)
    await dead_letter(settings, catalog, range(1000), SELECTED)
    selection = LetterFilter.build(flows=[Flow.ADD_PROFILE_FROM_IPAAS.slug])
    seen: list[ReplayProgress] = []

    def interrupt_half_way(progress: ReplayProgress) -> None:
        seen.append(progress)
        if progress.replayed == 500 and not task.cancelling():
            task.cancel()

    task = asyncio.create_task(replay(settings, catalog=catalog, selection=selection, batch_size=64,
                                      on_progress=interrupt_half_way))
    with pytest.raises(asyncio.CancelledError):
        await task
    run_id = default_run_id("republish", dead_letter_topics(catalog), selection.spec())
    state = await load_replay_state(settings.kafka, catalog.name("replay-state"), run_id)
    assert state is not None and not state.finished
    assert state.replayed == 448 == seen[-1].committed  # 7 batches of 64 committed; the 8th was aborted
    source = catalog.name("customer-changes")
    assert len(await _committed(settings, source, 448)) == 448  # the aborted batch is invisible...
    assert await _physical(settings, source) >= 500  # ...though its records were written

    resumed = await replay(settings, catalog=catalog, selection=selection, batch_size=64)
    assert (resumed.resumed, resumed.replayed, resumed.total_replayed) == (True, 552, 1000)
    handled: list[Change[Any]] = []
    async with running_service(settings, routes=_recording_routes(handled)) as svc:
        await svc.wait_finished(1000)
    assert Counter(event.record_id for event in handled) == Counter(f"c-{i}" for i in range(1000))
    assert len(await _committed(settings, source, 1000)) == 1000


async def test_a_replayed_record_that_fails_again_is_dead_lettered_again_with_its_history(
    topic_space: TopicSpace, unique: str
):
    settings = service_settings(topic_space, unique, klaviyo={"api_key": "pk_test_not_used"})
    handled: list[Change[Any]] = []
    failing = {f"c-{i}" for i in range(0, 10, 2)}
    routes = _recording_routes(handled, failing)
    async with running_service(settings, routes=routes) as svc:
        placed = await svc.send("customer-changes", [
            (f"c-{i}".encode(), orjson.dumps({"id": f"c-{i}", "first_name": f"N{i}"}), [("trace", b"t")])
            for i in range(10)])
        await svc.wait_finished(10)
        first = await svc.dead_letters("customer-changes", expected=5)
        assert len(first) == 5

        # republish: the service fails them again and dead-letters them with the first failure in their history
        result = await replay(settings, catalog=svc.catalog, selection=LetterFilter.build(codes=[SELECTED]))
        assert result.replayed == 5
        await svc.wait_finished(15)
        letters = await svc.dead_letters("customer-changes", expected=10)
    second = [DeadLetter.from_record(r) for r in letters if dl.decoded_headers(r.headers).get(dl.REPLAY_COUNT)]
    assert len(second) == 5
    by_key = {letter.key: letter for letter in map(DeadLetter.from_record, first)}
    for letter in second:
        earlier = by_key[letter.key]
        number = int(letter.key.decode().removeprefix("c-"))  # type: ignore[union-attr]
        assert letter.replay_count == 1
        assert (letter.original_partition, letter.original_offset) == placed[number]  # the first source position
        assert letter.context["trace"] == "t"
        assert [h["code"] for h in letter.history] == [SELECTED]
        assert letter.history[0]["last_failure"] == earlier.context[dl.LAST_FAILURE]
        assert letter.first_failure == earlier.first_failure

    # direct, still failing: the service's failure path (error log, dead letter), history of two failures
    since = min(letter.last_failure for letter in second)  # type: ignore[type-var]
    direct = await _direct(settings, svc.catalog, routes, selection=LetterFilter.build(since=since))
    assert (direct.replayed, direct.failed) == (0, 5)
    dlt = svc.topic("customer-changes-dlt")
    third = [letter for letter in await read_dead_letters(settings.kafka, [dlt]) if letter.replay_count == 2]
    assert len(third) == 5
    assert all(len(letter.history) == 2 and letter.attempts == 1 for letter in third)
    errors = await read_all(topic_space.bootstrap, svc.topic("error-log"), expected=15)
    assert sum(1 for e in errors if orjson.loads(e.value)["dead_lettered"]) == 15

    # direct, fixed: each letter reaches the handler once
    failing.clear()
    since = min(letter.last_failure for letter in third)  # type: ignore[type-var]
    fixed = await _direct(settings, svc.catalog, routes, selection=LetterFilter.build(since=since), rate=1000)
    assert (fixed.replayed, fixed.failed) == (5, 0)
    assert Counter(e.record_id for e in handled) == Counter(
        [f"c-{i}" for i in range(1, 10, 2)] + [f"c-{i}" for i in range(0, 10, 2)])


async def test_an_interrupted_direct_replay_resumes_without_handling_a_letter_twice(
    topic_space: TopicSpace, unique: str
):
    settings, catalog = await prepared(topic_space, unique)
    await dead_letter(settings, catalog, range(100), SELECTED)
    handled: list[Change[Any]] = []
    routes = _recording_routes(handled)

    def interrupt(progress: ReplayProgress) -> None:
        if progress.replayed == 40 and not task.cancelling():
            task.cancel()

    task = asyncio.create_task(_direct(settings, catalog, routes, on_progress=interrupt))
    with pytest.raises(asyncio.CancelledError):
        await task
    before = len(handled)  # 40, or 41 when the next letter was handled before the cancellation could land
    assert before in (40, 41)
    started = time.monotonic()
    resumed = await _direct(settings, catalog, routes, rate=40)
    assert (resumed.resumed, resumed.replayed, resumed.total_replayed) == (True, 100 - before, 100)
    assert time.monotonic() - started >= 0.95  # the rate limit: 40 at once, the rest after a second
    assert Counter(e.record_id for e in handled) == Counter(f"c-{i}" for i in range(100))
