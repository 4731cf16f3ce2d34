"""The failures the service raises, and the facts the runtime decides by.

Every failure a handler, a client or the decoder raises is an ``IntegrationError``; the runtime reads its
typed facts (never attributes patched onto arbitrary exceptions)::

    IntegrationError                     code, flow, transfer, detail, retryable, retry_after,
    │                                    http_status, error_code, destination, outage
    ├── PoisonPill                       consumer.envelopes: the record can never be read; dead-lettered at once
    ├── CatalogError                     consumer.catalog: a failure described by an entry of the error catalog
    │   ├── KlaviyoRejected              consumer.klaviyo.errors: Klaviyo answered, not with success
    │   ├── KlaviyoConnectionError       consumer.klaviyo.errors: Klaviyo unreachable (transport, timeouts)
    │   ├── IpaasRejected                consumer.ipaas.errors
    │   ├── IpaasConnectionError         consumer.ipaas.errors
    │   └── ReauthorizationRequired      consumer.oauth.provider: the refresh token was refused
    └── UnexpectedError                  a bug or an exception nobody described; wraps the original

Who is to blame decides what happens:

- ``outage is None``: the record's own failure. Retried while ``retryable`` and the source's retry policy has
  attempts left, then dead-lettered with its catalog entry.
- ``outage`` set (``DOWN``, ``UNAUTHORIZED``, ``MISCONFIGURED``): the ``destination`` failed, not the record.
  No attempt is spent and nothing is dead-lettered: the sources that need that destination pause until it
  answers a probe again (see ``consumer.destinations``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

UNEXPECTED_ERROR_CODE = "UNEXPECTED_ERROR"


class Outage(StrEnum):
    """Why a destination, rather than a record, failed."""

    DOWN = "down"
    """Unreachable, timing out, or answering 5xx."""
    UNAUTHORIZED = "unauthorized"
    """The credential is refused (expired, revoked, rotated, missing a scope for the whole account)."""
    MISCONFIGURED = "misconfigured"
    """Answers no record can cause: a redirect, an HTML page where JSON:API was expected, a route that
    doesn't exist (a wrong base URL, a proxy or captive portal in the way)."""


class FlowName(Protocol):
    """A flow as failures carry it (``consumer.catalog.Flow``): metrics and headers use its slug."""

    @property
    def slug(self) -> str: ...


class IntegrationError(Exception):
    """A failure with the facts the runtime needs: whose fault, whether to retry, after how long."""

    code: str = UNEXPECTED_ERROR_CODE
    retryable: bool = False
    retry_after: float | None = None
    http_status: int | None = None
    error_code: str | None = None
    """The far side's own error code (Klaviyo's ``errors[0].code``), when it gave one."""
    detail: str | None = None
    """What the far side (or the decoder) said, secret-free; the catalog message carries it in parentheses."""
    destination: str | None = None
    outage: Outage | None = None
    flow: FlowName | None = None
    """The flow that failed; the dispatcher fills it in when the raiser did not."""
    transfer: Any = None
    """The ``TransferRef`` (record kind and id) the failure is about; filled in by the dispatcher."""

    @property
    def message(self) -> str:
        """The user-facing text (a catalog message, with the far side's detail where the entry has one)."""
        return str(self)

    @property
    def what_to_do(self) -> str | None:
        """The catalog's advice for this failure, where it has an entry."""
        return None

    @property
    def infrastructure(self) -> bool:
        """True when the destination, not the record, failed (``outage`` is set)."""
        return self.outage is not None

    @property
    def blames_destination(self) -> bool:
        return self.outage is not None and self.destination is not None


class UnexpectedError(IntegrationError):
    """An exception nobody described (a bug): retryable, then dead-lettered as ``UNEXPECTED_ERROR``."""

    retryable = True

    def __init__(self, original: BaseException) -> None:
        self.original = original
        text = str(original) or type(original).__name__
        super().__init__(text)

    @property
    def exception_fqcn(self) -> str:
        return fqcn(self.original)


def fqcn(exc: BaseException) -> str:
    """``module.QualifiedName`` of an exception's class (the ``kafka_dlt-exception-fqcn`` header)."""
    if isinstance(exc, UnexpectedError):
        exc = exc.original
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


def as_integration_error(exc: BaseException) -> IntegrationError:
    """``exc`` itself when it is typed, else wrapped as ``UnexpectedError``."""
    return exc if isinstance(exc, IntegrationError) else UnexpectedError(exc)


def own_copy(error: BaseException) -> BaseException:
    """A copy of ``error`` for one record of several that one request carried: the dispatcher writes each record's
    transfer onto what it raises, so they must not share one exception object."""
    try:
        clone = type(error).__new__(type(error))
        clone.__dict__.update(error.__dict__)
    except (TypeError, AttributeError):
        return error
    clone.args = error.args
    clone.__cause__ = error.__cause__
    return clone
