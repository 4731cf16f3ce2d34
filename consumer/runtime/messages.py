"""What the runtime hands to a processor, and what it learns from a failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from consumer.errors import IntegrationError, Outage, as_integration_error, fqcn

UNKNOWN_FLOW = "unknown"
UNEXPECTED_ERROR = "UNEXPECTED_ERROR"
_MAX_MESSAGE_CHARS = 2000


class InboundMessage(Protocol):
    """One Kafka record as the runtime hands it on, undecoded: the runtime never interprets key or value.

    aiokafka's ``ConsumerRecord`` is one (the runtime passes fetched records on as they are: no copy per record);
    ``Message`` is one built elsewhere (a replay, a test).
    """

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def timestamp_type(self) -> int: ...


@dataclass(slots=True)
class Message:
    """An ``InboundMessage`` made by the service itself (``timestamp`` in ms since the epoch, as Kafka's)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int
    timestamp_type: int = 0


@dataclass(frozen=True, slots=True)
class Handled:
    """A processor's successful outcome: the flow that took the record, and whether it did anything."""

    flow: str = UNKNOWN_FLOW
    outcome: str = "succeeded"  # or "skipped"
    transfer: Any = None
    """What the record was about (the error log's transfer), when the processor knows."""


class Processor(Protocol):
    """Handles one record; raises on failure. The runtime owns ordering, retries and dead letters."""

    def __call__(self, message: InboundMessage) -> Awaitable[Handled]: ...


@dataclass(slots=True)
class Failure:
    """A failed attempt as the runtime sees it, read from the typed error by ``classify``."""

    code: str
    message: str
    exception_fqcn: str
    flow: str = UNKNOWN_FLOW
    retryable: bool = False
    outage: Outage | None = None
    retry_after: float | None = None
    http_status: int | None = None
    what_to_do: str | None = None
    attempts: int = 1
    first_failure: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_failure: datetime = field(default_factory=lambda: datetime.now(UTC))
    error: IntegrationError | None = None
    """The typed error (None for a failure rebuilt from a dead letter's headers)."""

    @property
    def exception(self) -> IntegrationError | None:
        return self.error

    @property
    def infrastructure(self) -> bool:
        return self.outage is not None


def classify(exc: BaseException) -> Failure:
    """The failure facts of an exception: typed on ``IntegrationError``; anything else is an unexpected error.

    An unexpected error (a bug in a handler) is retryable, so a transient fault gets a second chance, and is
    dead-lettered after the policy's attempts like any other.
    """
    error = as_integration_error(exc)
    flow = error.flow
    return Failure(
        code=error.code or UNEXPECTED_ERROR,
        message=(error.message or type(error).__name__)[:_MAX_MESSAGE_CHARS],
        exception_fqcn=fqcn(error),
        error=error,
        flow=flow.slug if flow is not None else UNKNOWN_FLOW,
        retryable=error.retryable,
        outage=error.outage,
        retry_after=error.retry_after,
        http_status=error.http_status,
        what_to_do=error.what_to_do,
    )


FailureSink = Callable[[InboundMessage, Failure], Awaitable[str | None]]
"""Called once a record has failed for good; returns when the dead letter is acknowledged by the broker, with the
record's outcome when it is not ``dead_lettered`` (e.g. handed on to a retry topic)."""
