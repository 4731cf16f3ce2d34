"""The consumer runtime: at-least-once, ordered per key, concurrent across keys, on an aiokafka group.

- Records are fetched by one loop and queued in per-key lanes (a lane is a partition + record key); each lane
  runs its records one after the other in offset order, lanes run concurrently, and at most
  ``max_in_flight`` handler calls run at once. With ``max_buffered`` unfinished records the loop stops
  fetching until a quarter of them finished (aiokafka's own prefetch is bounded by its fetch sizes).
- A partition's offset is committed only up to its first unfinished record (see ``PartitionOffsets``).
- A retryable failure is retried with capped, jittered backoff inside its lane (other keys go on); after the
  policy's attempts the record goes to the failure sink (the dead-letter topic) and counts as finished only
  once the broker acknowledged the dead letter. A failure that blames a destination (``outage``) spends no
  attempt: the destination is marked out (``consumer.destinations``), the partitions of the topics that need it
  pause, and the record waits, holding no worker, until a probe finds the destination back. While it is out,
  the records of those topics already fetched wait the same way without being tried: only probes reach it.
- A record that is not due yet (``due_at``: a retry topic's backoff timestamp) is parked on a timer, holding no
  worker, and its partition pauses until every such record of it is due; it is committed only once handled.
- A handler call that waits for quota or its turn in a bulk request (``consumer.admission``) holds no worker: only
  working calls count against ``max_in_flight``. With the buffer full, topics holding less than their share of
  it are still read (``getmany`` of their partitions only: nothing fetched for the others is dropped).
- On revoke (aiokafka awaits the listener before re-joining; its #929) lanes of the lost partitions stop
  taking records, calls waiting with nothing sent are cancelled at once, in-flight records get
  ``drain_timeout_s`` to finish, and what finished is committed. Stop does the same for every partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer import admission
from consumer.destinations import Change, Destination, Destinations, DestinationState
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
PAUSE_AUTHORIZATION = "authorization"
_GLOBAL_REASONS = frozenset({PAUSE_DEAD_LETTER})
"""Reasons that pause every partition. Backpressure pauses none: the loop just stops taking records, and aiokafka
fetches no more for a partition whose fetched records wait unread (pausing would drop them, to be downloaded
again on resume)."""


class _Received:
    """``events_received`` children cached per topic: ``labels()`` is too slow for every batch."""

    def __init__(self) -> None:
        self._children: dict[str, Any] = {}

    def __call__(self, topic: str) -> Any:
        child = self._children.get(topic)
        if child is None:
            child = self._children[topic] = metrics.EVENTS_RECEIVED.labels(topic)
        return child


@dataclass(slots=True)
class _Attempts:
    """Retry state of a lane's head record."""

    started: float
    attempt: int = 0
    counted: int = 0
    failure: Failure | None = None


class _Partition:
    __slots__ = ("drained", "lanes", "not_due", "offsets", "revoked", "running", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.offsets = PartitionOffsets()
        self.lanes: dict[bytes | None, _Lane] = {}
        self.revoked = False
        self.running = 0
        self.not_due = 0
        """Lanes parked until their head record is due (the partition is paused meanwhile)."""
        self.drained: asyncio.Event | None = None
        """Created by a revoke that waits for running lanes; set when the last one returns."""


class _Lane:
    """The records of one key of one partition, run in offset order by one worker at a time.

    A lane is *scheduled* from when it has work until it is empty: queued in ``ready``, run by a worker, or
    parked on a timer while its head record waits for a retry.
    """

    __slots__ = ("attempts", "key", "queue", "scheduled", "slot", "state", "timer", "waiter", "worker")

    def __init__(self, state: _Partition, key: bytes | None, slot: admission.Slot) -> None:
        self.state = state
        self.key = key
        self.slot = slot
        """The running record's hold on its worker (``consumer.admission``): parked while it waits for quota."""
        self.queue: deque[InboundMessage] = deque()
        self.scheduled = False
        self.attempts: _Attempts | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.worker: asyncio.Task[None] | None = None
        self.waiter: asyncio.Task[None] | None = None
        """Waits for a destination to come back before the head record is tried again."""


class _ReadyLanes:
    """Lanes with work waiting for a worker: one first-in-first-out queue per topic, served in turns, so a
    burst of one source (an order backlog) never queues ahead of another source's records."""

    __slots__ = ("_count", "_queues", "_turns")

    def __init__(self) -> None:
        self._queues: dict[str, deque[_Lane]] = {}
        self._turns: deque[deque[_Lane]] = deque()
        self._count = 0

    def __bool__(self) -> bool:
        return self._count > 0

    def __len__(self) -> int:
        return self._count

    def append(self, lane: _Lane) -> None:
        queue = self._queues.get(lane.state.topic)
        if queue is None:
            queue = self._queues[lane.state.topic] = deque()
        if not queue:
            self._turns.append(queue)
        queue.append(lane)
        self._count += 1

    def popleft(self) -> _Lane:
        queue = self._turns.popleft()
        lane = queue.popleft()
        if queue:
            self._turns.append(queue)
        self._count -= 1
        return lane


@dataclass(slots=True)
class RuntimeHealth:
    """What the health endpoints report."""

    started: bool = False
    stopped: bool = False
    last_poll: float = 0.0
    paused: frozenset[str] = frozenset()
    partitions: int = 0
    destinations: dict[str, str] | None = None
    """Destinations that are not up, with their state."""

    def live(self, stale_after_s: float = 60.0) -> bool:
        return not self.started or self.stopped or time.monotonic() - self.last_poll < stale_after_s

    def ready(self) -> bool:
        return self.started and not self.stopped and not self.destinations


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
        needs_for: Callable[[str], frozenset[str]] | None = None,
        destinations: Destinations | None = None,
        group_id: str | None = None,
        due_at: Callable[[InboundMessage], float | None] | None = None,
    ) -> None:
        self._kafka = kafka
        self._limits = limits
        self._topics = list(topics)
        self._processor = processor
        self._failure_sink = failure_sink
        default_policy = RetryPolicy.from_settings(limits)
        self._policy_for = policy_for or (lambda _topic: default_policy)
        self._needs_for = needs_for or (lambda _topic: frozenset())
        self._due_at = due_at
        """Seconds since the epoch before which a record is not to be handled (None: now)."""
        self._not_due = 0
        self.destinations = destinations if destinations is not None else Destinations()
        self.destinations.listen(self._destination_changed)
        self._group_id = group_id or kafka.group_id
        self._running = 0
        self._parked = 0
        """Running handler calls that wait for quota (``consumer.admission``): they hold no worker."""
        self._readmit: deque[asyncio.Future[None]] = deque()
        """Parked calls whose wait ended, waiting for a worker again (served before new lanes start)."""
        self._ready = _ReadyLanes()
        self._idle_workers: list[asyncio.Future[None]] = []
        self._workers: set[asyncio.Task[None]] = set()
        self._waking = 0
        self._closing = False
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._stopping = asyncio.Event()
        self._pause_reasons: set[str] = set()
        self._buffered = 0
        self._drained = asyncio.Event()
        self._backpressured = asyncio.Event()
        self._room_wanted = False
        self._revoking = asyncio.Lock()
        self._received = _Received()
        self._consumer: AIOKafkaConsumer | None = None
        self._fatal: BaseException | None = None
        self.health = RuntimeHealth()
        self.assigned = asyncio.Event()
        """Set once the group gave this instance at least one partition."""
        self._finished_listeners: list[Callable[[InboundMessage, str], None]] = []
        self._share_listeners: list[Callable[[float], None]] = []
        self.share = 1.0
        """This instance's share of the group's partitions (assigned / all partitions of its topics)."""

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

    def _destination_changed(self, change: Change) -> None:
        """A destination went out or came back: the pause reasons it stands for follow, and at once the partitions
        of the topics that need it (a fetch in flight then returns none of their records)."""
        metrics.set_destination_state(change.destination, change.current.value)
        unavailable = self.destinations.unavailable()
        self.health.destinations = {name: state.value for name, state in unavailable.items()} or None
        states = set(unavailable.values())
        for reason, present in (
            (PAUSE_AUTHORIZATION, DestinationState.UNAUTHORIZED in states),
            (PAUSE_INFRASTRUCTURE, bool(states - {DestinationState.UNAUTHORIZED})),
        ):
            if present:
                self.pause(reason)
            else:
                self.resume(reason)
        if self._consumer is not None and self.health.started and not self.health.stopped:
            self._apply_pauses(self._consumer)

    def on_finished(self, listener: Callable[[InboundMessage, str], None]) -> None:
        """Call ``listener(message, outcome)`` whenever a record is finished (succeeded, skipped, dead_lettered)."""
        self._finished_listeners.append(listener)

    def on_share(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(share)`` after every rebalance with this instance's share of the group's partitions.

        Instances of one group share what the destinations allow (Klaviyo's quota is per account): each spends
        the share of the partitions it was assigned. No coordinator is needed; skewed partitions (a busy partition
        next to idle ones) leave some of the quota unspent.
        """
        self._share_listeners.append(listener)

    def _share_changed(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        total = sum(len(consumer.partitions_for_topic(topic) or ()) for topic in self._topics)
        if total <= 0:
            return
        share = max(1, len(self._partitions)) / total
        if share != self.share:
            self.share = share
            metrics.QUOTA_SHARE.set(share)
            log.info("quota share", extra={"share": round(share, 4), "partitions": len(self._partitions),
                                           "of": total})
            for listener in self._share_listeners:
                listener(share)

    def _finished(self, message: InboundMessage, outcome: str) -> None:
        for listener in self._finished_listeners:
            listener(message, outcome)

    @property
    def buffered(self) -> int:
        """Records fetched and not finished."""
        return self._buffered

    async def wait_until_backpressured(self) -> None:
        """Return once the buffer has stayed full for a whole wait for room (tests, benchmarks)."""
        self._backpressured.clear()
        await self._backpressured.wait()

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
            # small prefetch: while the buffer is full the partitions are paused, which drops what was prefetched
            fetch_max_bytes=self._limits.fetch_max_bytes,
            max_partition_fetch_bytes=self._limits.partition_fetch_max_bytes,
        )
        consumer.subscribe(self._topics, listener=_Listener(self))
        self._consumer = consumer
        await consumer.start()
        self.health.started = True
        metrics.IN_FLIGHT.set_function(lambda: self._running - self._parked)
        metrics.WAITING_FOR_QUOTA.set_function(lambda: self._parked)
        metrics.BUFFERED.set_function(lambda: self._buffered)
        log.info("consumer started", extra={"topics": self._topics, "group_id": self._group_id})
        next_commit = time.monotonic() + self._limits.commit_interval_s
        poll_every_s, last_fetch = self._kafka.max_poll_interval_ms / 1000 / 4, time.monotonic()
        try:
            while not self._stopping.is_set() and self._fatal is None:
                if time.monotonic() >= next_commit:
                    await self._commit()
                    self._prune_idle_lanes()
                    next_commit = time.monotonic() + self._limits.commit_interval_s
                self._apply_pauses(consumer)
                room = self._limits.max_buffered - self._buffered
                if room <= 0:
                    starved, wanted = self._starved(consumer)
                    if starved:  # a source with less than its share of the buffer is still read, at once
                        self.pause(PAUSE_BACKPRESSURE)
                        self._backpressured.set()
                        with contextlib.suppress(IllegalStateError):  # a rebalance took one of them meanwhile
                            batch = await consumer.getmany(*starved, timeout_ms=200, max_records=wanted)
                            self.health.last_poll = last_fetch = time.monotonic()
                            for tp, records in batch.items():
                                self._received(tp.topic).inc(len(records))
                                self._enqueue(tp, records)
                        continue
                    if await self._wait_for_room() or time.monotonic() - last_fetch < poll_every_s:
                        continue
                    # still full for long: take one record, or the group would count this member as gone after
                    # max_poll_interval_ms (the buffer goes over by one; nothing fetched is dropped)
                    room = 1
                if PAUSE_BACKPRESSURE in self._pause_reasons:
                    self.resume(PAUSE_BACKPRESSURE)
                batch = await consumer.getmany(timeout_ms=200, max_records=min(self._limits.fetch_max_records, room))
                self.health.last_poll = last_fetch = time.monotonic()
                for tp, records in batch.items():
                    self._received(tp.topic).inc(len(records))
                    self._enqueue(tp, records)
        finally:
            await self._on_revoked(set(self._partitions))
            await self._stop_workers()
            await consumer.stop()
            self.health.stopped = True
            log.info("consumer stopped", extra={"group_id": self._group_id})
        if self._fatal is not None:
            raise self._fatal

    async def _stop_workers(self) -> None:
        self._closing = True
        for wake in self._idle_workers:
            if not wake.done():
                wake.set_result(None)
        self._idle_workers.clear()
        for worker in list(self._workers):
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def _starved(self, consumer: AIOKafkaConsumer) -> tuple[list[TopicPartition], int]:
        """With the buffer full: the partitions of topics holding less than their fair share of it, and how many
        records they may still take. One source's backlog (orders, say) never keeps another's records unread."""
        by_topic: dict[str, int] = {}
        for tp, state in self._partitions.items():
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + state.offsets.unfinished
        if len(by_topic) < 2:
            return [], 0
        share = max(self._limits.max_buffered // len(by_topic), 1)
        paused = consumer.paused()
        starved = [
            tp for tp, state in self._partitions.items()
            if by_topic[tp.topic] < share and not state.revoked and tp not in paused
        ]
        if not starved:
            return [], 0
        return starved, max(share - min(by_topic[tp.topic] for tp in starved), 1)

    async def _wait_for_room(self, timeout_s: float = 1.0) -> bool:
        """Backpressure: stop fetching until a quarter of the buffer finished; False when ``timeout_s`` passed
        first."""
        self.pause(PAUSE_BACKPRESSURE)
        self._drained.clear()
        self._room_wanted = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        self.health.last_poll = time.monotonic()  # the loop is alive (liveness), though it takes nothing
        if self._buffered <= self._limits.max_buffered * 3 // 4:
            self.resume(PAUSE_BACKPRESSURE)
            return True
        self._backpressured.set()
        return False

    def _apply_pauses(self, consumer: AIOKafkaConsumer) -> None:
        """Pause every assigned partition while a global reason holds (the buffer is full, the dead-letter topic is
        unavailable), and the partitions of topics that need a destination that is out; resume the rest."""
        paused = consumer.paused()
        unavailable = self.destinations.unavailable() if self.health.destinations else {}
        if not paused and not unavailable and not self._not_due and not self._pause_reasons & _GLOBAL_REASONS:
            return
        assignment = consumer.assignment()
        if self._pause_reasons & _GLOBAL_REASONS:
            wanted = set(assignment)
        else:
            wanted = {tp for tp in assignment if not self._needs_for(tp.topic).isdisjoint(unavailable)}
            if self._not_due:
                wanted |= {tp for tp, state in self._partitions.items() if state.not_due and tp in assignment}
        if wanted - paused:
            consumer.pause(*(wanted - paused))
        if paused - wanted:
            consumer.resume(*(paused - wanted))

    def _release(self, count: int) -> None:
        self._buffered -= count
        if self._room_wanted and self._buffered <= self._limits.max_buffered * 3 // 4:
            self._room_wanted = False
            self._drained.set()

    def _enqueue(self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Queue a partition's fetched records in their lanes (the hot path: locals over attributes)."""
        state = self._partitions.get(tp)
        if state is None or state.revoked:
            return  # fetched just before a revoke: the partition's next owner reads them again
        lanes, ready, add_offset = state.lanes, self._ready, state.offsets.add
        park, unpark = self._park, self._unpark
        for record in records:
            add_offset(record.offset)
            lane = lanes.get(record.key)
            if lane is None:
                lane = lanes[record.key] = _Lane(state, record.key, admission.Slot(park, unpark))
            lane.queue.append(record)
            if not lane.scheduled:
                lane.scheduled = True
                ready.append(lane)
        self._buffered += len(records)
        self._wake_worker()

    def _wake_worker(self) -> None:
        """Get one more worker onto the ready lanes, unless one is already on its way.

        Workers wake each other in a chain (each one taking a lane wakes the next while lanes are waiting), so a
        burst of fast records is run by the first worker alone, and slow ones spread over up to
        ``max_in_flight`` workers within a few loop iterations.
        """
        if not self._ready or self._waking or self._readmit:
            return
        if self._idle_workers:
            self._idle_workers.pop().set_result(None)
        elif len(self._workers) - self._parked < self._limits.max_in_flight:
            worker = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        else:
            return
        self._waking += 1

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        self._waking -= 1
        while not self._closing:
            if not self._ready:
                wake: asyncio.Future[None] = loop.create_future()
                self._idle_workers.append(wake)
                await wake
                self._waking -= 1
                continue
            lane = self._ready.popleft()
            if self._ready and not self._waking:
                self._wake_worker()
            lane.worker = me
            try:
                await self._run_lane(lane)
            except asyncio.CancelledError:
                if self._closing or not lane.state.revoked:
                    raise
                if me is not None:
                    me.uncancel()  # the drain deadline of a revoked partition cancelled its record: go on
            except BaseException as exc:  # a bug in the runtime itself: stop rather than lose records
                log.exception("lane failed; stopping the consumer")
                self._fatal = exc
                self._stopping.set()
                return
            finally:
                lane.worker = None
            if len(self._workers) - self._parked > self._limits.max_in_flight:
                return  # parked calls came back: more workers run than allowed, so this one ends

    async def _run_lane(self, lane: _Lane) -> None:
        """Run a lane's records in order until it is empty, parked for a retry, or its partition is revoked.

        Each record is one attempt here (the success path is inlined: it is the hot path); a failed attempt is
        classified by ``_failed``, which either finishes the record (dead letter) or names the retry delay.
        """
        state, queue, record, finish = lane.state, lane.queue, metrics.HANDLING.record, lane.state.offsets.finish
        processor, clock = self._processor, time.monotonic
        state.running += 1
        self._running += 1  # in flight: lanes a worker is running (each runs one handler call at a time)
        slot_token = admission.enter(lane.slot)
        try:
            while queue and not state.revoked:
                message = queue[0]
                if self._due_at is not None and lane.attempts is None and self._park_until_due(lane, message):
                    return
                if self.health.destinations is not None:  # something is out: don't send it more work
                    blocked = self._blocked(message.topic)
                    if blocked is not None:
                        lane.waiter = asyncio.get_running_loop().create_task(self._wait_for(lane, blocked))
                        return
                attempts = lane.attempts
                started = clock() if attempts is None else attempts.started
                try:
                    handled = await processor(message)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if attempts is None:
                        attempts = lane.attempts = _Attempts(started=started)
                    attempts.attempt += 1
                    retry_in = await self._failed(message, lane, attempts, exc)
                    if retry_in is not None:
                        if not state.revoked:  # park the lane until the retry is due; the worker moves on
                            if isinstance(retry_in, Destination):
                                lane.waiter = asyncio.get_running_loop().create_task(self._wait_for(lane, retry_in))
                            else:
                                lane.timer = asyncio.get_running_loop().call_later(retry_in, self._retry_due, lane)
                            return
                        break
                else:
                    record(message.topic, handled.flow, handled.outcome, clock() - started)
                    if self._finished_listeners:
                        self._finished(message, handled.outcome)
                queue.popleft()
                lane.attempts = None
                finish(message.offset)
                self._buffered -= 1
                if self._room_wanted:
                    self._release(0)
            self._retire(lane)
        finally:
            admission.leave(slot_token)
            self._running -= 1
            if self._readmit:
                self._admit_next()
            state.running -= 1
            if state.running == 0 and state.drained is not None:
                state.drained.set()

    def _park(self) -> None:
        """A running handler call waits for quota: its worker may take other work (another worker starts)."""
        self._parked += 1
        self._admit_next()

    async def _unpark(self) -> None:
        """A parked call's wait ended: it works again once fewer than ``max_in_flight`` calls work."""
        if not self._readmit and self._running - self._parked < self._limits.max_in_flight:
            self._parked -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._readmit.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.cancelled():  # never re-admitted: it leaves as a parked call
                self._parked -= 1
            else:
                self._admit_next()  # re-admitted, then cancelled: the turn goes to the next
            raise

    def _admit_next(self) -> None:
        """A working call finished or parked: a parked call waiting for its turn goes first, else a new lane."""
        readmit, limit = self._readmit, self._limits.max_in_flight
        while readmit and self._running - self._parked < limit:
            turn = readmit.popleft()
            if not turn.done():
                self._parked -= 1
                turn.set_result(None)
        if not readmit and self._ready and not self._waking:
            self._wake_worker()

    def _retire(self, lane: _Lane) -> None:
        """The lane has no work (or its partition is gone); an idle lane stays for reuse until the next prune."""
        lane.scheduled = False

    def _prune_idle_lanes(self) -> None:
        """Forget idle lanes (once per commit interval), so memory follows the keys seen lately, not all keys."""
        for state in self._partitions.values():
            idle = [key for key, lane in state.lanes.items() if not lane.scheduled and not lane.queue]
            for key in idle:
                del state.lanes[key]

    def _blocked(self, topic: str) -> Destination | None:
        """A destination the topic's source needs that is out (its records wait for it, untried), else None."""
        for name in self._needs_for(topic):
            if not self.destinations.available(name):
                return self.destinations[name]
        return None

    async def _wait_for(self, lane: _Lane, destination: Destination) -> None:
        """Park a lane, holding no worker, until ``destination`` is back; then its head record goes again."""
        try:
            await destination.wait_up()
        except asyncio.CancelledError:
            return
        lane.waiter = None
        self._retry_due(lane)

    def _park_until_due(self, lane: _Lane, message: InboundMessage) -> bool:
        """Park the lane on a timer when its head record is not due yet, and pause its partition meanwhile."""
        assert self._due_at is not None
        due = self._due_at(message)
        wait = due - time.time() if due is not None else 0.0
        if wait <= 0:
            return False
        lane.state.not_due += 1
        self._not_due += 1
        lane.timer = asyncio.get_running_loop().call_later(wait, self._now_due, lane)
        consumer, tp = self._consumer, TopicPartition(message.topic, message.partition)
        if consumer is not None and tp in consumer.assignment():
            consumer.pause(tp)  # at once (a fetch in flight then returns none of its records); resumed when due
        return True

    def _now_due(self, lane: _Lane) -> None:
        lane.state.not_due -= 1
        self._not_due -= 1
        self._retry_due(lane)

    def _retry_due(self, lane: _Lane) -> None:
        lane.timer = None
        if lane.state.revoked:
            self._retire(lane)
            return
        self._ready.append(lane)
        self._wake_worker()

    async def _failed(
        self, message: InboundMessage, lane: _Lane, attempts: _Attempts, exc: Exception
    ) -> float | Destination | None:
        """What to do after a failed attempt: wait for a destination, retry after a delay, or (None) the record is
        finished: dead-lettered."""
        policy = self._policy_for(message.topic)
        failure = classify(exc)
        failure.attempts = attempts.counted + 1
        if attempts.failure is not None:
            failure.first_failure = attempts.failure.first_failure
        attempts.failure = failure
        if failure.error is not None and failure.error.blames_destination:  # not the record's: no attempt spent
            return self.destinations.report(failure.error)
        attempts.counted += 1
        delay = policy.retry_delay(failure, attempts.counted)
        if delay is not None:
            metrics.RETRIES.labels(failure.flow, failure.code).inc()
            return delay
        outcome = await self._dead_letter(message, failure) or "dead_lettered"
        metrics.HANDLING.record(message.topic, failure.flow, outcome, time.monotonic() - attempts.started)
        self._finished(message, outcome)
        return None

    async def _dead_letter(self, message: InboundMessage, failure: Failure) -> str | None:
        """Hand the record to the failure sink until the broker acknowledged it; never drop it. Returns the sink's
        outcome (None: dead-lettered)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                outcome = await self._failure_sink(message, failure)
                self.resume(PAUSE_DEAD_LETTER)
                return outcome
            except asyncio.CancelledError:
                raise
            except Exception:
                self.pause(PAUSE_DEAD_LETTER)
                log.exception("dead letter not acknowledged; retrying", extra={"topic": message.topic})
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))

    # --- rebalance, commits, lag ---------------------------------------------------------------------------
    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._partitions.setdefault(tp, _Partition(tp.topic))
        metrics.REBALANCES.labels("assigned").inc()
        self.health.partitions = len(self._partitions)
        if self._partitions:
            self.assigned.set()
        self._share_changed()
        log.info("partitions assigned", extra={"partitions": sorted(f"{t.topic}/{t.partition}" for t in assigned)})

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._revoking:  # a rebalance and a stop may revoke at once: one after the other
            await self._revoke(revoked)

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        states = {tp: self._partitions[tp] for tp in revoked if tp in self._partitions}
        if not states:
            return
        for state in states.values():
            state.revoked = True
            self._not_due -= state.not_due
            state.not_due = 0
            for lane in list(state.lanes.values()):
                if lane.timer is not None or lane.waiter is not None:  # parked: nothing runs, drop it
                    if lane.timer is not None:
                        lane.timer.cancel()
                        lane.timer = None
                    if lane.waiter is not None:
                        lane.waiter.cancel()
                        lane.waiter = None
                    self._retire(lane)
        abandoned = [
            lane.worker for state in states.values() for lane in state.lanes.values()
            if lane.worker is not None and lane.slot.parked and lane.slot.abandonable
        ]
        for worker in abandoned:  # waiting for quota, nothing sent: stop now rather than at the drain deadline
            worker.cancel()
        if abandoned:
            log.info("unsent records abandoned; they will be read again", extra={"records": len(abandoned)})
        for state in states.values():
            state.drained = asyncio.Event()
            if not state.running:
                state.drained.set()
        busy = [state.drained.wait() for state in states.values() if state.drained and not state.drained.is_set()]
        if busy:
            try:
                await asyncio.wait_for(asyncio.gather(*busy), self._limits.drain_timeout_s)
            except TimeoutError:
                running = [lane.worker for state in states.values() for lane in state.lanes.values() if lane.worker]
                log.warning("drain deadline passed; unfinished records will be read again",
                            extra={"unfinished_lanes": len(running)})
                for worker in running:
                    worker.cancel()
                await asyncio.gather(*(state.drained.wait() for state in states.values() if state.drained))
        await self._commit(set(states))
        for tp, state in states.items():
            self._release(len(state.offsets))  # fetched, never finished: the next owner reads them again
            state.offsets = PartitionOffsets()
            del self._partitions[tp]
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
            state = self._partitions.get(tp)  # a rebalance may have taken it while the commit was in flight
            if state is not None:
                state.offsets.committed = position
        metrics.COMMITS.labels("ok").inc()

    def oldest_unfinished(self) -> dict[TopicPartition, tuple[int, int]]:
        """Per assigned partition holding unfinished records: (offset, timestamp ms) of the first of them.

        Every unfinished record is in its lane's queue, in offset order, so the first is the lowest lane head:
        O(lanes), for the lag view (``consumer.observability.lag``) every few seconds, never the hot path.
        """
        oldest: dict[TopicPartition, tuple[int, int]] = {}
        for tp, state in self._partitions.items():
            heads = [lane.queue[0] for lane in state.lanes.values() if lane.queue]
            if heads:
                head = min(heads, key=lambda message: message.offset)
                oldest[tp] = (head.offset, head.timestamp)
        return oldest
