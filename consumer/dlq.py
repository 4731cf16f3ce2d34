"""Dead-letter tooling: read dead-letter topics decoded and filtered, and replay dead letters.

Reading
    A dead-letter topic is read with a plain (group-less) consumer, from its beginning (or the first offset at or
    after ``since``, by record time) to the end offsets captured when the read starts, so a read terminates while
    the service keeps writing. ``DeadLetter`` decodes a record: where it came from (``kafka_dlt-original-*``), its
    flow, error code, message, attempts, first and last failure, the failure history of earlier replays, and
    what to do (the catalog entry's action). ``LetterFilter`` selects by flow, error code, key and a time range
    (of the last failure); ``dead_letter_topics`` resolves ``--topic`` (a logical source or dead-letter id, or a
    Kafka name; default: every dead-letter topic of the catalog).

Replay
    ``replay`` sends each selected dead letter back through the integration, in dead-letter offset order per
    partition (which is the source's per-key order: a dead letter sits in the partition of its source record):

    * ``republish`` (the default): to its original topic *and* partition, with its key, value and original
      headers; of the failure context it keeps what ``deadletter.dead_letter_headers`` reads to build the failure
      history (``CARRIED_ON_REPLAY``), so a replayed record that fails again is dead-lettered with its history, and
      ``ipaas_klaviyo-replay-count`` goes up by one. The record's timestamp is the time of the replay.
    * ``direct``: through the dispatcher and the real flow handlers (``consumer.app.build_dispatcher``), without
      a consumer, with the settings' retry policy; a letter that fails again takes the service's failure path
      (error log, then dead letter, with its history).

    ``dry_run`` reads and selects only: it writes nothing (no record, no progress). ``rate`` caps the records
    replayed per second (the HTTP layer's sliding-window limiter).

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
import base64
import hashlib
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer import deadletter as dl
from consumer.catalog import Flow, entry_for_code
from consumer.http.ratelimit import SlidingWindowLimiter, Window
from consumer.kafka import connection_options
from consumer.observability import metrics
from consumer.runtime.messages import Failure, FailureSink, InboundMessage, Message, Processor, classify
from consumer.runtime.policy import RetryPolicy
from consumer.settings import KafkaSettings, Settings
from consumer.topics import TopicCatalog

if TYPE_CHECKING:
    from consumer.klaviyo import Auth
    from consumer.routing import Route

log = logging.getLogger("consumer.dlq")

Mode = Literal["republish", "direct"]

CARRIED_ON_REPLAY = frozenset({
    dl.ORIGINAL_TOPIC, dl.ORIGINAL_PARTITION, dl.ORIGINAL_OFFSET, dl.ORIGINAL_TIMESTAMP,
    dl.ERROR_CODE, dl.FLOW, dl.ATTEMPTS, dl.FIRST_FAILURE, dl.LAST_FAILURE, dl.EXCEPTION_MESSAGE, dl.HISTORY,
})
"""The failure context a replayed record keeps: what ``dead_letter_headers`` reads to fold the earlier failure
into the history (and to keep the first source position) should the replayed record fail again."""
_CONTEXT_PREFIXES = ("kafka_dlt-", "ipaas_klaviyo-")


# --- time ----------------------------------------------------------------------------------------------------------
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (a date, or a time without zone, is UTC) or a relative one: ``30s``, ``15m``, ``2h``,
    ``7d``, ``1w`` ago."""
    relative = _RELATIVE.match(text)
    if relative:
        seconds = float(relative.group(1)) * _UNITS[relative.group(2).lower()]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time nor a relative one like 2h, 30m or 7d") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- reading a topic to its captured end -----------------------------------------------------------------------------
class TopicScan:
    """Reads topics from a start offset to the end offsets captured on entry (so it terminates), group-less.

    The start of a partition is the latest of: its beginning, the first offset at or after ``since`` (by record
    time), and ``start`` (e.g. a replay's progress). ``only`` restricts the read to some partitions and ``stop``
    lowers end offsets (e.g. to read one record). Reads are ``read_committed``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[str],
        *,
        since: datetime | None = None,
        start: Mapping[TopicPartition, int] | None = None,
        stop: Mapping[TopicPartition, int] | None = None,
        only: Iterable[TopicPartition] | None = None,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self._kafka = kafka
        self._topics = list(dict.fromkeys(topics))
        self._since = since
        self._start = dict(start or {})
        self._stop = dict(stop or {})
        self._only = None if only is None else set(only)
        self._idle_timeout_s = idle_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self.bounds: dict[TopicPartition, tuple[int, int]] = {}
        """Per partition: (first offset to read, end offset captured on entry)."""

    @property
    def total(self) -> int:
        """Offsets in range (records, plus transaction markers and compacted gaps)."""
        return sum(max(0, end - begin) for begin, end in self.bounds.values())

    async def __aenter__(self) -> TopicScan:
        tps = await _partitions(self._kafka, self._topics)
        if self._only is not None:
            tps = [tp for tp in tps if tp in self._only]
        consumer = AIOKafkaConsumer(
            **connection_options(self._kafka), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
        )
        await consumer.start()
        self._consumer = consumer
        try:
            if not tps:
                return self
            consumer.assign(tps)
            beginning = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            since: dict[TopicPartition, int] = {}
            if self._since is not None:
                found = await consumer.offsets_for_times({tp: _ms(self._since) for tp in tps})
                since = {tp: (meta.offset if meta is not None else end[tp]) for tp, meta in found.items()}
            for tp in tps:
                last = min(end[tp], self._stop.get(tp, end[tp]))
                first = max(beginning[tp], since.get(tp, 0), self._start.get(tp, 0))
                self.bounds[tp] = (first, last)
                if first < last:
                    consumer.seek(tp, first)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def records(self) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
        """Every record in range, in offset order per partition."""
        consumer = self._consumer
        assert consumer is not None, "use TopicScan as an async context manager"
        pending = {tp for tp, (first, last) in self.bounds.items() if first < last}
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            if any(batch.values()):
                idle_since = loop.time()
            for tp, records in batch.items():
                last = self.bounds[tp][1]
                for record in records:
                    if record.offset < last:
                        yield record
            for tp in list(pending):
                if await consumer.position(tp) >= self.bounds[tp][1]:
                    pending.discard(tp)
                    consumer.pause(tp)
            if pending and not any(batch.values()) and loop.time() - idle_since > self._idle_timeout_s:
                raise TimeoutError(f"reading {sorted({tp.topic for tp in pending})} stalled: no record for "
                                   f"{self._idle_timeout_s:.0f}s before the end offsets")


async def _partitions(kafka: KafkaSettings, topics: Sequence[str], wait_s: float = 5.0) -> list[TopicPartition]:
    """The partitions of ``topics``; waits up to ``wait_s`` for a topic just created to have its leaders."""
    admin = AIOKafkaAdminClient(**connection_options(kafka))
    await admin.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    try:
        while True:
            described = await admin.describe_topics(list(topics))
            problems = {topic["topic"]: topic["error_code"] for topic in described
                        if topic["error_code"] != 0 or not topic["partitions"]
                        or any(p["error_code"] != 0 for p in topic["partitions"])}
            if not problems:
                break
            if loop.time() >= deadline:
                raise ValueError(f"topics not available ({problems}, by Kafka error code); "
                                 "run `ipaas-klaviyo topics apply`")
            await asyncio.sleep(0.2)  # polls the broker's metadata: nothing to await instead
    finally:
        await admin.close()
    return sorted(TopicPartition(topic["topic"], p["partition"]) for topic in described for p in topic["partitions"])


# --- decoding --------------------------------------------------------------------------------------------------------
def key_text(key: bytes | None) -> str | None:
    """A key as text: UTF-8, or ``hex:<hex>`` when it is not UTF-8."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + key.hex()


def value_view(value: bytes | None) -> tuple[str | None, str]:
    """(text, encoding): the value as UTF-8 text, else base64, and which one it is (``utf-8`` or ``base64``)."""
    if value is None:
        return None, "null"
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def _int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic, with its failure context decoded."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_record(cls, record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
        return cls(record.topic, record.partition, record.offset, record.timestamp, record.key, record.value,
                   tuple((name, value or b"") for name, value in record.headers))

    @cached_property
    def context(self) -> dict[str, str]:
        """The headers as UTF-8 strings."""
        return dl.decoded_headers(self.headers)

    def _get(self, name: str) -> str | None:
        return self.context.get(name)

    @property
    def original_topic(self) -> str | None:
        return self._get(dl.ORIGINAL_TOPIC)

    @property
    def original_partition(self) -> int | None:
        return _int(self._get(dl.ORIGINAL_PARTITION))

    @property
    def original_offset(self) -> int | None:
        return _int(self._get(dl.ORIGINAL_OFFSET))

    @property
    def flow(self) -> str:
        return self._get(dl.FLOW) or "unknown"

    @property
    def code(self) -> str:
        return self._get(dl.ERROR_CODE) or "UNKNOWN"

    @property
    def message(self) -> str:
        return self._get(dl.EXCEPTION_MESSAGE) or ""

    @property
    def attempts(self) -> int:
        return _int(self._get(dl.ATTEMPTS)) or 0

    @property
    def replay_count(self) -> int:
        return _int(self._get(dl.REPLAY_COUNT)) or 0

    @property
    def first_failure(self) -> datetime | None:
        return _parse_iso(self._get(dl.FIRST_FAILURE))

    @property
    def last_failure(self) -> datetime | None:
        """The last failure's time (the dead-lettering time when the header is missing)."""
        return _parse_iso(self._get(dl.LAST_FAILURE)) or datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def history(self) -> list[dict[str, Any]]:
        """Earlier failures (of earlier replays), oldest first."""
        raw = self._get(dl.HISTORY)
        if not raw:
            return []
        try:
            loaded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        return loaded if isinstance(loaded, list) else []

    @property
    def what_to_do(self) -> str:
        """The catalog's action for the error code."""
        return entry_for_code(self.code).action

    @property
    def ref(self) -> str:
        """``<dead-letter topic>:<partition>:<offset>``, what ``dlq show`` takes."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The headers a replayed record carries: the original ones, the failure context ``CARRIED_ON_REPLAY``,
        and the replay count plus one."""
        kept = [(name, value) for name, value in self.headers
                if (not name.startswith(_CONTEXT_PREFIXES) or name in CARRIED_ON_REPLAY)]
        return [*kept, (dl.REPLAY_COUNT, str(self.replay_count + 1).encode())]

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """JSON-ready: the decoded letter; ``full`` adds every header, the history, what to do and the value."""
        last, first = self.last_failure, self.first_failure
        document: dict[str, Any] = {
            "ref": self.ref, "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "timestamp": _iso(datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)),
            "original": {"topic": self.original_topic, "partition": self.original_partition,
                         "offset": self.original_offset},
            "key": key_text(self.key), "flow": self.flow, "code": self.code, "message": self.message,
            "attempts": self.attempts, "replay_count": self.replay_count,
            "first_failure": _iso(first) if first else None, "last_failure": _iso(last) if last else None,
        }
        if full:
            text, encoding = value_view(self.value)
            document.update({
                "error_class": self._get(dl.ERROR_CLASS), "exception": self._get(dl.EXCEPTION_FQCN),
                "http_status": _int(self._get(dl.HTTP_STATUS)), "consumer_group": self._get(dl.ORIGINAL_CONSUMER_GROUP),
                "what_to_do": self.what_to_do, "history": self.history,
                "headers": self.context, "value": text, "value_encoding": encoding,
            })
        return document


# --- selecting -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters: any of the flows (slug or catalog name), any of the codes, any of the keys (as text),
    last failure within [since, until]. An empty criterion matches everything."""

    flows: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def build(cls, *, flows: Iterable[str] = (), codes: Iterable[str] = (), keys: Iterable[str] = (),
              since: datetime | str | None = None, until: datetime | str | None = None,
              now: datetime | None = None) -> LetterFilter:
        """From command-line values (times may be ISO or relative, like ``2h``)."""
        now = now or datetime.now(UTC)
        return cls(
            flows=frozenset(Flow.slug_of(f) for f in flows), codes=frozenset(c.strip().upper() for c in codes),
            keys=frozenset(keys),
            since=parse_time(since, now) if isinstance(since, str) else since,
            until=parse_time(until, now) if isinstance(until, str) else until,
        )

    def matches(self, letter: DeadLetter) -> bool:
        if self.flows and letter.flow.lower() not in self.flows:
            return False
        if self.codes and letter.code.upper() not in self.codes:
            return False
        if self.keys and key_text(letter.key) not in self.keys:
            return False
        if self.since is not None or self.until is not None:
            last = letter.last_failure
            if last is None:
                return False
            if self.since is not None and last < self.since:
                return False
            if self.until is not None and last > self.until:
                return False
        return True

    def spec(self) -> dict[str, Any]:
        return {"flows": sorted(self.flows), "codes": sorted(self.codes), "keys": sorted(self.keys),
                "since": _iso(self.since) if self.since else None, "until": _iso(self.until) if self.until else None}


def dead_letter_topics(catalog: TopicCatalog, selectors: Sequence[str] = ()) -> list[str]:
    """Kafka names of the dead-letter topics: each selector is a logical id or a Kafka name, of a dead-letter topic
    or of a source topic (meaning its dead-letter topic). No selector: every dead-letter topic of the catalog."""
    if not selectors:
        return [catalog.name(logical) for logical, spec in catalog.topics.items() if spec.role == "dead_letter"]
    names: list[str] = []
    for selector in selectors:
        logical = selector if selector in catalog.topics else None
        if logical is None:
            found = catalog.spec_by_name(selector)
            logical = found[0] if found else None
        if logical is None:
            raise ValueError(f"{selector!r} is not a topic of the catalog")
        spec = catalog.topics[logical]
        if spec.role == "source" and spec.dead_letter_topic:
            names.append(catalog.name(spec.dead_letter_topic))
        elif spec.role == "dead_letter":
            names.append(catalog.name(logical))
        else:
            raise ValueError(f"{selector!r} is neither a dead-letter topic nor a source topic")
    return list(dict.fromkeys(names))


def parse_ref(text: str, topics: Sequence[str]) -> list[tuple[TopicPartition, int]]:
    """``[topic:]partition:offset`` → (partition, offset) pairs; without a topic, at each of ``topics``."""
    parts = text.rsplit(":", 2)
    try:
        if len(parts) == 3:
            return [(TopicPartition(parts[0], int(parts[1])), int(parts[2]))]
        if len(parts) == 2:
            return [(TopicPartition(topic, int(parts[0])), int(parts[1])) for topic in topics]
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not a dead letter reference ([topic:]partition:offset)")


async def read_dead_letters(
    kafka: KafkaSettings,
    topics: Sequence[str],
    selection: LetterFilter | None = None,
    *,
    limit: int | None = None,
) -> list[DeadLetter]:
    """The dead letters of ``topics`` that match (at most ``limit``), by topic, partition and offset."""
    selection = selection or LetterFilter()
    found: list[DeadLetter] = []
    async with TopicScan(kafka, topics, since=selection.since) as scan:
        async for record in scan.records():
            letter = DeadLetter.from_record(record)
            if selection.matches(letter):
                found.append(letter)
                if limit is not None and len(found) >= limit:
                    break
    found.sort(key=lambda letter: (letter.topic, letter.partition, letter.offset))
    return found


async def fetch_dead_letters(kafka: KafkaSettings, refs: Iterable[tuple[TopicPartition, int]]) -> list[DeadLetter]:
    """The dead letters at these (partition, offset) pairs (missing ones are left out: deleted or never there)."""
    wanted = list(dict.fromkeys(refs))
    found: list[DeadLetter] = []
    for tp, offset in wanted:
        async with TopicScan(kafka, [tp.topic], only=[tp], start={tp: offset}, stop={tp: offset + 1}) as scan:
            async for record in scan.records():
                if record.offset == offset:
                    found.append(DeadLetter.from_record(record))
    return found


# --- output ----------------------------------------------------------------------------------------------------------
def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(letters: Sequence[DeadLetter]) -> str:
    """One line per dead letter."""
    header = ("DEAD LETTER", "ORIGINAL", "KEY", "FLOW", "CODE", "ATT", "LAST FAILURE", "MESSAGE")
    rows = [header]
    for letter in letters:
        last = letter.last_failure
        rows.append((
            f"{letter.topic}:{letter.partition}:{letter.offset}",
            f"{letter.original_topic}:{letter.original_partition}:{letter.original_offset}",
            _clip(key_text(letter.key), 24), letter.flow, letter.code,
            str(letter.attempts) + (f"+r{letter.replay_count}" if letter.replay_count else ""),
            _iso(last) if last else "-", _clip(letter.message, 80),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_letter(letter: DeadLetter) -> str:
    """One dead letter in full: where it came from, the failure, what to do, the history, headers and value."""
    d = letter.to_dict(full=True)
    original = d["original"]
    lines = [
        f"dead letter    {d['ref']}  (dead-lettered {d['timestamp']})",
        f"original       {original['topic']} partition {original['partition']} offset {original['offset']}",
        f"key            {d['key']}",
        f"flow           {d['flow']}",
        f"error code     {d['code']} ({d['error_class'] or '-'}"
        + (f", HTTP {d['http_status']}" if d["http_status"] else "") + ")",
        f"message        {d['message']}",
        f"attempts       {d['attempts']}   replays: {d['replay_count']}",
        f"first failure  {d['first_failure']}",
        f"last failure   {d['last_failure']}",
        f"exception      {d['exception']}",
        f"consumer group {d['consumer_group']}",
        f"what to do     {d['what_to_do']}",
    ]
    if d["history"]:
        lines.append("failure history (earlier replays, oldest first):")
        for item in d["history"]:
            lines.append(f"  - {item.get('last_failure')}  {item.get('code')}  flow {item.get('flow')}  "
                         f"attempts {item.get('attempts')}: {item.get('message')}")
    lines.append("headers:")
    lines.extend(f"  {name}: {value}" for name, value in d["headers"].items())
    label = {"utf-8": "value (UTF-8 text):", "base64": "value (not UTF-8; base64):", "null": "value: null"}
    lines.append(label[d["value_encoding"]])
    if d["value"] is not None:
        lines.append(d["value"])
    return "\n".join(lines)


def to_json_line(document: Mapping[str, Any]) -> str:
    return orjson.dumps(document).decode()


# --- replay progress -------------------------------------------------------------------------------------------------
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
            "updated": _iso(datetime.now(UTC)),
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


# --- replay ----------------------------------------------------------------------------------------------------------
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
    resumed: bool = False
    total_replayed: int = 0
    """Over every invocation of the run."""
    letters: list[DeadLetter] = field(default_factory=list)
    """A dry run: the letters that would be replayed."""

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "run_id": self.run_id, "mode": self.mode, "dry_run": self.dry_run, "replayed": self.replayed,
            "failed": self.failed, "skipped": self.skipped, "resumed": self.resumed,
            "total_replayed": self.total_replayed,
        }
        if self.dry_run:
            document["letters"] = [letter.to_dict() for letter in self.letters]
        return document


class TextProgress:
    """A one-line progress bar on a terminal (nothing when the stream is not a TTY)."""

    def __init__(self, stream: TextIO | None = None, *, label: str = "replay", every_s: float = 0.1) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._label = label
        self._every_s = every_s
        self._last = 0.0
        self._started = time.monotonic()
        self._drawn = False

    def __call__(self, progress: ReplayProgress, *, force: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._every_s:
            return
        self._last = now
        share = progress.scanned / progress.total if progress.total else 1.0
        filled = int(share * 30)
        rate = progress.replayed / max(now - self._started, 1e-6)
        line = (f"\r{self._label} [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}  replayed {progress.replayed}"
                f"  failed {progress.failed}  skipped {progress.skipped}  {rate:.0f}/s")
        self._stream.write(line)
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()


def _limiter(rate: float | None) -> SlidingWindowLimiter | None:
    """At most ``rate`` records per second (below 1/s: one record per 1/rate seconds)."""
    if rate is None:
        return None
    if rate <= 0:
        raise ValueError("--rate must be > 0 records per second")
    seconds = max(1.0, 1.0 / rate)
    return SlidingWindowLimiter([Window(max(1, int(rate * seconds)), seconds)])


def _default_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(attempts=settings.runtime.retry_attempts, base_delay_s=settings.runtime.retry_base_delay_s,
                       max_delay_s=settings.runtime.retry_max_delay_s)


def _sources_of(catalog: TopicCatalog) -> dict[str, str]:
    """Dead-letter topic name → source topic name (when one source writes to it)."""
    by_dlt: dict[str, list[str]] = {}
    for logical, spec in catalog.sources().items():
        if spec.dead_letter_topic:
            by_dlt.setdefault(catalog.name(spec.dead_letter_topic), []).append(catalog.name(logical))
    return {dlt: sources[0] for dlt, sources in by_dlt.items() if len(sources) == 1}


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
    routes: Sequence[Route] | None = None,
    auth: Auth | None = None,
) -> ReplayResult:
    """Replay the selected dead letters of ``topics`` (selectors as ``dead_letter_topics`` takes them; default:
    every dead-letter topic), resuming run ``run_id``. See the module doc for the modes and the guarantees.

    ``on_progress`` is called after each dead letter looked at (replayed, failed, skipped or not selected).
    ``routes`` and ``auth`` replace the default routes and the Klaviyo credential in direct mode (as ``Service``
    takes them).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    catalog = catalog or TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    selection = selection or LetterFilter()
    names = dead_letter_topics(catalog, topics)
    run_id = run_id or default_run_id(mode, names, selection.spec())
    state_topic = catalog.name("replay-state")
    limiter = _limiter(rate)
    kafka = settings.kafka
    run = _Run(settings, catalog, names, selection, mode, run_id, state_topic, limiter, on_progress)

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
    async with AsyncExitStack() as stack:
        from consumer.app import build_dispatcher

        producer = AIOKafkaProducer(**connection_options(kafka), enable_idempotence=True, acks="all")
        await producer.start()
        stack.push_async_callback(producer.stop)
        dispatcher, table, failure_sink = await build_dispatcher(
            settings, stack, producer, catalog, auth=auth, routes=routes)
        state = await load_replay_state(kafka, state_topic, run_id)
        default = _default_policy(settings)
        return await run.direct(producer, state, dispatcher, set(table.topics), failure_sink,
                                lambda topic: table.policy_for(topic, default))


class _Run:
    """One invocation of a replay run (the modes share the scan, the counts and the progress)."""

    def __init__(self, settings: Settings, catalog: TopicCatalog, topics: list[str], selection: LetterFilter,
                 mode: Mode, run_id: str, state_topic: str, limiter: SlidingWindowLimiter | None,
                 on_progress: Callable[[ReplayProgress], None] | None) -> None:
        self.kafka = settings.kafka
        self.topics = topics
        self.selection = selection
        self.mode: Mode = mode
        self.run_id = run_id
        self.state_topic = state_topic
        self.limiter = limiter
        self.on_progress = on_progress
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
                if not self.selection.matches(letter):
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
                    if self.selection.matches(letter):
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

    async def direct(self, producer: AIOKafkaProducer, previous: ReplayState | None, dispatcher: Processor,
                     routed: set[str], failure_sink: FailureSink,
                     policy_for: Callable[[str], RetryPolicy]) -> ReplayResult:
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
                if target is None or target[0] not in routed:
                    log.warning("dead letter with no route for its original topic; skipped",
                                extra={"ref": letter.ref, "topic": target[0] if target else None})
                    result.skipped += 1
                else:
                    await self._acquire()
                    message = Message(
                        topic=target[0], partition=target[1] if target[1] is not None else letter.partition,
                        offset=letter.original_offset if letter.original_offset is not None else -1,
                        key=letter.key, value=letter.value, headers=letter.replay_headers(),
                        timestamp=_int(letter.context.get(dl.ORIGINAL_TIMESTAMP)) or letter.timestamp_ms,
                    )
                    failure = await _handle(dispatcher, message, policy_for(message.topic))

                    async def settle(message: InboundMessage = message, failure: Failure | None = failure,
                                     flow: str = letter.flow) -> None:
                        if failure is None:
                            result.replayed += 1
                            metrics.DEAD_LETTERS_REPLAYED.labels(flow, "direct").inc()
                        else:
                            await failure_sink(message, failure)
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


async def _uninterrupted(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile (the cancellation is raised after)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _handle(dispatcher: Processor, message: InboundMessage, policy: RetryPolicy) -> Failure | None:
    """Run one record through the dispatcher with the retry policy: None when handled, else the failure for good
    (after the policy's attempts, or at once when it is not retryable)."""
    attempt = 0
    first: datetime | None = None
    while True:
        attempt += 1
        try:
            await dispatcher(message)
            return None
        except Exception as exc:
            failure = classify(exc)
            failure.attempts = attempt
            if first is not None:
                failure.first_failure = first
            first = failure.first_failure
            if (failure.retryable or failure.infrastructure) and attempt < policy.attempts:
                await asyncio.sleep(policy.delay(attempt, failure.retry_after))
                continue
            return failure
