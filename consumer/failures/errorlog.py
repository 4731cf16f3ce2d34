"""The error log: every catalog error and warning as a JSON record on the error-log topic, and reading it back.

It is what the catalog calls "the Error Logs for the affected transfer": keyed by the transfer (record kind
and id), so a support person finds every entry of one transfer, in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from consumer.catalog import RECORD_NOT_READABLE, UNEXPECTED_ERROR, CatalogEntry, CatalogError, Flow, entry_for_code
from consumer.failures.scan import Selection, TopicScan
from consumer.http.redact import redact
from consumer.observability import metrics
from consumer.runtime.messages import Failure, InboundMessage
from consumer.settings import KafkaSettings
from consumer.timefmt import format_time, parse_iso
from consumer.transfers import TransferRef

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

log = logging.getLogger("consumer.errorlog")
_LOG_LEVELS = {"warning": logging.WARNING, "info": logging.INFO}


# --- writing -------------------------------------------------------------------------------------------------------
def build_record(
    *,
    entry: CatalogEntry,
    flow: str,
    message: str,
    detail: str | None,
    transfer: TransferRef | None,
    source: InboundMessage | None,
    http_status: int | None = None,
    error_code: str | None = None,
    dead_lettered: bool = False,
    attempts: int | None = None,
    cause: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One error-log record (a plain dict, JSON-ready), with the catalog entry's meaning, what to do, and the
    self-hosted operator's fix where the entry has one."""
    record: dict[str, Any] = {
        "time": format_time(datetime.now(UTC)),
        "transfer": None if transfer is None else {
            "kind": transfer.kind, "id": transfer.id, "event_type": transfer.event_type},
        "flow": flow,
        "code": entry.code,
        "title": entry.title,
        "severity": entry.severity.value,
        "message": redact(message),
        "meaning": entry.meaning,
        "what_to_do": entry.action,
        "operator_hint": entry.operator_hint,
        "detail": redact(detail) if detail else None,
        "http_status": http_status,
        "klaviyo_error_code": error_code,
        "dead_lettered": dead_lettered,
        "attempts": attempts,
        "source": None if source is None else {
            "topic": source.topic, "partition": source.partition, "offset": source.offset},
    }
    if cause:
        record["cause"] = cause
    return record


class ErrorLog:
    """Publishes error-log records and counts them by flow, code and severity."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def write(self, record: dict[str, Any]) -> None:
        transfer = record.get("transfer")
        key = f"{transfer['kind']}:{transfer['id']}".encode() if transfer else None
        await self._producer.send_and_wait(self._topic, value=orjson.dumps(record), key=key)
        metrics.CATALOG_ERRORS.labels(record["flow"], record["code"], record["severity"]).inc()
        log.log(
            _LOG_LEVELS.get(record["severity"], logging.ERROR),
            record["message"],
            extra={"flow": record["flow"], "code": record["code"], "transfer": transfer,
                   "detail": record.get("detail")},
        )

    async def report(self, error: CatalogError, transfer: TransferRef | None,
                     source: InboundMessage | None = None) -> None:
        """Record a catalog error or warning that does not fail the transfer (e.g. a link warning)."""
        await self.write(build_record(
            entry=error.entry, flow=error.flow.slug, message=error.message, detail=error.detail, transfer=transfer,
            source=source, http_status=error.http_status, error_code=error.error_code,
            cause=_cause(error),
        ))

    async def failed(self, message: InboundMessage, failure: Failure) -> None:
        """Record the error that failed a transfer (its record is being dead-lettered)."""
        exc = failure.exception
        entry = entry_for_code(failure.code)
        detail = exc.detail if exc is not None else None
        if entry is UNEXPECTED_ERROR:
            detail = failure.message
        text = failure.message
        if entry is RECORD_NOT_READABLE:
            text = f"{RECORD_NOT_READABLE.message} ({failure.message})"
        elif entry is UNEXPECTED_ERROR:
            text = f"{UNEXPECTED_ERROR.message} ({failure.exception_fqcn})"
        flow = failure.flow if failure.flow != "unknown" else Flow.SERVICE.slug
        await self.write(build_record(
            entry=entry, flow=flow, message=text, detail=detail,
            transfer=exc.transfer if exc is not None else None, source=message, http_status=failure.http_status,
            error_code=exc.error_code if exc is not None else None, dead_lettered=True, attempts=failure.attempts,
            cause=_cause(exc) if isinstance(exc, CatalogError) else None,
        ))


def _cause(error: CatalogError) -> dict[str, Any] | None:
    cause = error.cause
    if cause is None:
        return None
    return {"code": cause.code, "flow": cause.flow.slug, "message": cause.message,
            "detail": redact(cause.detail) if cause.detail else None}


# --- reading -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoggedError:
    """One error-log record as read back, with where it sits on the topic."""

    partition: int
    offset: int
    key: str | None
    record: dict[str, Any]

    @property
    def time(self) -> datetime | None:
        return parse_iso(str(self.record.get("time")))

    @property
    def transfer(self) -> str | None:
        """``<kind>:<id>`` of the transfer (its key)."""
        transfer = self.record.get("transfer")
        return f"{transfer.get('kind')}:{transfer.get('id')}" if isinstance(transfer, dict) else self.key

    def to_dict(self) -> dict[str, Any]:
        return {**self.record, "partition": self.partition, "offset": self.offset}


async def read_error_log(
    kafka: KafkaSettings, topic: str, selection: Selection[LoggedError] | None = None, *, limit: int | None = None,
) -> list[LoggedError]:
    """The error-log records that match (no selection: every one), read group-less to the end offsets captured
    at the start (in offset order per partition, so one transfer's records are in order)."""
    found: list[LoggedError] = []
    async with TopicScan(kafka, [topic], since=selection.since if selection else None) as scan:
        async for message in scan.records():
            try:
                record = orjson.loads(message.value or b"")
            except orjson.JSONDecodeError:
                log.warning("unreadable error-log record", extra={"partition": message.partition,
                                                                   "offset": message.offset})
                continue
            if not isinstance(record, dict):
                continue
            key = message.key.decode("utf-8", "replace") if message.key is not None else None
            entry = LoggedError(message.partition, message.offset, key, record)
            if selection is None or selection.matches(entry):
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    break
    found.sort(key=lambda e: (str(e.record.get("time", "")), e.partition, e.offset))
    return found
