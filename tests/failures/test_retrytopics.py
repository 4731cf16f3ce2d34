"""Retries over hours, end to end on the broker: a retryable failure waits in the source's retry topics (one per
delay, shortened here) and is dead-lettered only after the last; a restart while it waits loses nothing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from consumer.failures import headers as dl
from consumer.failures import retrytopics as rt
from consumer.flows.context import Change, FlowContext
from consumer.routing import RoutingTable, default_sources
from consumer.runtime import Message
from consumer.settings import RuntimeSettings
from consumer.topics import TopicCatalog
from tests.support.changes import customer_source
from tests.support.kafka import read_all
from tests.support.service import RunningService, running_service, service_settings
from tests.support.topic_space import TopicSpace


def _settings(topic_space: TopicSpace, unique: str, delays: list[float]) -> Any:
    return service_settings(topic_space, unique, runtime={"retry_attempts": 1, "retry_topic_delays_s": delays},
                            klaviyo={"api_key": "pk_test_not_used"})


def _customer(cid: str, name: str) -> bytes:
    return orjson.dumps({"id": cid, "first_name": name, "email_address": f"{cid}@example.com"})


async def _end_offsets(svc: RunningService, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=svc.settings.kafka.bootstrap_servers)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


class Flaky:
    """A handler that fails (an unexpected, so retryable, error) the first ``failures`` calls per customer id."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()
        self.succeeded: list[tuple[str, str | None, float]] = []

    async def __call__(self, change: Change[Any], ctx: FlowContext) -> None:
        cid = change.record.id
        self.calls[cid] += 1
        if self.calls[cid] <= self.failures:
            raise RuntimeError(f"flaky failure {self.calls[cid]} of {cid}")
        self.succeeded.append((cid, change.record.first_name, time.time()))


async def test_a_failure_that_persists_for_three_delays_then_succeeds_is_delivered_without_a_dead_letter(
    topic_space: TopicSpace, unique: str
):
    handler = Flaky(failures=3)
    settings = _settings(topic_space, unique, [0.2, 0.4, 0.6])
    async with running_service(settings, routes=[customer_source(handler)]) as svc:
        [(partition, offset)] = await svc.send("customer-changes", [(b"c-1", _customer("c-1", "Ada"),
                                                                     [("origin", b"test")])])
        finished = await svc.wait_finished(4)
        retried = [await read_all(settings.kafka.bootstrap_servers, svc.topic(f"customer-changes-retry-{i}"), 1)
                   for i in range(3)]
        dead_letters = await _end_offsets(svc, svc.topic("customer-changes-dlt"))

    assert [outcome for _, outcome in finished] == [rt.RETRY_SCHEDULED] * 3 + ["succeeded"]
    assert [message.topic for message, _ in finished] == [
        svc.topic("customer-changes"), *(svc.topic(f"customer-changes-retry-{i}") for i in range(3))]
    assert handler.calls["c-1"] == 4 and [(c, n) for c, n, _ in handler.succeeded] == [("c-1", "Ada")]
    assert dead_letters == 0
    source_timestamp = finished[0][0].timestamp
    for index, records in enumerate(retried):
        [record] = records
        headers = dl.decoded_headers(record.headers)
        assert record.key == b"c-1" and record.value == _customer("c-1", "Ada") and record.partition == partition
        assert headers["origin"] == "test"
        assert headers[rt.ATTEMPTS] == str(index + 2)
        assert headers[rt.ORIGINAL_TIMESTAMP] == str(source_timestamp)
        assert headers[dl.ORIGINAL_TOPIC] == svc.topic("customer-changes")
        assert headers[dl.ORIGINAL_OFFSET] == str(offset)
        assert headers[dl.ERROR_CODE] == "UNEXPECTED_ERROR" and headers[dl.ERROR_CLASS] == "retryable"
        assert f"flaky failure {index + 1} of c-1" in headers[dl.EXCEPTION_MESSAGE]
        assert len(orjson.loads(headers.get(dl.HISTORY, "[]"))) == index  # each earlier hop's failure
    # each retry was tried no earlier than its backoff timestamp: its failure wrote the next one after it
    due = [int(dl.decoded_headers(records[0].headers)[rt.BACKOFF_TIMESTAMP]) for records in retried]
    assert retried[1][0].timestamp >= due[0] and retried[2][0].timestamp >= due[1]
    assert handler.succeeded[0][2] * 1000 >= due[2]


async def test_a_failure_that_never_succeeds_is_dead_lettered_after_the_last_delay_with_its_failure_history(
    topic_space: TopicSpace, unique: str
):
    handler = Flaky(failures=10**6)
    settings = _settings(topic_space, unique, [0.1, 0.2, 0.3])
    async with running_service(settings, routes=[customer_source(handler)]) as svc:
        placed = await svc.send("customer-changes", [
            (b"c-2", _customer("c-2", "Grace"), [("origin", b"test")]),
            (b"c-3", b'{"id": "c-3", "first_name": '),  # the record's own failure: dead-lettered at once
        ])
        finished = await svc.wait_finished(5)
        letters = await svc.dead_letters("customer-changes", expected=2)

    outcomes = [(message.key, outcome) for message, outcome in finished]
    assert outcomes.count((b"c-2", rt.RETRY_SCHEDULED)) == 3 and outcomes.count((b"c-2", "dead_lettered")) == 1
    assert outcomes.count((b"c-3", "dead_lettered")) == 1 and len(outcomes) == 5
    assert handler.calls["c-2"] == 4
    by_key = {letter.key: letter for letter in letters}
    pill = dl.decoded_headers(by_key[b"c-3"].headers)
    assert pill[dl.ERROR_CLASS] == "fatal" and rt.ATTEMPTS not in pill and dl.HISTORY not in pill
    assert pill[dl.ORIGINAL_OFFSET] == str(placed[1][1])
    letter = by_key[b"c-2"]
    headers = dl.decoded_headers(letter.headers)
    assert letter.value == _customer("c-2", "Grace") and letter.partition == placed[0][0]
    assert headers["origin"] == "test"
    assert not any(name.startswith("retry_topic-") for name in headers)  # a replay starts the retries afresh
    assert headers[dl.ORIGINAL_TOPIC] == svc.topic("customer-changes")
    assert headers[dl.ORIGINAL_OFFSET] == str(placed[0][1])
    assert "flaky failure 4 of c-2" in headers[dl.EXCEPTION_MESSAGE]
    history = orjson.loads(headers[dl.HISTORY])
    assert [entry["code"] for entry in history] == ["UNEXPECTED_ERROR"] * 3
    assert [f"flaky failure {n} of c-2" in entry["message"] for n, entry in enumerate(history, 1)] == [True] * 3
    assert headers[dl.FIRST_FAILURE] == history[0]["first_failure"] <= headers[dl.LAST_FAILURE]


async def test_a_restart_while_a_record_waits_in_a_retry_topic_loses_nothing(topic_space: TopicSpace, unique: str):
    handler = Flaky(failures=1)
    settings = _settings(topic_space, unique, [5.0])
    async with running_service(settings, routes=[customer_source(handler)]) as first:
        await first.send("customer-changes", [(b"c-4", _customer("c-4", "Ada"))])
        assert [outcome for _, outcome in await first.wait_finished(1)] == [rt.RETRY_SCHEDULED]
        runtime = first.service.runtime
        assert runtime is not None
        retry_topic = first.topic("customer-changes-retry-0")
        async with asyncio.timeout(30):  # the first instance fetched the retry record and holds it, not yet due
            while not any(tp.topic == retry_topic for tp in runtime.oldest_unfinished()):  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.05)
        consumer = runtime._consumer
        assert consumer is not None
        waiting = set(runtime.oldest_unfinished())
        assert {tp for tp in waiting if tp.topic == retry_topic} <= consumer.paused()  # no fetching until it is due
    assert handler.calls["c-4"] == 1 and not handler.succeeded

    async with running_service(settings, routes=[customer_source(handler)]) as second:
        finished = await second.wait_finished(1)
        dead_letters = await _end_offsets(second, second.topic("customer-changes-dlt"))
    assert [(message.topic, outcome) for message, outcome in finished] == [(retry_topic, "succeeded")]
    assert [(c, n) for c, n, _ in handler.succeeded] == [("c-4", "Ada")] and dead_letters == 0


async def test_a_retried_change_is_skipped_when_a_newer_change_of_its_key_succeeded(
    topic_space: TopicSpace, unique: str
):
    handled: list[str | None] = []

    async def fails_the_first_change(change: Change[Any], ctx: FlowContext) -> None:
        if change.record.first_name == "Old":
            raise RuntimeError("old change fails once")
        handled.append(change.record.first_name)

    settings = _settings(topic_space, unique, [0.3])
    async with running_service(settings, routes=[customer_source(fails_the_first_change)]) as svc:
        await svc.send("customer-changes", [(b"c-5", _customer("c-5", "Old")), (b"c-5", _customer("c-5", "New"))])
        finished = await svc.wait_finished(3)
    assert [outcome for _, outcome in finished] == [rt.RETRY_SCHEDULED, "succeeded", "skipped"]
    assert handled == ["New"]  # the older change never wrote over the newer one


def test_retry_headers_are_read_as_spring_writes_them_too():
    message = Message("t", 0, 7, b"k", b"v", [(rt.ATTEMPTS, (3).to_bytes(4, "big")),
                                              (rt.BACKOFF_TIMESTAMP, b"1795000000000")], 0)
    assert rt.hops_done(message) == 2
    assert rt.due_at(message) == 1_795_000_000.0
    assert rt.hops_done(Message("t", 0, 7, b"k", b"v", [], 0)) == 0 and rt.due_at(Message("t", 0, 7, None, None,
                                                                                            [], 0)) is None


def test_every_source_routes_its_retry_topics_and_more_delays_than_retry_topics_are_refused():
    catalog = TopicCatalog.load()
    delays = RuntimeSettings().retry_topic_delays_s
    assert delays == [1200.0, 3600.0, 7200.0, 12000.0]  # iPaaS.com's 10 * n * (n + 1) minutes
    table = RoutingTable(default_sources(), catalog, delays)
    source = catalog.name("customer-changes")
    hops = table.retry_hops(source)
    assert hops == tuple((f"{source}-retry-{i}", delay) for i, delay in enumerate(delays))
    assert set(table.topics) >= {topic for topic, _ in hops} and table.is_retry_topic(hops[0][0])
    assert table.source_name(hops[2][0]) == source and not table.is_retry_topic(source)
    assert table.dead_letter_of(hops[0][0]) == table.dead_letter_of(source)
    assert RoutingTable(default_sources(), catalog, []).retry_hops(source) == ()
    with pytest.raises(ValueError, match="has 4 retry topics in the topic catalog"):
        RoutingTable(default_sources(), catalog, [1.0] * 5)


def test_a_retried_change_is_superseded_only_by_a_newer_change_of_its_key_that_succeeded():
    keys = rt.RetryingKeys(max_keys=2)

    def at(offset: int, key: bytes = b"k", partition: int = 0) -> Message:
        return Message("src", partition, offset, key, b"v", [], 0)

    keys.scheduled(at(5))  # the change at offset 5 waits in a retry topic
    keys.succeeded(at(3, key=b"other"))
    assert keys.newer(at(5)) is None
    keys.succeeded(at(9))  # a newer change of its key succeeded (from the source or a retry topic)
    keys.succeeded(at(7))  # an older success never hides a newer one
    assert keys.newer(at(5)) == (0, 9) and keys.newer(at(9)) is None and keys.newer(at(5, partition=1)) is None
    keys.scheduled(at(1, key=b"a"))
    keys.scheduled(at(1, key=b"b"))  # bounded: the oldest key is forgotten
    assert keys.newer(at(5)) is None
