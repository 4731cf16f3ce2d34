"""Replay: send selected dead letters back through the integration, resumably.

``replay`` sends each selected dead letter back, in dead-letter offset order per partition (which is the
source's per-key order: a dead letter sits in the partition of its source record):

* ``republish`` (the default): to its original topic *and* partition, with its key, value and original
  headers; of the failure context it keeps what ``headers.dead_letter_headers`` reads to build the failure
  history (``headers.CARRIED_ON_REPLAY``), so a replayed record that fails again is dead-lettered with its
  history, and ``ipaas_klaviyo-replay-count`` goes up by one. The record's timestamp is the time of the replay.
* ``direct``: through the service's dispatcher and real flow handlers, without a consumer, with the retry
  policy of its source topic; a letter that fails again takes the service's failure path (error log, then dead
  letter, with its history). The caller builds that ``Dispatch`` (the CLI, with the composition root's
  ``consumer.app.build_dispatcher``): nothing here knows how the service is put together.

``dry_run`` reads and selects only: it writes nothing (no record, no progress). ``rate`` caps the records
replayed per second (the HTTP layer's sliding-window limiter). ``skip_superseded`` leaves out the letters a newer
successful change of the same key superseded (``consumer.failures.superseded``; decided once, when the run
starts): they count as ``superseded`` and the run moves past them.

Resumable progress
    A replay run has an id (default: derived from the mode, the topics and the filter, so re-running the same
    command resumes it). Its progress is, per dead-letter partition, the next offset to look at (everything before
    it was replayed or filtered out), stored as JSON under the run id in the compacted ``replay-state`` topic.
    A run resumes from there; once finished, running it again replays only dead letters that arrived since.

    * ``republish`` is transactional: the records of a batch and the progress record are written in one Kafka
      transaction (transactional id ``<replay-state topic>.<run id>``, which also fences an older process still
      replaying the same run), and the service reads ``read_committed``. An interrupted batch is aborted (by this
      process, or, after a crash, when the next run initialises the same transactional id, or at the broker's
      transaction timeout), and its records are never seen by a ``read_committed`` reader; the next run starts
      where the last committed batch ended. So nothing is delivered twice, even after a crash. A batch is committed
      after ``batch_size`` records or ``max_batch_s`` seconds (well below the transaction timeout, whatever the
      rate limit). (aiokafka's transactions work against Kafka 4.1; the tests run them against the real broker.)
    * ``direct`` cannot be transactional (the handlers call Klaviyo and iPaaS.com): progress is written after each
      letter is handled (and, when it failed again, after its new dead letter is acknowledged); a cancellation that
      arrives once a handler has returned waits for that write. So an interruption (cancel, Ctrl-C) loses nothing
      and repeats nothing, except a letter interrupted inside its handler; a crash between a handler's return and
      the progress write runs that one letter once more on resume (the flows are idempotent upserts).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from consumer.failures.deadletters import DeadLetter, read_dead_letters
from consumer.failures.filters import LetterFilter, dead_letter_topics
from consumer.failures.scan import TopicScan
from consumer.failures.superseded import superseded_letters
from consumer.http.ratelimit import SlidingWindowLimiter, Window
from consumer.kafka import connection_options
from consumer.observability import metrics
from consumer.runtime.messages import Failure, FailureSink, InboundMessage, Message, Processor, classify
from consumer.runtime.policy import RetryPolicy
from consumer.settings import KafkaSettings, Settings
from consumer.timefmt import format_time
from consumer.topics import TopicCatalog

log = logging.getLogger("consumer.dlq")

Mode = Literal["republish", "direct"]


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What a direct replay runs dead letters through, built by the caller from the service's parts."""

    processor: Processor
    """The service's dispatcher: decode, route, flow handler."""
    failure_sink: FailureSink
    """The service's failure path for a letter that fails again (error log, then dead letter)."""
    policy_for: Callable[[str], RetryPolicy]
    """The retry policy of a source topic."""
    topics: frozenset[str]
    """The source topics the dispatcher has routes for (a letter of any other is skipped)."""


# --- the run's durable progress ------------------------------------------------------------------------------------
def default_run_id(mode: Mode, topics: Sequence[str], spec: Mapping[str, Any]) -> str:
    """A run id from what selects the letters, so the same command resumes the same run."""
    canonical = orjson.dumps({"mode": mode, "topics": sorted(topics), "filter": spec}, option=orjson.OPT_SORT_KEYS)
    return f"{mode}-{hashlib.sha256(canonical).hexdigest()[:16]}"


@dataclass
class ReplayState:
    """A run's durable progress: per dead-letter partition, the next offset to look at."""

    run_id: str
    mode: Mode
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    replayed: int = 0
    failed: int = 0
    skipped: int = 0
    finished: bool = False
    selection: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        positions: dict[str, dict[str, int]] = {}
        for tp, offset in sorted(self.positions.items()):
            positions.setdefault(tp.topic, {})[str(tp.partition)] = offset
        return orjson.dumps({
            "run_id": self.run_id, "mode": self.mode, "positions": positions, "replayed": self.replayed,
            "failed": self.failed, "skipped": self.skipped, "finished": self.finished, "filter": self.selection,
            "updated": format_time(datetime.now(UTC)),
        })

    @classmethod
    def from_json(cls, raw: bytes) -> ReplayState:
        document = orjson.loads(raw)
        positions = {TopicPartition(topic, int(partition)): int(offset)
                     for topic, by_partition in document.get("positions", {}).items()
                     for partition, offset in by_partition.items()}
        return cls(run_id=document["run_id"], mode=document.get("mode", "republish"), positions=positions,
                   replayed=int(document.get("replayed", 0)), failed=int(document.get("failed", 0)),
                   skipped=int(document.get("skipped", 0)), finished=bool(document.get("finished", False)),
                   selection=document.get("filter", {}))


async def load_replay_state(kafka: KafkaSettings, state_topic: str, run_id: str) -> ReplayState | None:
    """The last committed progress of a run (None: never started, or a tombstone)."""
    key = run_id.encode()
    latest: bytes | None = None
    async with TopicScan(kafka, [state_topic]) as scan:
        async for record in scan.records():
            if record.key == key:
                latest = record.value
    return ReplayState.from_json(latest) if latest else None


# --- what a run reports --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """Where a run stands; ``replayed`` counts letters sent (republish: ``committed`` of them are durable)."""

    scanned: int
    total: int
    replayed: int
    committed: int
    failed: int
    skipped: int


@dataclass
class ReplayResult:
    run_id: str
    mode: Mode
    dry_run: bool
    replayed: int = 0
    """This invocation (a dry run: would replay)."""
    failed: int = 0
    """Direct mode: failed again, dead-lettered again."""
    skipped: int = 0
    """No original topic to send to (republish), or no route for it (direct)."""
    superseded: int = 0
    """Left out: a newer successful change of the same key superseded them (``skip_superseded``)."""
    resumed: bool = False
    total_replayed: int = 0
    """Over every invocation of the run."""
    letters: list[DeadLetter] = field(default_factory=list)
    """A dry run: the letters that would be replayed."""

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "run_id": self.run_id, "mode": self.mode, "dry_run": self.dry_run, "replayed": self.replayed,
            "failed": self.failed, "skipped": self.skipped, "superseded": self.superseded, "resumed": self.resumed,
            "total_replayed": self.total_replayed,
        }
        if self.dry_run:
            document["letters"] = [letter.to_dict() for letter in self.letters]
        return document


# --- replay --------------------------------------------------------------------------------------------------------
async def replay(
    settings: Settings,
    *,
    catalog: TopicCatalog | None = None,
    topics: Sequence[str] = (),
    selection: LetterFilter | None = None,
    mode: Mode = "republish",
    dry_run: bool = False,
    rate: float | None = None,
    run_id: str | None = None,
    batch_size: int = 100,
    max_batch_s: float = 5.0,
    on_progress: Callable[[ReplayProgress], None] | None = None,
    dispatch: Dispatch | None = None,
    skip_superseded: bool = False,
) -> ReplayResult:
    """Replay the selected dead letters of ``topics`` (selectors as ``dead_letter_topics`` takes them; default:
    every dead-letter topic), resuming run ``run_id``. See the module doc for the modes and the guarantees.

    ``on_progress`` is called after each dead letter looked at (replayed, failed, skipped or not selected).
    ``dispatch`` is what direct mode (unless a dry run) runs the letters through; the caller builds it.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if mode == "direct" and not dry_run and dispatch is None:
        raise ValueError("a direct replay needs the service's dispatcher (dispatch)")
    catalog = catalog or TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    selection = selection or LetterFilter()
    names = dead_letter_topics(catalog, topics)
    run_id = run_id or default_run_id(mode, names, {**selection.spec(), **superseded_spec(skip_superseded)})
    state_topic = catalog.name("replay-state")
    limiter = _limiter(rate)
    kafka = settings.kafka
    superseded: set[str] = set()
    if skip_superseded:
        superseded = await superseded_letters(kafka, await read_dead_letters(kafka, names, selection), names)
    run = _Run(settings, catalog, names, selection, mode, run_id, state_topic, limiter, on_progress, superseded)

    if dry_run:
        state = await load_replay_state(kafka, state_topic, run_id)
        return await run.dry(state)
    if mode == "republish":
        producer = AIOKafkaProducer(
            **connection_options(kafka), enable_idempotence=True, acks="all", linger_ms=5,
            transactional_id=f"{state_topic}.{run_id}",
        )
        # start() initialises the transactional id: an open transaction of an earlier process of this run is
        # aborted (and that process fenced) *before* the progress is read, so the progress read is final.
        await producer.start()
        try:
            state = await load_replay_state(kafka, state_topic, run_id)
            return await run.republish(producer, state, batch_size, max_batch_s)
        finally:
            await producer.stop()
    assert dispatch is not None
    producer = AIOKafkaProducer(**connection_options(kafka), enable_idempotence=True, acks="all")
    await producer.start()
    try:
        state = await load_replay_state(kafka, state_topic, run_id)
        return await run.direct(producer, state, dispatch)
    finally:
        await producer.stop()


OUTAGE_WAIT_CAP_S = 30.0


def superseded_spec(skip_superseded: bool) -> dict[str, Any]:
    """What ``skip_superseded`` adds to the spec a run id is derived from (nothing when off: ids stay as they were)."""
    return {"skip_superseded": True} if skip_superseded else {}


def replay_retry_delay(policy: RetryPolicy, failure: Failure) -> float | None:
    """Direct replay's retry decision after a failed attempt (``failure.attempts`` made so far): the seconds to
    wait before trying again, or None when the letter has failed for good (it takes the failure path).

    The letter's own failures follow the runtime's decision (``RetryPolicy.retry_delay``). A failure that blames
    a destination (Klaviyo or iPaaS.com down, the credential refused) is never the letter's: the replay waits for
    the destination, as the service does, and is never charged an attempt for it.
    """
    if failure.outage is not None:
        return policy.delay(min(failure.attempts, 8), failure.retry_after, cap=OUTAGE_WAIT_CAP_S)
    return policy.retry_delay(failure, failure.attempts)


async def _handle(dispatcher: Processor, message: InboundMessage, policy: RetryPolicy) -> Failure | None:
    """Run one record through the dispatcher with the retry policy: None when handled, else the failure for good
    (after the policy's attempts, or at once when it is not retryable). While a destination is out, it waits."""
    attempt = 0
    counted = 0
    first: datetime | None = None
    waiting_since: float | None = None
    while True:
        attempt += 1
        try:
            await dispatcher(message)
            if waiting_since is not None:
                log.warning("destination available again; replay goes on",
                            extra={"waited_s": round(time.monotonic() - waiting_since, 1)})
            return None
        except Exception as exc:
            failure = classify(exc)
            if failure.outage is None:
                counted += 1
            elif waiting_since is None:
                waiting_since = time.monotonic()
                log.warning("destination unavailable; replay waits for it (Ctrl-C stops; run again to resume)",
                            extra={"state": failure.outage.value, "detail": failure.message})
            failure.attempts = counted if failure.outage is None else attempt
            if first is not None:
                failure.first_failure = first
            first = failure.first_failure
            delay = replay_retry_delay(policy, failure)
            if delay is None:
                return failure
            await asyncio.sleep(delay)


async def _uninterrupted(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile (the cancellation is raised after)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _limiter(rate: float | None) -> SlidingWindowLimiter | None:
    """At most ``rate`` records per second (below 1/s: one record per 1/rate seconds)."""
    if rate is None:
        return None
    if rate <= 0:
        raise ValueError("--rate must be > 0 records per second")
    seconds = max(1.0, 1.0 / rate)
    return SlidingWindowLimiter([Window(max(1, int(rate * seconds)), seconds)])


def _sources_of(catalog: TopicCatalog) -> dict[str, str]:
    """Dead-letter topic name → source topic name (when one source writes to it)."""
    by_dlt: dict[str, list[str]] = {}
    for logical, spec in catalog.sources().items():
        if spec.dead_letter_topic:
            by_dlt.setdefault(catalog.name(spec.dead_letter_topic), []).append(catalog.name(logical))
    return {dlt: sources[0] for dlt, sources in by_dlt.items() if len(sources) == 1}


class _Run:
    """One invocation of a replay run (the modes share the scan, the counts and the progress)."""

    def __init__(self, settings: Settings, catalog: TopicCatalog, topics: list[str], selection: LetterFilter,
                 mode: Mode, run_id: str, state_topic: str, limiter: SlidingWindowLimiter | None,
                 on_progress: Callable[[ReplayProgress], None] | None, superseded: set[str]) -> None:
        self.kafka = settings.kafka
        self.topics = topics
        self.selection = selection
        self.mode: Mode = mode
        self.run_id = run_id
        self.state_topic = state_topic
        self.limiter = limiter
        self.on_progress = on_progress
        self.superseded = superseded
        self.sources = _sources_of(catalog)
        self.result = ReplayResult(run_id=run_id, mode=mode, dry_run=False)
        self.scanned = 0
        self.total = 0
        self.committed = 0

    def _scan(self, state: ReplayState | None) -> TopicScan:
        return TopicScan(self.kafka, self.topics, since=self.selection.since,
                         start=state.positions if state else None)

    def _state(self, previous: ReplayState | None) -> ReplayState:
        if previous is None:
            return ReplayState(run_id=self.run_id, mode=self.mode, selection=self.selection.spec())
        self.result.resumed = True
        return replace(previous, positions=dict(previous.positions), finished=False,
                       selection=self.selection.spec())

    def _progress(self) -> None:
        if self.on_progress is not None:
            r = self.result
            self.on_progress(ReplayProgress(self.scanned, self.total, r.replayed, self.committed, r.failed, r.skipped))

    def _target(self, letter: DeadLetter) -> tuple[str, int | None] | None:
        topic = letter.original_topic or self.sources.get(letter.topic)
        return None if topic is None else (topic, letter.original_partition)

    def _superseded(self, letter: DeadLetter) -> bool:
        """A letter to leave out (counted): a newer successful change of its key superseded it."""
        if letter.ref not in self.superseded:
            return False
        log.info("dead letter superseded by a newer change of its key; left out", extra={"ref": letter.ref})
        self.result.superseded += 1
        return True

    async def _acquire(self) -> None:
        if self.limiter is not None:
            await self.limiter.acquire()

    async def dry(self, previous: ReplayState | None) -> ReplayResult:
        result = self.result
        result.dry_run = True
        result.resumed = previous is not None
        result.total_replayed = previous.replayed if previous else 0
        async with self._scan(previous) as scan:
            self.total = scan.total
            async for record in scan.records():
                self.scanned += 1
                letter = DeadLetter.from_record(record)
                if not self.selection.matches(letter) or self._superseded(letter):
                    self._progress()
                    continue
                if self._target(letter) is None:
                    result.skipped += 1
                else:
                    result.replayed += 1
                    result.letters.append(letter)
                self._progress()
        return result

    async def republish(self, producer: AIOKafkaProducer, previous: ReplayState | None, batch_size: int,
                        max_batch_s: float) -> ReplayResult:
        result, state = self.result, self._state(previous)
        base_replayed, base_skipped = state.replayed, state.skipped
        partitions: dict[str, set[int]] = {}
        pending: list[asyncio.Future[Any]] = []
        flows: dict[str, int] = {}
        opened: float | None = None  # monotonic time the open transaction began

        async def commit(*, finished: bool = False) -> None:
            nonlocal opened
            if opened is None:
                await producer.begin_transaction()
                opened = time.monotonic()
            state.replayed, state.skipped = base_replayed + result.replayed, base_skipped + result.skipped
            state.finished = finished
            await producer.send(self.state_topic, key=self.run_id.encode(), value=state.to_json())
            await asyncio.gather(*pending)
            await producer.commit_transaction()
            opened = None
            pending.clear()
            self.committed = result.replayed
            for flow, count in flows.items():
                metrics.DEAD_LETTERS_REPLAYED.labels(flow, "republish").inc(count)
            flows.clear()

        try:
            async with self._scan(previous) as scan:
                self.total = scan.total
                async for record in scan.records():
                    self.scanned += 1
                    tp = TopicPartition(record.topic, record.partition)
                    letter = DeadLetter.from_record(record)
                    if self.selection.matches(letter) and not self._superseded(letter):
                        target = self._target(letter)
                        if target is None:
                            log.warning("dead letter without an original topic; skipped", extra={"ref": letter.ref})
                            result.skipped += 1
                        else:
                            wait = self.limiter.delay() if self.limiter else 0.0
                            if opened is not None and (len(pending) >= batch_size
                                                       or time.monotonic() - opened + wait > max_batch_s):
                                await commit()
                            await self._acquire()
                            if opened is None:
                                await producer.begin_transaction()
                                opened = time.monotonic()
                            topic, partition = target
                            if topic not in partitions:
                                partitions[topic] = set(await producer.partitions_for(topic))
                            if partition not in partitions[topic]:
                                partition = None  # the source lost partitions: fall back to the key
                            pending.append(await producer.send(
                                topic, key=letter.key, value=letter.value, partition=partition,
                                headers=letter.replay_headers()))
                            flows[letter.flow] = flows.get(letter.flow, 0) + 1
                            result.replayed += 1
                    state.positions[tp] = record.offset + 1
                    self._progress()
                await commit(finished=True)
        except BaseException:
            if opened is not None:
                # an interrupted batch never becomes visible; the next run resumes after the last committed one
                try:
                    await asyncio.shield(producer.abort_transaction())
                except Exception:
                    log.exception("aborting the replay transaction failed; the broker aborts it on timeout")
            for future in pending:  # their outcome no longer matters: the transaction is gone
                if future.done() and not future.cancelled():
                    future.exception()
            raise
        result.total_replayed = state.replayed
        return result

    async def direct(self, producer: AIOKafkaProducer, previous: ReplayState | None,
                     dispatch: Dispatch) -> ReplayResult:
        result, state = self.result, self._state(previous)
        base = (state.replayed, state.failed, state.skipped)

        async def save(*, finished: bool = False) -> None:
            state.replayed, state.failed, state.skipped = (
                base[0] + result.replayed, base[1] + result.failed, base[2] + result.skipped)
            state.finished = finished
            await producer.send_and_wait(self.state_topic, key=self.run_id.encode(), value=state.to_json())
            self.committed = result.replayed

        async with self._scan(previous) as scan:
            self.total = scan.total
            async for record in scan.records():
                self.scanned += 1
                tp = TopicPartition(record.topic, record.partition)
                letter = DeadLetter.from_record(record)
                state.positions[tp] = record.offset + 1
                if not self.selection.matches(letter):
                    self._progress()
                    continue
                target = self._target(letter)
                if self._superseded(letter):
                    pass  # counted; the progress below moves past it
                elif target is None or target[0] not in dispatch.topics:
                    log.warning("dead letter with no route for its original topic; skipped",
                                extra={"ref": letter.ref, "topic": target[0] if target else None})
                    result.skipped += 1
                else:
                    await self._acquire()
                    message = Message(
                        topic=target[0], partition=target[1] if target[1] is not None else letter.partition,
                        offset=letter.original_offset if letter.original_offset is not None else -1,
                        key=letter.key, value=letter.value, headers=letter.replay_headers(),
                        timestamp=letter.original_timestamp_ms or letter.timestamp_ms,
                    )
                    failure = await _handle(dispatch.processor, message, dispatch.policy_for(message.topic))

                    async def settle(message: InboundMessage = message, failure: Failure | None = failure,
                                     flow: str = letter.flow) -> None:
                        if failure is None:
                            result.replayed += 1
                            metrics.DEAD_LETTERS_REPLAYED.labels(flow, "direct").inc()
                        else:
                            await dispatch.failure_sink(message, failure)
                            result.failed += 1
                        await save()

                    # once handled, the outcome and the progress are recorded even when the run is interrupted now
                    await _uninterrupted(settle())
                    self._progress()
                    continue
                await save()
                self._progress()
            await save(finished=True)
        result.total_replayed = state.replayed
        return result
