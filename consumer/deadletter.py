"""Dead letters: the original record byte for byte, with its failure context in headers.

Header names follow Spring for Apache Kafka (``kafka_dlt-*``), which existing tools key on, with values as
UTF-8 strings (as Kafka Connect writes them); the integration's own context is under ``ipaas_klaviyo-*``.
A dead letter goes to the partition its source record came from, so a replay keeps per-key order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from consumer.http.redact import redact
from consumer.observability import metrics
from consumer.runtime.messages import Failure, InboundMessage

ORIGINAL_TOPIC = "kafka_dlt-original-topic"
ORIGINAL_PARTITION = "kafka_dlt-original-partition"
ORIGINAL_OFFSET = "kafka_dlt-original-offset"
ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
ORIGINAL_TIMESTAMP_TYPE = "kafka_dlt-original-timestamp-type"
ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
ERROR_CODE = "ipaas_klaviyo-error-code"
ERROR_CLASS = "ipaas_klaviyo-error-class"
FLOW = "ipaas_klaviyo-flow"
ATTEMPTS = "ipaas_klaviyo-attempts"
FIRST_FAILURE = "ipaas_klaviyo-first-failure"
LAST_FAILURE = "ipaas_klaviyo-last-failure"
HTTP_STATUS = "ipaas_klaviyo-http-status"
HISTORY = "ipaas_klaviyo-failure-history"
REPLAY_COUNT = "ipaas_klaviyo-replay-count"

_CONTEXT_PREFIXES = ("kafka_dlt-", "ipaas_klaviyo-")
_MAX_EXCEPTION_MESSAGE = 2000


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_class(failure: Failure) -> str:
    if failure.infrastructure:
        return "infrastructure"
    return "retryable" if failure.retryable else "fatal"


def dead_letter_headers(message: InboundMessage, failure: Failure, group_id: str) -> list[tuple[str, bytes]]:
    """The original headers (minus an earlier failure's context) plus this failure's context.

    A record that failed before (a replayed dead letter) keeps its history: earlier failures are folded into
    ``ipaas_klaviyo-failure-history`` (a JSON list) and the first failure time is the earliest one.
    """
    previous = {name: value.decode("utf-8", "replace") for name, value in message.headers
                if name.startswith(_CONTEXT_PREFIXES) and value is not None}
    history: list[dict[str, object]] = orjson.loads(previous.get(HISTORY, "[]"))
    if ERROR_CODE in previous:
        history.append({
            "code": previous.get(ERROR_CODE), "flow": previous.get(FLOW),
            "attempts": int(previous.get(ATTEMPTS, "0") or 0),
            "first_failure": previous.get(FIRST_FAILURE), "last_failure": previous.get(LAST_FAILURE),
            "message": previous.get(EXCEPTION_MESSAGE),
        })
    first_failure = min([_iso(failure.first_failure), *(str(h["first_failure"]) for h in history
                                                         if h.get("first_failure"))])
    kept = [(name, value) for name, value in message.headers
            if not name.startswith(_CONTEXT_PREFIXES) or name == REPLAY_COUNT]
    context = {
        ORIGINAL_TOPIC: previous.get(ORIGINAL_TOPIC, message.topic),
        ORIGINAL_PARTITION: previous.get(ORIGINAL_PARTITION, str(message.partition)),
        ORIGINAL_OFFSET: previous.get(ORIGINAL_OFFSET, str(message.offset)),
        ORIGINAL_TIMESTAMP: previous.get(ORIGINAL_TIMESTAMP, str(message.timestamp)),
        ORIGINAL_TIMESTAMP_TYPE: "CREATE_TIME" if message.timestamp_type == 0 else "LOG_APPEND_TIME",
        ORIGINAL_CONSUMER_GROUP: group_id,
        EXCEPTION_FQCN: failure.exception_fqcn,
        EXCEPTION_MESSAGE: redact(failure.message)[:_MAX_EXCEPTION_MESSAGE],
        ERROR_CODE: failure.code,
        ERROR_CLASS: error_class(failure),
        FLOW: failure.flow,
        ATTEMPTS: str(failure.attempts),
        FIRST_FAILURE: first_failure,
        LAST_FAILURE: _iso(failure.last_failure),
    }
    if failure.http_status is not None:
        context[HTTP_STATUS] = str(failure.http_status)
    if history:
        context[HISTORY] = orjson.dumps(history).decode()
    return kept + [(name, value.encode()) for name, value in context.items()]


def decoded_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Headers as a dict of UTF-8 strings (the last value of a repeated name wins)."""
    return {name: (value or b"").decode("utf-8", "replace") for name, value in headers}


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
            headers=dead_letter_headers(message, failure, self._group_id),
        )
        metrics.DEAD_LETTERS.labels(message.topic, failure.flow, failure.code).inc()
