"""The runtime against the real broker: ordering, commits, retries, dead letters, pauses, rebalances."""

from __future__ import annotations

import asyncio
import random

from aiokafka.structs import TopicPartition

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST, CatalogError
from consumer.destinations import Destinations
from consumer.errors import Outage
from consumer.failures import headers as dl
from consumer.failures.deadletters import DeadLetterPublisher
from consumer.kafka import reliable_producer
from consumer.observability import metrics
from consumer.runtime import Handled, InboundMessage, StreamRuntime
from tests.support.kafka import (
    group_offsets,
    kafka_settings,
    produce,
    read_all,
    running,
    runtime_limits,
)
from tests.support.recording import CollectingSink, RecordingProcessor
from tests.support.topic_space import TopicSpace


async def test_each_keys_events_are_handled_in_offset_order_under_concurrency(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    topic = topic_space.name("order")
    await topic_space.create([topic], partitions=8)
    keys = [f"key-{i}".encode() for i in range(500)]
    records = [(random.choice(keys), f"event-{i}".encode()) for i in range(10_000)]
    await produce(kafka_bootstrap, topic, records)
    processor = RecordingProcessor(max_delay_s=0.002)
    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(max_in_flight=64, max_buffered=1000),
        topics=[topic], processor=processor, failure_sink=CollectingSink(), group_id=f"g-{unique}",
    )
    async with running(runtime):
        await processor.wait_for(lambda: len(processor.handled) >= len(records))

    assert len(processor.handled) == len(records)
    assert set(processor.by_key) == {key for key, _ in records}
    for key, offsets in processor.by_key.items():
        assert offsets == sorted(offsets), f"{key!r} handled out of offset order"
    # lanes really ran concurrently: records of different keys finished out of offset order
    partition_zero = [m.offset for m in processor.handled if m.partition == 0]
    assert partition_zero != sorted(partition_zero)


async def test_graceful_stop_commits_every_completed_record(kafka_bootstrap: str, topic_space: TopicSpace, unique: str):
    topic, group = topic_space.name("stop"), f"g-{unique}"
    await topic_space.create([topic], partitions=4)
    placed = await produce(kafka_bootstrap, topic, [(f"k{i % 40}".encode(), b"x") for i in range(400)])
    processor = RecordingProcessor()
    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(commit_interval_s=3600),
        topics=[topic], processor=processor, failure_sink=CollectingSink(), group_id=group,
    )
    async with running(runtime):
        await processor.wait_for(lambda: len(processor.handled) >= 400)

    expected = {}
    for partition, offset in placed:
        expected[TopicPartition(topic, partition)] = max(expected.get(TopicPartition(topic, partition), 0), offset + 1)
    assert await group_offsets(kafka_bootstrap, group) == expected


async def test_a_retryable_failure_is_retried_and_then_succeeds(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    topic = topic_space.name("retry")
    await topic_space.create([topic], partitions=1)
    await produce(kafka_bootstrap, topic, [(b"a", b"1"), (b"a", b"2"), (b"b", b"3")])

    def fail_twice(message: InboundMessage, call: int) -> None:
        if message.value == b"1" and call <= 2:
            raise CatalogError(KLAVIYO_REJECTED_REQUEST, "503 server_error: try later", retryable=True,
                               http_status=503)

    processor = RecordingProcessor(fail=fail_twice)
    sink = CollectingSink()
    runtime = StreamRuntime(kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(), topics=[topic],
                            processor=processor, failure_sink=sink, group_id=f"g-{unique}")
    async with running(runtime):
        await processor.wait_for(lambda: len(processor.handled) >= 3)

    assert processor.calls[(0, 0)] == 3
    assert processor.by_key[b"a"] == [0, 1]  # the retried record still came before its successor
    assert sink.failed == []


async def test_a_record_failing_every_attempt_is_dead_lettered_with_its_context(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    topic, group = topic_space.name("dl"), f"g-{unique}"
    dlt = f"{topic}-dlt"
    await topic_space.create([topic, dlt], partitions=2)
    placed = await produce(kafka_bootstrap, topic, [
        (b"bad", b'{"id": 1}', [("trace", b"t-1")]),
        (b"bad", b'{"id": 2}'),
        (b"good", b'{"id": 3}'),
    ])

    def reject_first(message: InboundMessage, call: int) -> None:
        if message.value == b'{"id": 1}':
            raise CatalogError(KLAVIYO_REJECTED_REQUEST, "400 invalid: email is not valid", retryable=True,
                               http_status=400, error_code="invalid")

    processor = RecordingProcessor(fail=reject_first)
    producer = reliable_producer(kafka_settings(kafka_bootstrap))
    await producer.start()
    publisher = DeadLetterPublisher(producer, group, lambda _: dlt)
    runtime = StreamRuntime(kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(retry_attempts=3),
                            topics=[topic], processor=processor, failure_sink=publisher.publish, group_id=group)
    try:
        async with running(runtime):
            await processor.wait_for(lambda: len(processor.handled) >= 2)
    finally:
        await producer.stop()

    assert processor.calls[placed[0]] == 3
    letters = await read_all(kafka_bootstrap, dlt, expected=1)
    assert len(letters) == 1
    letter = letters[0]
    headers = dl.decoded_headers(letter.headers)
    assert (letter.key, letter.value, letter.partition) == (b"bad", b'{"id": 1}', placed[0][0])
    assert headers["trace"] == "t-1"
    assert headers[dl.ORIGINAL_TOPIC] == topic
    assert headers[dl.ORIGINAL_PARTITION] == str(placed[0][0])
    assert headers[dl.ORIGINAL_OFFSET] == str(placed[0][1])
    assert headers[dl.ORIGINAL_CONSUMER_GROUP] == group
    assert headers[dl.ORIGINAL_TIMESTAMP].isdigit()
    assert headers[dl.EXCEPTION_FQCN] == "consumer.catalog.CatalogError"
    assert headers[dl.EXCEPTION_MESSAGE] == "Error calling Klaviyo (400 invalid: email is not valid)"
    assert headers[dl.ERROR_CODE] == "KLAVIYO_REJECTED_REQUEST"
    assert headers[dl.FLOW] == "all"
    assert headers[dl.ATTEMPTS] == "3"
    assert headers[dl.HTTP_STATUS] == "400"
    assert headers[dl.FIRST_FAILURE] <= headers[dl.LAST_FAILURE]
    # the key's next record waited for the dead letter, then went through
    assert processor.by_key[b"bad"] == [placed[1][1]]


async def test_infrastructure_failure_pauses_consumption_instead_of_dead_lettering(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    topic = topic_space.name("infra")
    await topic_space.create([topic], partitions=2)
    await produce(kafka_bootstrap, topic, [(f"k{i}".encode(), b"v") for i in range(50)])
    klaviyo_up = asyncio.Event()

    def down_until_flag(message: InboundMessage, call: int) -> None:
        if not klaviyo_up.is_set():
            raise CatalogError(KLAVIYO_CONNECTION_ERROR, "ConnectError: connection refused", retryable=True,
                               destination="klaviyo", outage=Outage.DOWN)

    processor = RecordingProcessor(fail=down_until_flag)
    sink = CollectingSink()
    runtime = StreamRuntime(kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(retry_attempts=2),
                            topics=[topic], processor=processor, failure_sink=sink, group_id=f"g-{unique}")
    async with running(runtime):
        # more failed calls than the policy's attempts for every record: none was dead-lettered
        await processor.wait_for(lambda: sum(processor.calls.values()) >= 150)
        assert "infrastructure" in runtime.health.paused
        assert sink.failed == []
        klaviyo_up.set()
        await processor.wait_for(lambda: len(processor.handled) >= 50)

    assert sink.failed == []
    assert "infrastructure" not in runtime.health.paused


async def test_an_outage_pauses_only_the_topics_that_need_the_destination(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    needs_ipaas, klaviyo_only = topic_space.name("to"), topic_space.name("from")
    await topic_space.create([needs_ipaas, klaviyo_only], partitions=2)
    await produce(kafka_bootstrap, needs_ipaas, [(f"p{i}".encode(), b"v") for i in range(20)])
    ipaas_up, probed = asyncio.Event(), asyncio.Event()
    probes = 0

    async def probe() -> None:
        nonlocal probes
        probes += 1
        if probes >= 3:
            probed.set()
        if not ipaas_up.is_set():
            raise CatalogError(KLAVIYO_CONNECTION_ERROR, "still down", retryable=True, destination="ipaas",
                               outage=Outage.DOWN)

    def ipaas_down(message: InboundMessage, call: int) -> None:
        if message.topic == needs_ipaas and not ipaas_up.is_set():
            raise CatalogError(KLAVIYO_CONNECTION_ERROR, "ConnectError: connection refused", retryable=True,
                               destination="ipaas", outage=Outage.DOWN)

    processor = RecordingProcessor(fail=ipaas_down)
    sink = CollectingSink()
    destinations = Destinations({"ipaas": probe}, probe_min_s=0.05, probe_max_s=0.2)
    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(retry_attempts=2),
        topics=[needs_ipaas, klaviyo_only], processor=processor, failure_sink=sink, group_id=f"g-{unique}",
        needs_for=lambda topic: frozenset({"ipaas"}) if topic == needs_ipaas else frozenset({"klaviyo"}),
        destinations=destinations,
    )
    async with running(runtime):
        await asyncio.wait_for(probed.wait(), 30)
        assert destinations["ipaas"].waiting >= 1
        assert runtime.health.destinations == {"ipaas": "down"} and not runtime.health.ready()
        # records of the topic that doesn't need iPaaS.com keep flowing while it is down
        await produce(kafka_bootstrap, klaviyo_only, [(f"c{i}".encode(), b"v") for i in range(30)])
        await processor.wait_for(lambda: sum(1 for m in processor.handled if m.topic == klaviyo_only) >= 30)
        assert not any(m.topic == needs_ipaas for m in processor.handled)
        calls_while_down = sum(processor.calls.values())
        ipaas_up.set()
        await processor.wait_for(lambda: sum(1 for m in processor.handled if m.topic == needs_ipaas) >= 20)
    # the waiting records spent no retries: the first one tried found iPaaS.com down; the others waited untried
    assert calls_while_down == 30 + 1
    assert sink.failed == [] and runtime.health.destinations is None


async def test_a_second_instance_joining_rebalances_without_losing_events(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    topic, group = topic_space.name("rebal"), f"g-{unique}"
    await topic_space.create([topic], partitions=6)
    first_half = await produce(kafka_bootstrap, topic, [(f"k{i % 60}".encode(), b"a") for i in range(600)])
    first, second = RecordingProcessor(max_delay_s=0.01), RecordingProcessor(max_delay_s=0.01)
    settings = kafka_settings(kafka_bootstrap)
    one = StreamRuntime(kafka=settings, limits=runtime_limits(max_in_flight=8), topics=[topic],
                        processor=first, failure_sink=CollectingSink(), group_id=group)
    two = StreamRuntime(kafka=settings, limits=runtime_limits(max_in_flight=8), topics=[topic],
                        processor=second, failure_sink=CollectingSink(), group_id=group)
    shared = asyncio.Event()
    for runtime in (one, two):
        runtime.on_share(lambda share: shared.set() if one.share + two.share == 1.0 else None)
    async with running(one):
        await first.wait_for(lambda: len(first.handled) >= 100)
        assert one.share == 1.0  # alone in the group: the whole quota
        async with running(two):
            await asyncio.wait_for(two.assigned.wait(), 60)
            await asyncio.wait_for(shared.wait(), 60)
            assert (one.share, two.share) == (0.5, 0.5)  # each spends its partitions' part of the quota
            second_half = await produce(kafka_bootstrap, topic, [(f"k{i % 60}".encode(), b"b") for i in range(600)])
            everything = set(first_half) | set(second_half)

            def all_seen() -> bool:
                seen = {(m.partition, m.offset) for m in first.handled + second.handled}
                return everything <= seen

            waiters = [asyncio.create_task(p.wait_for(all_seen)) for p in (first, second)]
            done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            await asyncio.gather(*done)
    seen = {(m.partition, m.offset) for m in first.handled + second.handled}
    assert everything <= seen
    assert first.handled and second.handled


async def test_a_full_buffer_for_longer_than_the_poll_interval_keeps_the_partitions(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    topic = topic_space.name("stall")
    await topic_space.create([topic], partitions=1)
    await produce(kafka_bootstrap, topic, [(f"k{i}".encode(), b"v") for i in range(20)])
    slow = RecordingProcessor(max_delay_s=0)
    released = asyncio.Event()

    async def stalled(message: InboundMessage) -> Handled:
        if message.offset < 4:
            await asyncio.wait_for(released.wait(), 30)
        return await slow(message)

    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap, max_poll_interval_ms=2000, session_timeout_ms=6000),
        limits=runtime_limits(max_buffered=4, fetch_max_records=4), topics=[topic], processor=stalled,
        failure_sink=CollectingSink(), group_id=f"g-{unique}",
    )
    revoked_before = metrics.REBALANCES.labels("revoked")._value.get()
    async with running(runtime):
        await asyncio.wait_for(runtime.assigned.wait(), 30)
        await asyncio.sleep(4)  # the handlers' slow work: twice the poll interval with a full buffer
        assert runtime.health.partitions == 1
        released.set()
        await slow.wait_for(lambda: len(slow.handled) >= 20)
        revoked_during = metrics.REBALANCES.labels("revoked")._value.get() - revoked_before
    assert revoked_during == 0
    assert sorted(m.offset for m in slow.handled) == list(range(20))


async def test_a_full_buffer_pauses_no_partition_so_nothing_fetched_is_dropped_and_fetched_again(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    topic = topic_space.name("full")
    await topic_space.create([topic], partitions=2)
    await produce(kafka_bootstrap, topic, [(f"k{i}".encode(), b"v") for i in range(40)])
    released, full = asyncio.Event(), asyncio.Event()
    slow = RecordingProcessor()

    async def stalled(message: InboundMessage) -> Handled:
        full.set()
        await asyncio.wait_for(released.wait(), 30)
        return await slow(message)

    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(max_buffered=4, fetch_max_records=4),
        topics=[topic], processor=stalled, failure_sink=CollectingSink(), group_id=f"g-{unique}",
    )
    async with running(runtime):
        await asyncio.wait_for(full.wait(), 30)
        consumer = runtime._consumer
        assert consumer is not None
        paused: list[object] = []
        pause = consumer.pause
        consumer.pause = lambda *tps: (paused.extend(tps), pause(*tps))[1]  # type: ignore[method-assign]
        for _ in range(2):  # two whole waits for room with the buffer full
            await runtime.wait_until_backpressured()
        # aiokafka drops a paused partition's prefetched records (to fetch them again on resume): backpressure
        # must pause nothing
        assert paused == [] and consumer.paused() == set()
        assert "backpressure" in runtime.health.paused and runtime.buffered == 4
        released.set()
        await slow.wait_for(lambda: len(slow.handled) >= 40)
    assert len({(m.partition, m.offset) for m in slow.handled}) == 40
