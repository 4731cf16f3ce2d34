"""The failure context a dead letter carries in its headers: the names, encoding it, decoding it.

Header names follow Spring for Apache Kafka (``kafka_dlt-*``), which existing tools key on, with values as
UTF-8 strings (as Kafka Connect writes them); the integration's own context is under ``ipaas_klaviyo-*``.
A dead letter keeps the original record's own headers; a record replayed from a dead letter keeps the part of
the failure context that ``dead_letter_headers`` folds into the failure history should it fail again.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from consumer.http.redact import redact
from consumer.runtime.messages import Failure, InboundMessage
from consumer.timefmt import format_time

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

CONTEXT_PREFIXES = ("kafka_dlt-", "ipaas_klaviyo-", "retry_topic-")
"""Headers of these prefixes are failure context, not the original record's (``retry_topic-*``: a retry topic's,
``consumer.failures.retrytopics``)."""

CARRIED_ON_REPLAY = frozenset({
    ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET, ORIGINAL_TIMESTAMP,
    ERROR_CODE, FLOW, ATTEMPTS, FIRST_FAILURE, LAST_FAILURE, EXCEPTION_MESSAGE, HISTORY,
})
"""The failure context a replayed record keeps: what ``dead_letter_headers`` reads to fold the earlier failure
into the history (and to keep the first source position) should the replayed record fail again."""

_MAX_EXCEPTION_MESSAGE = 2000


# --- encoding ------------------------------------------------------------------------------------------------------
def error_class(failure: Failure) -> str:
    """``infrastructure``, ``retryable`` or ``fatal`` (the ``ipaas_klaviyo-error-class`` header)."""
    if failure.infrastructure:
        return "infrastructure"
    return "retryable" if failure.retryable else "fatal"


def dead_letter_headers(message: InboundMessage, failure: Failure, group_id: str) -> list[tuple[str, bytes]]:
    """The original headers (minus an earlier failure's context) plus this failure's context.

    A record that failed before (a replayed dead letter) keeps its history: earlier failures are folded into
    ``ipaas_klaviyo-failure-history`` (a JSON list) and the first failure time is the earliest one.
    """
    previous = {name: value.decode("utf-8", "replace") for name, value in message.headers
                if name.startswith(CONTEXT_PREFIXES) and value is not None}
    history: list[dict[str, object]] = orjson.loads(previous.get(HISTORY, "[]"))
    if ERROR_CODE in previous:
        history.append({
            "code": previous.get(ERROR_CODE), "flow": previous.get(FLOW),
            "attempts": int(previous.get(ATTEMPTS, "0") or 0),
            "first_failure": previous.get(FIRST_FAILURE), "last_failure": previous.get(LAST_FAILURE),
            "message": previous.get(EXCEPTION_MESSAGE),
        })
    first_failure = min([format_time(failure.first_failure), *(str(h["first_failure"]) for h in history
                                                                if h.get("first_failure"))])
    kept = [(name, value) for name, value in message.headers
            if not name.startswith(CONTEXT_PREFIXES) or name == REPLAY_COUNT]
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
        LAST_FAILURE: format_time(failure.last_failure),
    }
    if failure.http_status is not None:
        context[HTTP_STATUS] = str(failure.http_status)
    if history:
        context[HISTORY] = orjson.dumps(history).decode()
    return kept + [(name, value.encode()) for name, value in context.items()]


def replay_headers(headers: Sequence[tuple[str, bytes]], replay_count: int) -> list[tuple[str, bytes]]:
    """The headers a record replayed from a dead letter carries: the original ones, the failure context
    ``CARRIED_ON_REPLAY``, and the replay count (``replay_count``, the dead letter's, plus one)."""
    kept = [(name, value) for name, value in headers
            if not name.startswith(CONTEXT_PREFIXES) or name in CARRIED_ON_REPLAY]
    return [*kept, (REPLAY_COUNT, str(replay_count + 1).encode())]


# --- decoding ------------------------------------------------------------------------------------------------------
def decoded_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Headers as a dict of UTF-8 strings (the last value of a repeated name wins)."""
    return {name: (value or b"").decode("utf-8", "replace") for name, value in headers}


def header_int(text: str | None) -> int | None:
    """A decoded header's integer value; None when missing or not an integer."""
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None
