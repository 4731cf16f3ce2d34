"""The consumer runtime: at-least-once, ordered per key, concurrent across keys, on an aiokafka group.

- Records are fetched by one loop and queued in per-key lanes (a lane is a partition + record key); each lane
  runs its records one after the other in offset order, lanes run concurrently, and at most
  ``max_in_flight`` handler calls run at once. Over ``max_buffered`` unfinished records, every partition is
  paused until the buffer drains.
- A partition's offset is committed only up to its first unfinished record (see ``PartitionOffsets``).
- A retryable failure is retried with capped, jittered backoff inside its lane (other keys go on); after the
  policy's attempts the record goes to the failure sink (the dead-letter topic) and counts as finished only
  once the broker acknowledged the dead letter. A failure marked "infrastructure" (the far side is down for
  every key) pauses consumption and retries without spending attempts, until any call succeeds again.
- On revoke (aiokafka awaits the listener before re-joining; its #929) lanes of the lost partitions stop
  taking records, in-flight records get ``drain_timeout_s`` to finish, and what finished is committed. Stop
  does the same for every partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.kafka import connection_options
from consumer.observability import metrics
from consumer.runtime.messages import Failure, FailureSink, InboundMessage, Processor, classify
from consumer.runtime.offsets import PartitionOffsets
from consumer.runtime.policy import RetryPolicy
from consumer.settings import KafkaSettings, RuntimeSettings

log = logging.getLogger("consumer.runtime")

PAUSE_BACKPRESSURE = "backpressure"
PAUSE_INFRASTRUCTURE = "infrastructure"
PAUSE_DEAD_LETTER = "dead_letter_unavailable"


@dataclass(slots=True)
class _Lane:
    queue: deque[InboundMessage] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    infra_since: float | None = None


@dataclass(slots=True)
class _Partition:
    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)
    lanes: dict[bytes | None, _Lane] = field(default_factory=dict)
    revoked: bool = False


@dataclass(slots=True)
class RuntimeHealth:
    """What the health endpoints report."""

    started: bool = False
    stopped: bool = False
    last_poll: float = 0.0
    paused: frozenset[str] = frozenset()
    partitions: int = 0

    def live(self, stale_after_s: float = 60.0) -> bool:
        return not self.started or self.stopped or time.monotonic() - self.last_poll < stale_after_s

    def ready(self) -> bool:
        return self.started and not self.stopped


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runtime: StreamRuntime) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._runtime._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._runtime._on_assigned(set(assigned))


class StreamRuntime:
    """Runs a processor over topics of one consumer group until ``stop()``."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        limits: RuntimeSettings,
        topics: Sequence[str],
        processor: Processor,
        failure_sink: FailureSink,
        policy_for: Callable[[str], RetryPolicy] | None = None,
        group_id: str | None = None,
    ) -> None:
        self._kafka = kafka
        self._limits = limits
        self._topics = list(topics)
        self._processor = processor
        self._failure_sink = failure_sink
        default_policy = RetryPolicy(
            attempts=limits.retry_attempts,
            base_delay_s=limits.retry_base_delay_s,
            max_delay_s=limits.retry_max_delay_s,
        )
        self._policy_for = policy_for or (lambda _topic: default_policy)
        self._group_id = group_id or kafka.group_id
        self._slots = asyncio.Semaphore(limits.max_in_flight)
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._stopping = asyncio.Event()
        self._pause_reasons: set[str] = set()
        self._infra_lanes = 0
        self._last_success = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._fatal: BaseException | None = None
        self.health = RuntimeHealth()
        self.assigned = asyncio.Event()
        """Set once the group gave this instance at least one partition."""
        self._finished_listeners: list[Callable[[InboundMessage, str], None]] = []

    # --- control -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the runtime to drain, commit and return from ``run()``."""
        self._stopping.set()

    def pause(self, reason: str) -> None:
        """Stop fetching new records (in-flight ones go on) until ``resume(reason)``."""
        self._pause_reasons.add(reason)
        self.health.paused = frozenset(self._pause_reasons)
        metrics.CONSUMPTION_PAUSED.labels(reason).set(1)

    def resume(self, reason: str) -> None:
        """Lift one reason to pause; fetching goes on once no reason is left."""
        self._pause_reasons.discard(reason)
        self.health.paused = frozenset(self._pause_reasons)
        metrics.CONSUMPTION_PAUSED.labels(reason).set(0)

    def on_finished(self, listener: Callable[[InboundMessage, str], None]) -> None:
        """Call ``listener(message, outcome)`` whenever a record is finished (succeeded, skipped, dead_lettered)."""
        self._finished_listeners.append(listener)

    def _finished(self, message: InboundMessage, outcome: str) -> None:
        for listener in self._finished_listeners:
            listener(message, outcome)

    @property
    def buffered(self) -> int:
        return sum(len(state.offsets) for state in self._partitions.values())

    # --- main loop -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **connection_options(self._kafka),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset=self._kafka.auto_offset_reset,
            session_timeout_ms=self._kafka.session_timeout_ms,
            heartbeat_interval_ms=self._kafka.heartbeat_interval_ms,
            max_poll_interval_ms=self._kafka.max_poll_interval_ms,
            isolation_level="read_committed",
        )
        consumer.subscribe(self._topics, listener=_Listener(self))
        self._consumer = consumer
        await consumer.start()
        self.health.started = True
        log.info("consumer started", extra={"topics": self._topics, "group_id": self._group_id})
        next_commit = time.monotonic() + self._limits.commit_interval_s
        try:
            while not self._stopping.is_set() and self._fatal is None:
                self._apply_pauses(consumer)
                room = self._limits.max_buffered - self.buffered
                batch = await consumer.getmany(
                    timeout_ms=200, max_records=max(1, min(self._limits.fetch_max_records, room))
                )
                self.health.last_poll = time.monotonic()
                for tp, records in batch.items():
                    for record in records:
                        self._enqueue(tp, record)
                if time.monotonic() >= next_commit:
                    await self._commit()
                    self._report_lag(consumer)
                    next_commit = time.monotonic() + self._limits.commit_interval_s
        finally:
            await self._on_revoked(set(self._partitions))
            await consumer.stop()
            self.health.stopped = True
            log.info("consumer stopped", extra={"group_id": self._group_id})
        if self._fatal is not None:
            raise self._fatal

    def _apply_pauses(self, consumer: AIOKafkaConsumer) -> None:
        buffered = self.buffered
        if buffered >= self._limits.max_buffered:
            self.pause(PAUSE_BACKPRESSURE)
        elif PAUSE_BACKPRESSURE in self._pause_reasons and buffered <= self._limits.max_buffered * 3 // 4:
            self.resume(PAUSE_BACKPRESSURE)
        assignment = consumer.assignment()
        if self._pause_reasons:
            consumer.pause(*assignment)
        else:
            consumer.resume(*assignment)
        metrics.BUFFERED.set(buffered)

    def _enqueue(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        state = self._partitions.get(tp)
        if state is None or state.revoked:
            return  # fetched just before a revoke: the partition's next owner reads it again
        message = InboundMessage(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
            timestamp_ms=record.timestamp,
            timestamp_type=record.timestamp_type,
        )
        metrics.EVENTS_RECEIVED.labels(record.topic).inc()
        state.offsets.add(record.offset)
        lane = state.lanes.get(record.key)
        if lane is None:
            lane = state.lanes[record.key] = _Lane()
        lane.queue.append(message)
        if lane.task is None:
            lane.task = asyncio.create_task(self._run_lane(state, record.key, lane))

    # --- lanes ---------------------------------------------------------------------------------------------
    async def _run_lane(self, state: _Partition, key: bytes | None, lane: _Lane) -> None:
        try:
            while lane.queue and not state.revoked:
                message = lane.queue[0]
                await self._handle(message, lane)
                lane.queue.popleft()
                state.offsets.finish(message.offset)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug in the runtime itself: stop rather than lose records
            log.exception("lane failed; stopping the consumer")
            self._fatal = exc
            self._stopping.set()
        finally:
            self._leave_infrastructure(lane)
            if state.lanes.get(key) is lane:
                del state.lanes[key]

    async def _handle(self, message: InboundMessage, lane: _Lane) -> None:
        policy = self._policy_for(message.topic)
        started = time.monotonic()
        failure: Failure | None = None
        attempt = counted = 0
        while True:
            attempt += 1
            try:
                async with self._slots:
                    metrics.IN_FLIGHT.inc()
                    try:
                        handled = await self._processor(message)
                    finally:
                        metrics.IN_FLIGHT.dec()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                current = classify(exc)
                current.attempts = attempt
                if failure is not None:
                    current.first_failure = failure.first_failure
                failure = current
                if current.infrastructure and self._still_down(lane):
                    delay = policy.delay(
                        attempt, current.retry_after, cap=self._limits.infrastructure_max_delay_s
                    )
                    log.warning(
                        "infrastructure failure; consumption paused",
                        extra={"flow": current.flow, "code": current.code, "retry_in_s": round(delay, 3)},
                    )
                    await asyncio.sleep(delay)
                    continue
                self._leave_infrastructure(lane)
                counted += 1
                if (current.retryable or current.infrastructure) and counted < policy.attempts:
                    metrics.RETRIES.labels(current.flow, current.code).inc()
                    await asyncio.sleep(policy.delay(counted, current.retry_after))
                    continue
                await self._dead_letter(message, current)
                metrics.EVENTS_HANDLED.labels(message.topic, current.flow, "dead_lettered").inc()
                metrics.HANDLING_SECONDS.labels(current.flow).observe(time.monotonic() - started)
                self._finished(message, "dead_lettered")
                return
            self._last_success = time.monotonic()
            self._leave_infrastructure(lane)
            metrics.EVENTS_HANDLED.labels(message.topic, handled.flow, handled.outcome).inc()
            metrics.HANDLING_SECONDS.labels(handled.flow).observe(time.monotonic() - started)
            self._finished(message, handled.outcome)
            return

    def _still_down(self, lane: _Lane) -> bool:
        """True while no call has succeeded since this lane started seeing infrastructure failures."""
        if lane.infra_since is None:
            lane.infra_since = time.monotonic()
            self._infra_lanes += 1
            self.pause(PAUSE_INFRASTRUCTURE)
            return True
        return self._last_success <= lane.infra_since

    def _leave_infrastructure(self, lane: _Lane) -> None:
        if lane.infra_since is not None:
            lane.infra_since = None
            self._infra_lanes -= 1
            if self._infra_lanes == 0:
                self.resume(PAUSE_INFRASTRUCTURE)

    async def _dead_letter(self, message: InboundMessage, failure: Failure) -> None:
        """Hand the record to the failure sink until the broker acknowledged it; never drop it."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._failure_sink(message, failure)
                self.resume(PAUSE_DEAD_LETTER)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.pause(PAUSE_DEAD_LETTER)
                log.exception("dead letter not acknowledged; retrying", extra={"topic": message.topic})
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))

    # --- rebalance, commits, lag ---------------------------------------------------------------------------
    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._partitions.setdefault(tp, _Partition())
        metrics.REBALANCES.labels("assigned").inc()
        self.health.partitions = len(self._partitions)
        if self._partitions:
            self.assigned.set()
        log.info("partitions assigned", extra={"partitions": sorted(f"{t.topic}/{t.partition}" for t in assigned)})

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        states = {tp: self._partitions[tp] for tp in revoked if tp in self._partitions}
        if not states:
            return
        for state in states.values():
            state.revoked = True
        tasks = [lane.task for state in states.values() for lane in state.lanes.values() if lane.task]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._limits.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                log.warning("drain deadline passed; unfinished records will be read again", extra={
                    "unfinished_lanes": len(pending)})
        await self._commit(set(states))
        for tp in states:
            del self._partitions[tp]
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        metrics.REBALANCES.labels("revoked").inc()
        self.health.partitions = len(self._partitions)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {
            tp: position
            for tp, state in self._partitions.items()
            if (only is None or tp in only) and (position := state.offsets.commit_position()) is not None
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # A rebalance took the partitions (aiokafka #929): their next owner re-reads from the last commit.
            metrics.COMMITS.labels("failed").inc()
            log.warning("commit failed", extra={"error": type(exc).__name__})
            return
        for tp, position in offsets.items():
            self._partitions[tp].offsets.committed = position
        metrics.COMMITS.labels("ok").inc()

    def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp, state in self._partitions.items():
            highwater = consumer.highwater(tp)
            position = state.offsets.committed
            if highwater is None or position is None:
                continue
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
