"""Dead letters: writing a failed record to its dead-letter topic, and reading one back as a typed value.

A dead letter is the original record byte for byte (key, value, headers) plus its failure context in headers
(``headers``). It goes to the partition its source record came from, so a replay keeps per-key order.
``DeadLetter`` decodes one: where it came from, its flow, error code, message, attempts, first and last failure,
the failure history of earlier replays, and what it means and what to do (the catalog entry's texts).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import orjson

from consumer.catalog import entry_for_code
from consumer.failures import headers as h
from consumer.failures.scan import Selection, TopicScan
from consumer.observability import metrics
from consumer.runtime.messages import Failure, InboundMessage
from consumer.settings import KafkaSettings
from consumer.timefmt import format_time, parse_iso

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import ConsumerRecord, TopicPartition


# --- writing -------------------------------------------------------------------------------------------------------
class DeadLetterPublisher:
    """Writes a failed record to its dead-letter topic and returns once the broker acknowledged it."""

    def __init__(self, producer: AIOKafkaProducer, group_id: str, topic_for: Callable[[str], str]) -> None:
        self._producer = producer
        self._group_id = group_id
        self._topic_for = topic_for

    async def publish(self, message: InboundMessage, failure: Failure) -> None:
        topic = self._topic_for(message.topic)
        partitions = await self._producer.partitions_for(topic)
        # Same partition as the source keeps per-key order for replay; a smaller topic falls back to the key.
        partition = message.partition if partitions and message.partition in partitions else None
        await self._producer.send_and_wait(
            topic,
            value=message.value,
            key=message.key,
            partition=partition,
            headers=h.dead_letter_headers(message, failure, self._group_id),
        )
        metrics.DEAD_LETTERS.labels(message.topic, failure.flow, failure.code).inc()


# --- decoding ------------------------------------------------------------------------------------------------------
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
        return h.decoded_headers(self.headers)

    def _get(self, name: str) -> str | None:
        return self.context.get(name)

    @property
    def original_topic(self) -> str | None:
        return self._get(h.ORIGINAL_TOPIC)

    @property
    def original_partition(self) -> int | None:
        return h.header_int(self._get(h.ORIGINAL_PARTITION))

    @property
    def original_offset(self) -> int | None:
        return h.header_int(self._get(h.ORIGINAL_OFFSET))

    @property
    def original_timestamp_ms(self) -> int | None:
        return h.header_int(self._get(h.ORIGINAL_TIMESTAMP))

    @property
    def flow(self) -> str:
        return self._get(h.FLOW) or "unknown"

    @property
    def code(self) -> str:
        return self._get(h.ERROR_CODE) or "UNKNOWN"

    @property
    def message(self) -> str:
        return self._get(h.EXCEPTION_MESSAGE) or ""

    @property
    def attempts(self) -> int:
        return h.header_int(self._get(h.ATTEMPTS)) or 0

    @property
    def replay_count(self) -> int:
        return h.header_int(self._get(h.REPLAY_COUNT)) or 0

    @property
    def first_failure(self) -> datetime | None:
        return parse_iso(self._get(h.FIRST_FAILURE))

    @property
    def last_failure(self) -> datetime | None:
        """The last failure's time (the dead-lettering time when the header is missing)."""
        return parse_iso(self._get(h.LAST_FAILURE)) or datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def history(self) -> list[dict[str, Any]]:
        """Earlier failures (of earlier replays), oldest first."""
        raw = self._get(h.HISTORY)
        if not raw:
            return []
        try:
            loaded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        return loaded if isinstance(loaded, list) else []

    @property
    def meaning(self) -> str:
        """What the error code means (the catalog's text)."""
        return entry_for_code(self.code).meaning

    @property
    def what_to_do(self) -> str:
        """The catalog's action for the error code."""
        return entry_for_code(self.code).action

    @property
    def operator_hint(self) -> str | None:
        """The setting or command that fixes it for a self-hosted operator, where the catalog has one."""
        return entry_for_code(self.code).operator_hint

    @property
    def ref(self) -> str:
        """``<dead-letter topic>:<partition>:<offset>``, what ``dlq show`` takes."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The headers a replayed record carries (see ``headers.replay_headers``)."""
        return h.replay_headers(self.headers, self.replay_count)

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """JSON-ready: the decoded letter; ``full`` adds every header, the history, what to do and the value."""
        last, first = self.last_failure, self.first_failure
        document: dict[str, Any] = {
            "ref": self.ref, "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "timestamp": format_time(datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)),
            "original": {"topic": self.original_topic, "partition": self.original_partition,
                         "offset": self.original_offset},
            "key": key_text(self.key), "flow": self.flow, "code": self.code, "message": self.message,
            "attempts": self.attempts, "replay_count": self.replay_count,
            "first_failure": format_time(first) if first else None,
            "last_failure": format_time(last) if last else None,
        }
        if full:
            text, encoding = value_view(self.value)
            document.update({
                "error_class": self._get(h.ERROR_CLASS), "exception": self._get(h.EXCEPTION_FQCN),
                "http_status": h.header_int(self._get(h.HTTP_STATUS)),
                "consumer_group": self._get(h.ORIGINAL_CONSUMER_GROUP),
                "meaning": self.meaning, "what_to_do": self.what_to_do, "operator_hint": self.operator_hint,
                "history": self.history,
                "headers": self.context, "value": text, "value_encoding": encoding,
            })
        return document


# --- reading -------------------------------------------------------------------------------------------------------
async def read_dead_letters(
    kafka: KafkaSettings,
    topics: Sequence[str],
    selection: Selection[DeadLetter] | None = None,
    *,
    limit: int | None = None,
) -> list[DeadLetter]:
    """The dead letters of ``topics`` that match (at most ``limit``; no selection: every one), by topic,
    partition and offset."""
    found: list[DeadLetter] = []
    async with TopicScan(kafka, topics, since=selection.since if selection else None) as scan:
        async for record in scan.records():
            letter = DeadLetter.from_record(record)
            if selection is None or selection.matches(letter):
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
