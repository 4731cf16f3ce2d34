"""The error log: every catalog error and warning, as a JSON record on the error-log topic.

It is what the catalog calls "the Error Logs for the affected transfer": keyed by the transfer (record kind
and id), so a support person finds every entry of one transfer, in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from consumer.catalog import BY_CODE, RECORD_NOT_READABLE, UNEXPECTED_ERROR, CatalogEntry, CatalogError, Flow
from consumer.http.redact import redact
from consumer.observability import metrics
from consumer.runtime.messages import Failure, InboundMessage

log = logging.getLogger("consumer.errorlog")


@dataclass(frozen=True, slots=True)
class TransferRef:
    """The source record a transfer is about."""

    kind: str
    id: str
    event_type: str | None = None

    @property
    def key(self) -> bytes:
        return f"{self.kind}:{self.id}".encode()


def entry_for(failure: Failure) -> CatalogEntry:
    """The catalog entry of a failure; decoding failures and unknown errors have the service's own."""
    if failure.code in BY_CODE:
        return BY_CODE[failure.code]
    if failure.code.startswith("POISON_PILL_"):
        return RECORD_NOT_READABLE
    return UNEXPECTED_ERROR


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
    """One error-log record (a plain dict, JSON-ready)."""
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "transfer": None if transfer is None else {
            "kind": transfer.kind, "id": transfer.id, "event_type": transfer.event_type},
        "flow": flow,
        "code": entry.code,
        "title": entry.title,
        "severity": entry.severity.value,
        "message": redact(message),
        "what_to_do": entry.action,
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
            logging.WARNING if record["severity"] == "warning" else logging.ERROR,
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
        entry = entry_for(failure)
        detail = getattr(exc, "detail", None)
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
            transfer=getattr(exc, "transfer", None), source=message, http_status=failure.http_status,
            error_code=getattr(exc, "error_code", None), dead_lettered=True, attempts=failure.attempts,
            cause=_cause(exc) if isinstance(exc, CatalogError) else None,
        ))


def _cause(error: CatalogError) -> dict[str, Any] | None:
    cause = error.cause
    if cause is None:
        return None
    return {"code": cause.code, "flow": cause.flow.slug, "message": cause.message,
            "detail": redact(cause.detail) if cause.detail else None}
