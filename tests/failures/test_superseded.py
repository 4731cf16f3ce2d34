"""Which dead letters a newer successful change superseded, read from the real broker: the source partition, the
group's committed offset and the other dead letters decide."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from consumer.catalog import KLAVIYO_REJECTED_REQUEST, Flow
from consumer.failures import headers as dl
from consumer.failures.deadletters import DeadLetterPublisher, read_dead_letters
from consumer.failures.superseded import superseded_letters
from consumer.kafka import connection_options, reliable_producer
from consumer.runtime import Failure, Message
from tests.failures.helpers import prepared

# partition 0 of the source, in offset order: (key, version, replayed, dead-lettered)
SOURCE = [
    ("a", 0, False, True), ("b", 0, False, True), ("c", 0, False, True), ("d", 0, False, True),
    ("a", 1, False, False),  # a newer change of a the group finished: a's letter is superseded
    ("b", 1, False, True),   # b's newer change failed as well
    ("c", 0, True, False),   # c's letter replayed: an old change sent again, not a newer one
    ("d", 1, False, False),  # at the committed offset: the group has not finished it yet
]
COMMITTED = 7


async def test_only_a_newer_finished_change_that_was_not_dead_lettered_supersedes(
    kafka_bootstrap: str, unique: str
) -> None:
    settings, catalog = await prepared(kafka_bootstrap, unique)
    source = catalog.name("customer-changes")
    tp = TopicPartition(source, 0)
    producer = reliable_producer(settings.kafka)
    await producer.start()
    try:
        publisher = DeadLetterPublisher(producer, settings.kafka.group_id, catalog.dead_letter_name)
        failure = Failure(code=KLAVIYO_REJECTED_REQUEST.code, message="400", exception_fqcn="x.Y",
                          flow=Flow.ADD_PROFILE_FROM_IPAAS.slug)
        for key, version, replayed, failed in SOURCE:
            headers = [(dl.REPLAY_COUNT, b"1")] if replayed else []
            value = orjson.dumps({"id": key, "last_name": f"v{version}"})
            sent = await producer.send_and_wait(source, value, key=key.encode(), partition=0, headers=headers)
            if failed:
                await publisher.publish(Message(source, 0, sent.offset, key.encode(), value, headers,
                                                sent.timestamp), failure)
    finally:
        await producer.stop()
    group = AIOKafkaConsumer(**connection_options(settings.kafka), group_id=settings.kafka.group_id,
                             enable_auto_commit=False)
    await group.start()
    try:
        group.assign([tp])
        await group.commit({tp: COMMITTED})
    finally:
        await group.stop()

    dlt = catalog.dead_letter_name(source)
    letters = await read_dead_letters(settings.kafka, [dlt])
    superseded = await superseded_letters(settings.kafka, letters, [dlt])

    by_ref = {letter.ref: (letter.key or b"").decode() for letter in letters}
    assert sorted(by_ref.values()) == ["a", "b", "b", "c", "d"]
    assert sorted(by_ref[ref] for ref in superseded) == ["a"]
    assert await superseded_letters(settings.kafka, [], [dlt]) == set()
