"""The iPaaS.com REST client: typed operations over httpx with rate limiting, retries and catalog errors.

Same layers as the Klaviyo client: the shared ``consumer.http.sender.Sender`` (client-side limiter, per-phase
timeouts inside a total deadline, ``RateLimit-*`` and ``Retry-After``, retries of 429, 5xx and transport failures
with capped, jittered backoff up to ``settings.max_retries`` times), the token as an ``httpx.Auth`` flow, and
``IpaasDialect`` wording the failures. A 2xx answer that is not JSON (a proxy's page) and a 401/403 blame
iPaaS.com (``outage``), never the record. A 2xx answer that is empty or JSON but lacks what the operation returns
("iPaaS.com answered 201 to POST /customers/v2/Customer without the customer it should return") is iPaaS.com's own
answer: the record's failure, retryable. Secrets (the API token) never appear in errors, logs or reprs.

Non-idempotent operations (creating a Customer or a Customer Address) are retried only where the request cannot
have been applied: a 429, or a failure to connect. After a 5xx, a timeout or a garbled success the client raises a
retryable error instead, and the flow's next attempt re-resolves the link (the new record is found by its external
id or email, its address by its content), so a retry never creates a duplicate.

Endpoints (iPaaS.com's API help articles and the ``IPaaSApiCallWrapper`` of its public integration template; the
Customer Address paths are in neither and follow the Customer ones)::

    GET  customers/v2/Customer/{id}                  GET  customers/v2/Customers?action=equals&EmailAddress=...
    POST customers/v2/Customer                       PUT  customers/v2/Customer/{id}
    GET  customers/v2/Customer/{id}/Addresses        POST customers/v2/Customer/{id}/Address
    PUT  customers/v2/Customer/{id}/Address/{aid}    GET  transactions/v2/Transaction/{id}
    POST {api}/v2/External/LookupSpecial             GET  {api}/v2/External/LookupExternal/{id}/{system}/{table}
    POST {api}/v2/External/UpdateExternalId
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, SecretStr, ValidationError

from consumer.errors import Outage
from consumer.http.backoff import Backoff
from consumer.http.content import is_json_content_type, unreadable_parts
from consumer.http.lanes import LaneTransport
from consumer.http.ratelimit import LimiterRegistry, Sleep, SlidingWindowLimiter, Window
from consumer.http.redact import Redactor
from consumer.http.sender import Call, RequestMetrics, RetryRules, Sender
from consumer.http.transport import build_timeout
from consumer.ipaas.errors import (
    DESTINATION,
    IpaasConnectionError,
    IpaasRejected,
    answered_without,
    ipaas_redactor,
    rejected_from_response,
)
from consumer.ipaas.models import (
    ADDRESS_WRITABLE,
    CUSTOMER_TABLE,
    CUSTOMER_WRITABLE,
    DELETED_PREFIX,
    AddressWrite,
    CustomerWrite,
    ExternalIdLookup,
    ExternalIdUpdate,
    api_of_table,
)
from consumer.observability.metrics import IPAAS_REQUEST_SECONDS, IPAAS_REQUESTS
from consumer.records import Customer, CustomerAddress, Transaction
from consumer.settings import IpaasSettings

logger = logging.getLogger("consumer.ipaas")

R = TypeVar("R", bound=BaseModel)

JSON = "application/json"
USER_AGENT = "ipaas-klaviyo/0.1"
DEFAULT_BACKOFF = Backoff(base_s=0.5, cap_s=30.0)
RETRY_AFTER_CAP_S = 60.0
LIMITER_MARGIN_S = 0.05
DEFAULT_SYSTEM_ID = 1
"""The Klaviyo subscription's iPaaS.com system id when neither the caller nor the settings give one."""

@dataclass(frozen=True, slots=True)
class Operation:
    """One iPaaS.com operation: its method, path template and whether sending it twice is harmless."""

    name: str
    method: str
    path: str
    idempotent: bool = True


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("get_customer", "GET", "/customers/v2/Customer/{id}"),
        Operation("find_customers", "GET", "/customers/v2/Customers"),
        Operation("create_customer", "POST", "/customers/v2/Customer", idempotent=False),
        Operation("update_customer", "PUT", "/customers/v2/Customer/{id}"),
        Operation("list_customer_addresses", "GET", "/customers/v2/Customer/{id}/Addresses"),
        Operation("create_customer_address", "POST", "/customers/v2/Customer/{id}/Address", idempotent=False),
        Operation("update_customer_address", "PUT", "/customers/v2/Customer/{id}/Address/{address_id}"),
        Operation("get_transaction", "GET", "/transactions/v2/Transaction/{id}"),
        Operation("lookup_special", "POST", "/{api}/v2/External/LookupSpecial"),
        Operation("lookup_external", "GET", "/{api}/v2/External/LookupExternal/{id}/{system_id}/{table}"),
        Operation("update_external_id", "POST", "/{api}/v2/External/UpdateExternalId"),
    )
}


def _segment(value: object) -> str:
    return quote(str(value), safe="")


def _writable(record: Customer | CustomerAddress, names: Iterable[str]) -> dict[str, Any]:
    dumped = record.model_dump(mode="json")
    return {name: dumped[name] for name in names if name in dumped}


class IpaasClient:
    """Async iPaaS.com API client; use as ``async with IpaasClient(settings) as client``.

    ``token`` overrides ``settings.api_token``; ``system_id`` is the Klaviyo subscription's system id that external
    ids are stored under. ``rate_limit`` sets client-side windows (iPaaS.com publishes none: by default the client
    only follows ``RateLimit-*`` headers and ``Retry-After``); ``limiters`` lets several clients share them.
    ``sleep`` waits out the backoff between retries (tests record the delays instead).
    """

    def __init__(
        self,
        settings: IpaasSettings,
        *,
        token: SecretStr | str | None = None,
        system_id: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rate_limit: Sequence[Window] = (),
        limiters: LimiterRegistry | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        retry_after_cap_s: float = RETRY_AFTER_CAP_S,
        rng: random.Random | None = None,
        tracking_guid: str | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        secret = token if token is not None else settings.api_token
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not value:
            raise ValueError("ipaas.api_token is not configured")
        self._settings = settings
        self._token = SecretStr(value)
        self._account = f"ipaas-{hashlib.sha256(value.encode()).hexdigest()[:12]}"
        configured = getattr(settings, "system_id", None)
        self.system_id = int(system_id if system_id is not None else configured or DEFAULT_SYSTEM_ID)
        self._tracking_guid = tracking_guid
        self._windows = tuple(rate_limit)
        self._limiters = limiters if limiters is not None else LimiterRegistry(margin_s=LIMITER_MARGIN_S)
        self._redactor = ipaas_redactor(lambda: (self._token.get_secret_value(),))
        self._http = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            timeout=build_timeout(settings.connect_timeout_s, settings.read_timeout_s),
            # httpcore's own pool re-scans every connection on each request: lanes stay cheap at 50 in flight
            transport=transport if transport is not None else LaneTransport(settings.max_connections),
            auth=_BearerToken(self._token),
            follow_redirects=False,
            headers={"accept": JSON, "user-agent": USER_AGENT},
        )
        self._sender = Sender(
            self._http,
            IpaasDialect(self._redactor),
            rules=RetryRules(max_retries=settings.max_retries, total_timeout_s=settings.total_timeout_s,
                             backoff=backoff, retry_after_cap_s=retry_after_cap_s),
            metrics=RequestMetrics(requests=IPAAS_REQUESTS, seconds=IPAAS_REQUEST_SECONDS),
            scrub=self._redactor.scrub,
            logger=logger,
            rng=rng,
            sleep=sleep,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"IpaasClient(base_url={self._settings.base_url!r}, system_id={self.system_id}, token='**********')"

    async def probe(self) -> None:
        """One cheap read (a search no Customer matches), asked once: returns when iPaaS.com answers as it should."""
        params = {"action": "equals", "EmailAddress": "probe@ipaas-klaviyo.invalid"}
        await self._call("find_customers", {}, params=params, allow_404=True, retries=0)

    # --- customers -----------------------------------------------------------------------------------------------
    async def get_customer(self, customer_id: str) -> Customer | None:
        """The Customer with this id, or None when iPaaS.com has none."""
        customer: Customer | None = await self._call("get_customer", {"id": customer_id}, allow_404=True,
                                                     read=_one(Customer), returns="the customer")
        return customer

    async def find_customers_by_email(self, email: str, *, exact: bool = True) -> list[Customer]:
        """Customers whose email equals ``email`` (``action=equals``, as iPaaS.com compares: exactly).

        ``exact=False`` asks for ``action=contains``, which iPaaS.com answers case-insensitively; the flows use it
        to find Customers whose email differs only in case or formatting.
        """
        params = {"action": "equals" if exact else "contains", "EmailAddress": email}
        customers: list[Customer] | None = await self._call(
            "find_customers", {}, params=params, allow_404=True, read=_many(Customer), returns="the list of customers")
        return customers or []

    async def create_customer(self, fields: Mapping[str, Any] | CustomerWrite) -> Customer:
        """Create a Customer from its writable fields; returns it with its new id."""
        body = fields if isinstance(fields, CustomerWrite) else CustomerWrite.model_validate(dict(fields))
        customer: Customer = await self._call("create_customer", {}, body=body.to_json(), read=_one(Customer),
                                              returns="the customer")
        return customer

    async def update_customer(
        self, customer_id: str, changes: Mapping[str, Any] | CustomerWrite, *, current: Customer | None = None
    ) -> Customer:
        """Write ``changes`` to a Customer. The whole writable record is sent (``current`` overlaid with the
        changes), so the call is right whether iPaaS.com replaces or merges on PUT."""
        change = changes if isinstance(changes, CustomerWrite) else CustomerWrite.model_validate(dict(changes))
        if current is None:
            current = await self.get_customer(customer_id)
        merged = _writable(current, CUSTOMER_WRITABLE) if current is not None else {}
        merged.update(change.to_dict())
        body = CustomerWrite.model_validate(merged)
        updated: Customer = await self._call("update_customer", {"id": customer_id}, body=body.to_json(),
                                             read=_one(Customer), returns="the customer")
        return updated

    # --- customer addresses --------------------------------------------------------------------------------------
    async def list_customer_addresses(self, customer_id: str) -> list[CustomerAddress]:
        """Every Customer Address of a Customer (empty when the Customer has none)."""
        addresses: list[CustomerAddress] | None = await self._call(
            "list_customer_addresses", {"id": customer_id}, allow_404=True, read=_many(CustomerAddress),
            returns="the list of addresses")
        return addresses or []

    async def create_customer_address(
        self, customer_id: str, fields: Mapping[str, Any] | AddressWrite
    ) -> CustomerAddress:
        """Create a Customer Address under a Customer."""
        body = fields if isinstance(fields, AddressWrite) else AddressWrite.model_validate(dict(fields))
        address: CustomerAddress = await self._call("create_customer_address", {"id": customer_id},
                                                    body=body.to_json(), read=_one(CustomerAddress),
                                                    returns="the address")
        return address

    async def update_customer_address(
        self,
        customer_id: str,
        address_id: str,
        changes: Mapping[str, Any] | AddressWrite,
        *,
        current: CustomerAddress | None = None,
    ) -> CustomerAddress:
        """Write ``changes`` to a Customer Address (the whole writable record, like ``update_customer``)."""
        change = changes if isinstance(changes, AddressWrite) else AddressWrite.model_validate(dict(changes))
        merged = _writable(current, ADDRESS_WRITABLE) if current is not None else {}
        merged.update(change.to_dict())
        body = AddressWrite.model_validate(merged)
        address: CustomerAddress = await self._call(
            "update_customer_address", {"id": customer_id, "address_id": address_id}, body=body.to_json(),
            read=_one(CustomerAddress), returns="the address")
        return address

    # --- transactions --------------------------------------------------------------------------------------------
    async def get_transaction(self, transaction_id: str) -> Transaction | None:
        """The Transaction (with its lines and addresses) with this id, or None."""
        transaction: Transaction | None = await self._call("get_transaction", {"id": transaction_id}, allow_404=True,
                                                           read=_one(Transaction), returns="the transaction")
        return transaction

    async def fetch_record(self, kind: str, record_id: str) -> Customer | Transaction:
        """Notify-then-fetch: the record a hook notification names (a Customer comes with its addresses).

        A record iPaaS.com does not have raises ``IpaasRejected`` (404, not retryable).
        """
        if kind == "customer":
            customer = await self.get_customer(record_id)
            if customer is None:
                raise IpaasRejected("404 Not Found: no Customer with this id", http_status=404,
                                    operation="get_customer")
            addresses = await self.list_customer_addresses(record_id)
            return customer.model_copy(update={"addresses": addresses}) if addresses else customer
        if kind == "transaction":
            transaction = await self.get_transaction(record_id)
            if transaction is None:
                raise IpaasRejected("404 Not Found: no Transaction with this id", http_status=404,
                                    operation="get_transaction")
            return transaction
        raise ValueError(f"iPaaS.com holds no {kind!r} records")

    # --- external ids --------------------------------------------------------------------------------------------
    async def lookup_internal_id(
        self, external_id: str, *, table: str = CUSTOMER_TABLE, allow_deleted: bool = False
    ) -> str | None:
        """The iPaaS.com id linked to ``external_id`` (``LookupSpecial``), or None when there is no live link."""
        body = ExternalIdLookup(table_name=table, system_id=self.system_id, external_id=external_id,
                                tracking_guid=self._tracking_guid)
        value = await self._call("lookup_special", {"api": api_of_table(table)}, body=body.to_json(),
                                 allow_404=True, scalar=True)
        return self._link(value, allow_deleted)

    async def lookup_external_id(
        self, internal_id: str, *, table: str = CUSTOMER_TABLE, allow_deleted: bool = False
    ) -> str | None:
        """The external id (here: the Klaviyo id) linked to an iPaaS.com record (``LookupExternal``), or None."""
        value = await self._call(
            "lookup_external",
            {"api": api_of_table(table), "id": internal_id, "system_id": self.system_id, "table": table},
            allow_404=True,
            scalar=True,
        )
        return self._link(value, allow_deleted)

    async def update_external_id(self, internal_id: str, external_id: str, *, table: str = CUSTOMER_TABLE) -> None:
        """Link an iPaaS.com record to its external id (``UpdateExternalId``; writing the same link again is a
        no-op at iPaaS.com)."""
        body = ExternalIdUpdate(table_name=table, system_id=self.system_id, external_id=external_id,
                                internal_id=internal_id, tracking_guid=self._tracking_guid)
        await self._call("update_external_id", {"api": api_of_table(table)}, body=body.to_json(), expect="any")

    @staticmethod
    def _link(value: Any, allow_deleted: bool) -> str | None:
        if value is None:
            return None
        text = str(value).strip()
        if not text:
            return None
        if text.startswith(DELETED_PREFIX):
            return text[len(DELETED_PREFIX):] if allow_deleted else None
        return text

    # --- plumbing ------------------------------------------------------------------------------------------------
    def _limiter(self) -> SlidingWindowLimiter:
        return self._limiters.get((self._account, "ipaas"), self._windows)

    @staticmethod
    def _without(response: httpx.Response, op: Operation, what: str, problem: str | None = None) -> IpaasRejected:
        error = answered_without(response.status_code, op.method, op.path, what, problem, operation=op.name)
        logger.info("iPaaS.com answered without what the operation returns",
                    extra={"endpoint": op.name, "status": response.status_code, "detail": error.detail})
        return error

    def _path(self, op: Operation, values: Mapping[str, Any]) -> str:
        return op.path.format(**{name: _segment(value) for name, value in values.items()})

    def _decode(self, response: httpx.Response, *, scalar: bool) -> tuple[bool, Any]:
        """(True, value) for a JSON body (or, for scalar lookups, a plain-text value); (False, None) otherwise."""
        content = response.content
        if not content.strip():
            return True, None
        content_type = response.headers.get("content-type")
        try:
            return True, orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
        if (
            scalar
            and not is_json_content_type(content_type)
            and (content_type or "").lower().startswith("text/plain")
            and b"<" not in content[:64]
        ):  # the template also accepts a lookup answered as bare text
            return True, content.decode("utf-8", "replace").strip().strip('"')
        return False, None

    async def _call(
        self,
        name: str,
        path_values: Mapping[str, Any],
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        allow_404: bool = False,
        scalar: bool = False,
        expect: Literal["json", "any"] = "json",
        retries: int | None = None,
        read: Callable[[Any], Any] | None = None,
        returns: str = "the body it documents",
    ) -> Any:
        """Send one operation through the shared sender; returns the decoded JSON body (None for an empty body,
        or for a 404 when ``allow_404``), or what ``read`` makes of it: then an empty body, or one ``read`` refuses,
        is an answer without what the operation ``returns``."""
        op = OPERATIONS[name]
        if self._tracking_guid:
            params = {**(params or {}), "trackingGuid": self._tracking_guid}

        def accepts(response: httpx.Response) -> bool:
            if response.status_code == 404:
                return True
            ok, _ = self._decode(response, scalar=scalar or expect == "any")
            return ok

        response = await self._sender.send(Call(
            operation=name,
            method=op.method,
            path=self._path(op, path_values),
            route=op.path,
            success=_SUCCESS | {404} if allow_404 else _SUCCESS,
            accepts=accepts,
            params=params,
            body=body,
            headers={"content-type": JSON} if body is not None else {},
            idempotent=op.idempotent,
            limiters=(("ipaas", self._limiter()),),
        ), retries=retries)
        if response.status_code == 404:
            return None
        document = self._decode(response, scalar=scalar or expect == "any")[1]
        if read is None:
            return document
        if document is None:
            raise self._without(response, op, returns)
        try:
            return read(document)
        except _Unreadable as exc:
            raise self._without(response, op, returns, str(exc)) from None


class _Unreadable(ValueError):
    """A JSON answer that is not what the operation returns; the text says how (locations, never values)."""


def _one(model: type[R]) -> Callable[[Any], R]:
    """A reader of one record (a JSON object)."""

    def read(document: Any) -> R:
        if not isinstance(document, dict):
            raise _Unreadable(f"a JSON {_json_kind(document)} instead of an object")
        try:
            return model.model_validate(document)
        except ValidationError as exc:
            raise _Unreadable(unreadable_parts(exc)) from None

    return read


def _many(model: type[R]) -> Callable[[Any], list[R]]:
    """A reader of a list of records (a JSON array, or a paged wrapper's ``data``)."""
    one = _one(model)

    def read(document: Any) -> list[R]:
        if isinstance(document, dict) and isinstance(document.get("data"), list):  # a paged wrapper
            document = document["data"]
        if not isinstance(document, list):
            raise _Unreadable(f"a JSON {_json_kind(document)} instead of an array")
        return [one(item) for item in document]

    return read


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


class IpaasDialect:
    """How iPaaS.com words its failures (``consumer.http.sender.Dialect``)."""

    destination = DESTINATION

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def rejected(
        self, response: httpx.Response, call: Call, *, retryable: bool, outage: Outage | None,
        retry_after: float | None,
    ) -> IpaasRejected:
        return rejected_from_response(
            response.status_code, response.headers, response.content, redactor=self._redactor,
            retryable=retryable, outage=outage, retry_after=retry_after, operation=call.operation,
        )

    def unreachable(self, detail: str, call: Call) -> IpaasConnectionError:
        return IpaasConnectionError(detail, operation=call.operation)

    def unexpected(self, response: httpx.Response, call: Call, detail: str) -> IpaasRejected:
        return IpaasRejected(detail, http_status=response.status_code, retryable=True,
                             outage=Outage.MISCONFIGURED, operation=call.operation)

    def throttle_hint(self, response: httpx.Response) -> float | None:
        return None

    def outage_of(self, response: httpx.Response, call: Call) -> Outage | None:
        """401/403: the API token is wrong or expired; every record would fail the same way."""
        return Outage.UNAUTHORIZED if response.status_code in (401, 403) else None


class _BearerToken(httpx.Auth):
    """The ``httpx.Auth`` layer of the iPaaS.com client: a static bearer token."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request


_SUCCESS = frozenset({200, 201, 202, 204})
