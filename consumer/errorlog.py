"""The error log: every catalog error and warning, as a JSON record on the error-log topic.

It is what the catalog calls "the Error Logs for the affected transfer": keyed by the transfer (record kind
and id), so a support person finds every entry of one transfer, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from consumer.catalog import RECORD_NOT_READABLE, UNEXPECTED_ERROR, CatalogEntry, CatalogError, Flow, entry_for_code
from consumer.http.redact import redact
from consumer.observability import metrics
from consumer.runtime.messages import Failure, InboundMessage
from consumer.settings import KafkaSettings
from consumer.transfers import TransferRef

log = logging.getLogger("consumer.errorlog")


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
        entry = entry_for_code(failure.code)
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


# --- reading the error log ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoggedError:
    """One error-log record as read back, with where it sits on the topic."""

    partition: int
    offset: int
    key: str | None
    record: dict[str, Any]

    @property
    def time(self) -> datetime | None:
        try:
            moment = datetime.fromisoformat(str(self.record.get("time")))
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment

    @property
    def transfer(self) -> str | None:
        """``<kind>:<id>`` of the transfer (its key)."""
        transfer = self.record.get("transfer")
        return f"{transfer.get('kind')}:{transfer.get('id')}" if isinstance(transfer, dict) else self.key

    def to_dict(self) -> dict[str, Any]:
        return {**self.record, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True)
class ErrorLogFilter:
    """Which error-log records: any of the flows (slug or catalog name), codes, severities and records (``kind:id``
    or a bare id), logged within [since, until]. An empty criterion matches everything."""

    flows: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    records: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def build(cls, *, flows: Iterable[str] = (), codes: Iterable[str] = (), severities: Iterable[str] = (),
              records: Iterable[str] = (), since: datetime | str | None = None, until: datetime | str | None = None,
              now: datetime | None = None) -> ErrorLogFilter:
        """From command-line values (times may be ISO or relative, like ``2h``)."""
        from consumer.dlq import parse_time

        now = now or datetime.now(UTC)
        return cls(
            flows=frozenset(Flow.slug_of(f) for f in flows), codes=frozenset(c.strip().upper() for c in codes),
            severities=frozenset(s.strip().lower() for s in severities), records=frozenset(records),
            since=parse_time(since, now) if isinstance(since, str) else since,
            until=parse_time(until, now) if isinstance(until, str) else until,
        )

    def matches(self, entry: LoggedError) -> bool:
        record = entry.record
        if self.flows and str(record.get("flow", "")).lower() not in self.flows:
            return False
        if self.codes and str(record.get("code", "")).upper() not in self.codes:
            return False
        if self.severities and str(record.get("severity", "")).lower() not in self.severities:
            return False
        if self.records:
            transfer = record.get("transfer")
            transfer = transfer if isinstance(transfer, dict) else {}
            if not any(wanted == entry.transfer or wanted == entry.key or wanted == str(transfer.get("id"))
                       for wanted in self.records):
                return False
        if self.since is not None or self.until is not None:
            moment = entry.time
            if moment is None or (self.since is not None and moment < self.since) or (
                    self.until is not None and moment > self.until):
                return False
        return True


async def read_error_log(
    kafka: KafkaSettings, topic: str, selection: ErrorLogFilter | None = None, *, limit: int | None = None,
) -> list[LoggedError]:
    """The error-log records that match, read group-less to the end offsets captured at the start (in offset
    order per partition, so one transfer's records are in order)."""
    from consumer.dlq import TopicScan

    selection = selection or ErrorLogFilter()
    found: list[LoggedError] = []
    async with TopicScan(kafka, [topic], since=selection.since) as scan:
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
            if selection.matches(entry):
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    break
    found.sort(key=lambda e: (str(e.record.get("time", "")), e.partition, e.offset))
    return found


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_error_table(entries: Sequence[LoggedError]) -> str:
    """One line per error-log record."""
    header = ("TIME", "SEVERITY", "FLOW", "CODE", "TRANSFER", "SOURCE", "MESSAGE")
    rows = [header]
    for entry in entries:
        record = entry.record
        source = record.get("source")
        rows.append((
            str(record.get("time", "")), str(record.get("severity", "")), str(record.get("flow", "")),
            str(record.get("code", "")), _clip(entry.transfer, 40),
            f"{source['topic']}:{source['partition']}:{source['offset']}" if isinstance(source, dict) else "-",
            _clip(record.get("message"), 100),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]).rstrip()
                     for row in rows)


def format_error(entry: LoggedError) -> str:
    """One error-log record in full (what to do, detail, cause)."""
    record = entry.record
    lines = [f"{record.get('time')}  {str(record.get('severity', '')).upper()}  {record.get('code')} "
             f"({record.get('title')})",
             f"  flow         {record.get('flow')}",
             f"  transfer     {entry.transfer}"]
    source = record.get("source")
    if isinstance(source, dict):
        lines.append(f"  source       {source['topic']} partition {source['partition']} offset {source['offset']}"
                     + ("  (dead-lettered)" if record.get("dead_lettered") else ""))
    lines.append(f"  message      {record.get('message')}")
    for label, name in (("detail", "detail"), ("HTTP status", "http_status"), ("Klaviyo code", "klaviyo_error_code"),
                        ("attempts", "attempts")):
        if record.get(name) not in (None, ""):
            lines.append(f"  {label:<12} {record[name]}")
    cause = record.get("cause")
    if isinstance(cause, dict):
        lines.append(f"  caused by    {cause.get('code')}: {cause.get('message')}")
    lines.append(f"  what to do   {record.get('what_to_do')}")
    return "\n".join(lines)
