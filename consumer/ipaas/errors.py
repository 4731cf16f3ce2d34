"""iPaaS.com failures as error-catalog exceptions.

A response iPaaS.com did not answer with success becomes ``IpaasRejected``; a transport failure becomes
``IpaasConnectionError``. Both say whether retrying may help and whether the failure means the far side is down
for every record (``outage``: 5xx, 401/403, unreachable), like the Klaviyo client's errors.

The seed error catalog describes Klaviyo's answers only. The catalog entries used here are
``consumer.catalog.IPAAS_REJECTED_REQUEST`` / ``IPAAS_CONNECTION_ERROR`` when the catalog defines them, and the
service's own ``UNEXPECTED_ERROR`` (with the iPaaS.com detail appended) until it does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from consumer import catalog
from consumer.catalog import CatalogEntry, CatalogError
from consumer.errors import Outage
from consumer.http.content import json_object, reason_phrase, summarize_non_json
from consumer.http.redact import Redactor

DESTINATION = "ipaas"
"""The name iPaaS.com goes by in routes, destination health and metrics."""
REJECTED_ENTRY: CatalogEntry = catalog.IPAAS_REJECTED_REQUEST
CONNECTION_ENTRY: CatalogEntry = catalog.IPAAS_CONNECTION_ERROR


def ipaas_redactor(secrets: Callable[[], Iterable[str]] | None = None) -> Redactor:
    """A redactor for the API token (and any bearer/authorization shaped text)."""
    return Redactor(secrets)


class IpaasRejected(CatalogError):
    """iPaaS.com answered, and not with success (or with a body that is not the JSON it promised)."""

    def __init__(
        self,
        detail: str,
        *,
        http_status: int,
        retryable: bool = False,
        outage: Outage | None = None,
        retry_after: float | None = None,
        operation: str | None = None,
        errors: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            REJECTED_ENTRY,
            f"iPaaS.com {detail}",
            retryable=retryable,
            destination=DESTINATION,
            outage=outage,
            http_status=http_status,
            retry_after=retry_after,
        )
        self.operation = operation
        self.errors = dict(errors) if errors else None


def answered_without(
    status: int, method: str, route: str, what: str, problem: str | None = None, *, operation: str | None = None
) -> IpaasRejected:
    """A success status whose body lacks ``what`` the operation returns ("the customer"): iPaaS.com's answer, so the
    record's failure (no outage), and retryable (the flows re-resolve what a write made before writing again).
    ``route`` is the path template: no ids or values."""
    detail = f"answered {status} to {method} {route} without {what} it should return"
    return IpaasRejected(f"{detail} ({problem})" if problem else detail, http_status=status, retryable=True,
                         operation=operation)


class IpaasConnectionError(CatalogError):
    """iPaaS.com could not be reached, or the exchange broke off (timeouts, resets, refused connections)."""

    def __init__(
        self, detail: str, *, retryable: bool = True, outage: Outage | None = Outage.DOWN, operation: str | None = None
    ) -> None:
        super().__init__(
            CONNECTION_ENTRY, f"iPaaS.com unreachable: {detail}", retryable=retryable, destination=DESTINATION,
            outage=outage,
        )
        self.operation = operation


def _field_errors(problem: Mapping[str, Any]) -> dict[str, Any]:
    errors = problem.get("errors")
    if isinstance(errors, dict):
        return dict(errors)
    if isinstance(errors, list):
        return {str(i): item for i, item in enumerate(errors)}
    return {}


def describe_response(status: int, headers: Mapping[str, str], content: bytes) -> tuple[str, dict[str, Any]]:
    """The detail text of a rejected request (``"400 Bad Request: One or more validation errors occurred.
    (FirstName: The field FirstName must be ...)"``) and the field errors, if the body had any."""
    problem = json_object(content, headers.get("content-type"))  # ProblemDetails, or {"message": ...}
    if problem is None:
        return f"{status} {reason_phrase(status)}: {summarize_non_json(content, headers.get('content-type'))}", {}
    title = problem.get("title") or problem.get("message") or problem.get("error") or reason_phrase(status)
    detail = problem.get("detail")
    text = f"{status} {reason_phrase(status)}: {title}"
    if detail and detail != title:
        text += f" - {detail}"
    errors = _field_errors(problem)
    if errors:
        parts = []
        for name, messages in list(errors.items())[:5]:
            first = messages[0] if isinstance(messages, list) and messages else messages
            parts.append(f"{name}: {str(first)[:200]}")
        more = f"; +{len(errors) - 5} more" if len(errors) > 5 else ""
        text += f" ({'; '.join(parts)}{more})"
    return text, errors


def rejected_from_response(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    redactor: Redactor,
    retryable: bool = False,
    outage: Outage | None = None,
    retry_after: float | None = None,
    operation: str | None = None,
) -> IpaasRejected:
    """The catalog error for a response iPaaS.com did not answer with success."""
    text, errors = describe_response(status, headers, content)
    return IpaasRejected(
        redactor.scrub(text),
        http_status=status,
        retryable=retryable,
        outage=outage,
        retry_after=retry_after,
        operation=operation,
        errors=errors,
    )
