"""Admission against the real broker: records waiting for quota hold no worker and no share of another
source's buffer, and unsent waiting work is abandoned at once on a stop (not committed)."""

from __future__ import annotations

import asyncio

from aiokafka.structs import TopicPartition

from consumer import admission
from consumer.runtime import Handled, InboundMessage, StreamRuntime
from tests.support.kafka import group_offsets, kafka_settings, produce, running, runtime_limits
from tests.support.recording import CollectingSink, RecordingProcessor
from tests.support.topic_space import TopicSpace


class QuotaWaiters:
    """A processor whose records of ``slow_topic`` wait for a quota that opens only when the test says so."""

    def __init__(self, slow_topic: str) -> None:
        self.slow_topic = slow_topic
        self.quota = asyncio.Event()
        self.waiting = 0
        self.cancelled = 0
        self.sent_then_waiting: set[int] = set()
        self.done = RecordingProcessor()
        self.changed = asyncio.Event()

    async def __call__(self, message: InboundMessage) -> Handled:
        if message.topic == self.slow_topic:
            self.waiting += 1
            self.changed.set()
            try:
                async with admission.waiting():
                    await self.quota.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                self.changed.set()
                raise
            finally:
                self.waiting -= 1
        return await self.done(message)

    async def wait_until(self, condition: object) -> None:
        while not condition():  # type: ignore[operator]
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 30)


async def test_records_waiting_for_quota_hold_no_worker(kafka_bootstrap: str, topic_space: TopicSpace, unique: str):
    orders, profiles = topic_space.name("orders"), topic_space.name("profiles")
    await topic_space.create([orders, profiles], partitions=2)
    await produce(kafka_bootstrap, orders, [(f"o{i}".encode(), b"order") for i in range(40)])
    processor = QuotaWaiters(orders)
    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(max_in_flight=4, max_buffered=1000),
        topics=[orders, profiles], processor=processor, failure_sink=CollectingSink(), group_id=f"g-{unique}",
    )
    async with running(runtime):
        await processor.wait_until(lambda: processor.waiting == 40)  # far more than 4 workers: none is held
        await produce(kafka_bootstrap, profiles, [(f"p{i}".encode(), b"profile") for i in range(10)])
        await processor.done.wait_for(lambda: len(processor.done.handled) >= 10)
        assert {m.topic for m in processor.done.handled} == {profiles}
        processor.quota.set()
        await processor.done.wait_for(lambda: len(processor.done.handled) >= 50)
    assert len({(m.topic, m.partition, m.offset) for m in processor.done.handled}) == 50


async def test_a_source_with_a_full_buffer_of_waiting_records_does_not_keep_another_source_unread(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    orders, profiles = topic_space.name("backlog"), topic_space.name("changes")
    await topic_space.create([orders, profiles], partitions=1)
    await produce(kafka_bootstrap, orders, [(f"o{i}".encode(), b"order") for i in range(200)])
    processor = QuotaWaiters(orders)
    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(max_in_flight=4, max_buffered=16,
                                                                     fetch_max_records=16),
        topics=[orders, profiles], processor=processor, failure_sink=CollectingSink(), group_id=f"g-{unique}",
    )
    async with running(runtime):
        await processor.wait_until(lambda: processor.waiting >= 16)
        await runtime.wait_until_backpressured()
        await produce(kafka_bootstrap, profiles, [(f"p{i}".encode(), b"profile") for i in range(5)])
        await processor.done.wait_for(lambda: len(processor.done.handled) >= 5)
        assert {m.topic for m in processor.done.handled} == {profiles}
        # the backlog's source still holds no more than the buffer allows it
        assert processor.waiting <= 16
        processor.quota.set()
        await processor.done.wait_for(lambda: len(processor.done.handled) >= 205)


async def test_a_stop_abandons_unsent_waiting_records_at_once_and_commits_none_of_them(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    orders, group = topic_space.name("stopping"), f"g-{unique}"
    await topic_space.create([orders], partitions=1)
    await produce(kafka_bootstrap, orders, [(b"fast", b"a"), (b"slow", b"b"), (b"fast", b"c")])
    processor = QuotaWaiters(orders)
    handled_fast = RecordingProcessor()

    async def processor_with_fast_key(message: InboundMessage) -> Handled:
        if message.key == b"fast":
            return await handled_fast(message)
        return await processor(message)

    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap),
        limits=runtime_limits(drain_timeout_s=3600, commit_interval_s=3600),  # only abandoning can stop it soon
        topics=[orders], processor=processor_with_fast_key, failure_sink=CollectingSink(), group_id=group,
    )
    task = asyncio.create_task(runtime.run())
    await processor.wait_until(lambda: processor.waiting == 1)
    await handled_fast.wait_for(lambda: len(handled_fast.handled) == 2)
    runtime.stop()
    await asyncio.wait_for(task, 60)

    assert processor.cancelled == 1 and processor.done.handled == []
    # offset 1 (the waiting record) was never handled: the commit stops before it, so it is read again
    assert await group_offsets(kafka_bootstrap, group) == {TopicPartition(orders, 0): 1}


async def test_a_stop_lets_a_record_whose_work_was_sent_finish(
    kafka_bootstrap: str, topic_space: TopicSpace, unique: str
):
    topic, group = topic_space.name("sent"), f"g-{unique}"
    await topic_space.create([topic], partitions=1)
    await produce(kafka_bootstrap, topic, [(b"k", b"a")])
    in_request, answer = asyncio.Event(), asyncio.Event()
    done = RecordingProcessor()

    async def in_a_batch(message: InboundMessage) -> Handled:
        async with admission.waiting() as slot:
            assert slot is not None
            slot.sending()  # a batch took the work into its request: no longer abandonable
            in_request.set()
            await answer.wait()
        return await done(message)

    runtime = StreamRuntime(
        kafka=kafka_settings(kafka_bootstrap), limits=runtime_limits(drain_timeout_s=3600, commit_interval_s=3600),
        topics=[topic], processor=in_a_batch, failure_sink=CollectingSink(), group_id=group,
    )
    task = asyncio.create_task(runtime.run())
    await asyncio.wait_for(in_request.wait(), 30)
    runtime.stop()
    await asyncio.sleep(0)
    assert not task.done()
    answer.set()  # the request's answer arrives during the drain
    await asyncio.wait_for(task, 60)
    assert len(done.handled) == 1
    assert await group_offsets(kafka_bootstrap, group) == {TopicPartition(topic, 0): 1}


async def test_waiting_outside_a_handler_call_is_a_no_op() -> None:
    async with admission.waiting() as slot:
        assert slot is None


async def test_a_task_started_by_a_handler_does_not_park_the_handlers_slot() -> None:
    parked: list[str] = []

    async def unpark() -> None:
        parked.append("unpark")

    slot = admission.Slot(lambda: parked.append("park"), unpark)

    async def handler() -> None:
        token = admission.enter(slot)
        try:
            async def background() -> admission.Slot | None:
                async with admission.waiting() as seen:
                    return seen
            assert await asyncio.create_task(background()) is None
            async with admission.waiting():
                assert slot.parked and slot.abandonable
        finally:
            admission.leave(token)

    await handler()
    assert parked == ["park", "unpark"] and not slot.parked


def test_ready_lanes_of_different_topics_are_served_in_turns() -> None:
    from types import SimpleNamespace

    from consumer.runtime.engine import _ReadyLanes

    ready = _ReadyLanes()
    lanes = [SimpleNamespace(name=f"order-{i}", state=SimpleNamespace(topic="orders")) for i in range(3)]
    lanes.append(SimpleNamespace(name="customer-0", state=SimpleNamespace(topic="customers")))
    for lane in lanes:
        ready.append(lane)  # type: ignore[arg-type]
    served = [ready.popleft().name for _ in range(len(ready))]  # type: ignore[attr-defined]
    assert served == ["order-0", "customer-0", "order-1", "order-2"]
    assert not ready
