"""The simulator's request pipeline: admin API, faults, Bearer auth, quota, then the iPaaS.com operation.
Every API request is recorded (without its credentials) for test assertions.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from simulators.httpserver import Reply, Request
from simulators.ipaas.config import Faults, SimulatorConfig
from simulators.ipaas.store import ApiError, Limits, Store
from simulators.scaffold import (
    RecordingApp,
    RequestLog,
    connection_fault,
    injected_status,
    operation_targeted,
    recorded_body,
)

logger = logging.getLogger("simulators.ipaas")

JSON = "application/json; charset=utf-8"
_HTML_STATUSES = frozenset({502, 504})
_API = r"(?P<api>customers|transactions)"
_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(r"^/customers/v2/Customers/?$", re.I), {"GET": "find_customers"}),
    (re.compile(r"^/customers/v2/Customer/?$", re.I), {"POST": "create_customer"}),
    (re.compile(r"^/customers/v2/Customer/(?P<id>[^/]+)/Addresses/?$", re.I), {"GET": "list_customer_addresses"}),
    (re.compile(r"^/customers/v2/Customer/(?P<id>[^/]+)/Address/?$", re.I), {"POST": "create_customer_address"}),
    (
        re.compile(r"^/customers/v2/Customer/(?P<id>[^/]+)/Address/(?P<address_id>[^/]+)/?$", re.I),
        {"GET": "get_customer_address", "PUT": "update_customer_address"},
    ),
    (re.compile(r"^/customers/v2/Customer/(?P<id>[^/]+)/?$", re.I), {"GET": "get_customer", "PUT": "update_customer"}),
    (re.compile(r"^/transactions/v2/Transaction/(?P<id>[^/]+)/?$", re.I), {"GET": "get_transaction"}),
    (re.compile(rf"^/{_API}/v2/External/LookupSpecial/?$", re.I), {"POST": "lookup_special"}),
    (
        re.compile(rf"^/{_API}/v2/External/LookupExternal/(?P<id>[^/]+)/(?P<system_id>[^/]+)/(?P<table>[^/]+)/?$",
                   re.I),
        {"GET": "lookup_external"},
    ),
    (re.compile(rf"^/{_API}/v2/External/UpdateExternalId/?$", re.I), {"POST": "update_external_id"}),
]


@dataclass(slots=True)
class ReceivedRequest:
    """One request as the simulator saw it (no credentials: only the auth scheme is kept)."""

    seq: int
    at: float
    method: str
    path: str
    query: dict[str, str]
    body: Any
    operation: str | None = None
    auth_scheme: str | None = None
    status: int | None = None
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class SimulatorState(RequestLog[ReceivedRequest]):
    """Everything the simulator holds; tests reach it in-process through ``IpaasSimulator.state``."""

    config: SimulatorConfig
    store: Store = field(init=False)
    faults: Faults = field(default_factory=Faults)
    requests: deque[ReceivedRequest] = field(init=False)
    stats: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(init=False)
    _seq: int = 0
    _window: tuple[int, dict[str, int]] = (0, {})

    def __post_init__(self) -> None:
        self.store = self.new_store()
        self.requests = deque(maxlen=self.config.max_recorded_requests)
        self.rng = random.Random(self.config.seed)

    def new_store(self) -> Store:
        config = self.config
        return Store(Limits(config.max_text_length, config.max_comment_length, config.require_email))

    def reset(self) -> None:
        """Forget all data, requests, faults and counters (the config stays)."""
        self.store = self.new_store()
        self.faults = Faults()
        self.requests.clear()
        self.stats.clear()

    def charge(self, token: str) -> tuple[bool, list[tuple[str, str]]]:
        """The optional one-second quota: (allowed, RateLimit-* headers)."""
        limit = self.config.rate_limit_per_s
        if limit is None:
            return True, []
        second = int(time.time())
        window_second, counts = self._window
        if window_second != second:
            counts = {}
            self._window = (second, counts)
        counts[token] = used = counts.get(token, 0) + 1
        remaining = max(limit - used, 0)
        headers = [("ratelimit-limit", f"{limit}, {limit};w=1"), ("ratelimit-remaining", str(remaining)),
                   ("ratelimit-reset", "1")]
        return used <= limit, headers


def json_reply(status: int, document: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, orjson.dumps(document), JSON, headers or [])


def error_reply(error: ApiError, headers: list[tuple[str, str]] | None = None) -> Reply:
    return json_reply(error.status, error.document(), headers)


def html_page(status: int, title: str) -> bytes:
    return (
        f"<!DOCTYPE html><html><head><title>{status} {title}</title></head><body><h1>{status} {title}</h1>"
        "<p>The gateway could not complete the request.</p></body></html>"
    ).encode()


class SimulatorApp(RecordingApp[ReceivedRequest]):
    """The request handler the HTTP server calls."""

    state: SimulatorState

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    def _admin_reply(self, request: Request) -> Reply:
        try:
            return self._admin(request)
        except ApiError as exc:
            return error_reply(exc)
        except (ValueError, ValidationError, orjson.JSONDecodeError) as exc:
            return Reply(400, orjson.dumps({"error": str(exc)}), JSON)

    def _receive(self, request: Request) -> ReceivedRequest:
        state = self.state
        return ReceivedRequest(
            seq=state.next_seq(),
            at=time.time(),
            method=request.method,
            path=request.path,
            query={k: v[-1] for k, v in request.query.items()},
            body=recorded_body(request.body),
            auth_scheme=request.headers.get("authorization", "").split(" ", 1)[0] or None,
        )

    def _failed(self, exc: Exception) -> Reply:
        if isinstance(exc, ApiError):
            return error_reply(exc)
        # a simulator bug answers 500, like a server would
        logger.exception("iPaaS.com simulator handler failed")
        return error_reply(ApiError(500, "An error occurred while processing your request."))

    # --- pipeline ------------------------------------------------------------------------------------------------
    def _handle(self, request: Request, received: ReceivedRequest) -> Reply:
        operation, params = self._route(request)
        received.operation = operation
        fault = self._fault(operation, received)
        if fault is not None:
            return fault
        if request.oversize:
            return Reply(413, orjson.dumps(ApiError(413, "Payload Too Large").document()), JSON, close=True)
        token = self._authenticate(request)
        allowed, headers = self.state.charge(token)
        if not allowed:
            received.fault = "quota"
            return error_reply(ApiError(429, "Too Many Requests", detail="Rate limit exceeded."),
                               [*headers, ("retry-after", "1")])
        body = self._body(request)
        reply = self._operation(operation, params, request, body)
        faults = self.state.faults
        if faults.garble_next > 0 and operation_targeted(faults, operation):
            faults.garble_next -= 1
            received.fault = "garbled"
            return Reply(200, html_page(200, "Service Gateway"), "text/html; charset=utf-8")
        if faults.hollow_next > 0 and 200 <= reply.status < 300 and operation_targeted(faults, operation):
            faults.hollow_next -= 1
            received.fault = "hollow"
            reply.body, reply.content_type = b"", None
        reply.headers.extend(headers)
        return reply

    def _route(self, request: Request) -> tuple[str, dict[str, str]]:
        for pattern, methods in _ROUTES:
            match = pattern.match(request.path)
            if match:
                operation = methods.get(request.method)
                if operation is None:
                    raise ApiError(405, "Method Not Allowed")
                return operation, match.groupdict()
        raise ApiError(404, "Not Found", detail=f"No endpoint {request.path}.")

    def _authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "").strip()
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or credential not in self.state.config.tokens:
            raise ApiError(401, "Unauthorized", detail="A valid Bearer token is required.")
        return credential

    @staticmethod
    def _body(request: Request) -> Any:
        if request.method not in ("POST", "PUT"):
            return None
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise ApiError(415, "Unsupported Media Type", detail=f"Content type '{media}' is not supported.")
        try:
            return orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "One or more validation errors occurred.",
                           errors={"$": [f"The JSON value could not be parsed: {exc}"]}) from exc

    def _fault(self, operation: str, received: ReceivedRequest) -> Reply | None:
        faults = self.state.faults
        if not operation_targeted(faults, operation):
            return None
        rng = self.state.rng
        dropped = connection_fault(faults, rng)
        if dropped is not None:
            received.fault, reply = dropped
            return reply
        if faults.unauthorized:
            received.fault = "unauthorized"
            return error_reply(ApiError(401, "Unauthorized", detail="A valid Bearer token is required."))
        if faults.non_json_next > 0 or (faults.non_json_rate and rng.random() < faults.non_json_rate):
            faults.non_json_next = max(faults.non_json_next - 1, 0)
            received.fault = "non_json"
            return Reply(200, html_page(200, "Service Gateway"), "text/html; charset=utf-8")
        status = injected_status(faults, rng)
        if status is None:
            return None
        received.fault = f"status:{status}"
        headers = [("retry-after", str(faults.retry_after_s))] if status in (429, 503) else []
        if status in _HTML_STATUSES or faults.html_errors:
            return Reply(status, html_page(status, "Bad Gateway" if status == 502 else "Error"),
                         "text/html; charset=utf-8", headers)
        title = {429: "Too Many Requests", 503: "Service Unavailable"}.get(
            status, "An error occurred while processing your request.")
        return error_reply(ApiError(status, title), headers)

    # --- operations ----------------------------------------------------------------------------------------------
    def _operation(self, operation: str, params: dict[str, str], request: Request, body: Any) -> Reply:
        store = self.state.store
        if operation == "get_customer":
            return json_reply(200, store.render_customer(store.get_customer(params["id"])))
        if operation == "find_customers":
            filters = {k: v[-1] for k, v in request.query.items() if k.lower() not in ("action", "trackingguid")}
            rows = store.find_customers(request.param("action"), filters)
            return json_reply(200, [store.render_customer(row) for row in rows])
        if operation == "create_customer":
            return json_reply(201, store.render_customer(store.create_customer(body)))
        if operation == "update_customer":
            return json_reply(200, store.render_customer(store.update_customer(params["id"], body)))
        if operation == "list_customer_addresses":
            return json_reply(200, [store.render_address(row) for row in store.list_addresses(params["id"])])
        if operation == "create_customer_address":
            return json_reply(201, store.render_address(store.create_address(params["id"], body)))
        if operation == "get_customer_address":
            return json_reply(200, store.render_address(store.get_address(params["id"], params["address_id"])))
        if operation == "update_customer_address":
            row = store.update_address(params["id"], params["address_id"], body)
            return json_reply(200, store.render_address(row))
        if operation == "get_transaction":
            transaction = store.transactions.get(params["id"])
            if transaction is None:
                raise ApiError(404, "Not Found", detail=f"Transaction {params['id']} was not found.")
            return json_reply(200, transaction)
        if operation == "lookup_special":
            value = store.lookup_special(body)
            if value is None:
                raise ApiError(404, "Not Found", detail="No internal id is linked to this external id.")
            return json_reply(200, value)
        if operation == "lookup_external":
            try:
                system_id = int(params["system_id"])
            except ValueError as exc:
                raise ApiError(400, "Bad Request", detail="systemId must be a number.") from exc
            value = store.lookup_external(params["id"], system_id, params["table"])
            if value is None:
                raise ApiError(404, "Not Found", detail="No external id is linked to this record.")
            return json_reply(200, value)
        if operation == "update_external_id":
            return json_reply(200, store.update_external_id(body))
        raise ApiError(404, "Not Found")  # pragma: no cover

    # --- admin ---------------------------------------------------------------------------------------------------
    def _admin(self, request: Request) -> Reply:
        state = self.state
        store = state.store
        path = request.path.rstrip("/")
        method = request.method
        payload = orjson.loads(request.body) if request.body else {}

        def ok(document: Any, status: int = 200) -> Reply:
            return Reply(status, orjson.dumps(document), JSON)

        if path == "/__admin/requests":
            if method == "DELETE":
                state.requests.clear()
                return ok({"cleared": True})
            items = state.received(request.param("operation"))
            limit = request.param("limit")
            if limit:
                items = items[-int(limit):]
            return ok({"count": state.stats["requests"], "data": [r.to_dict() for r in items]})
        if path == "/__admin/faults":
            if method in ("PUT", "POST"):
                state.faults = Faults.model_validate(payload)
            elif method == "DELETE":
                state.faults = Faults()
            return ok(state.faults.model_dump(mode="json"))
        if path == "/__admin/reset" and method == "POST":
            state.reset()
            return ok({"reset": True})
        if path == "/__admin/state":
            return ok(store.snapshot())
        if path == "/__admin/stats":
            return ok(dict(state.stats))
        if path == "/__admin/customers":
            if method == "POST":
                addresses = payload.pop("addresses", []) if isinstance(payload, dict) else []
                external_id = payload.pop("klaviyo_profile_id", None) if isinstance(payload, dict) else None
                customer_id = payload.pop("id", None) if isinstance(payload, dict) else None
                row = store.create_customer(payload, customer_id=str(customer_id) if customer_id else None)
                for address in addresses or []:
                    store.create_address(row.id, address)
                if external_id:
                    store.update_external_id({"table_name": "customer", "system_id": int(payload.get(
                        "system_id", 1)), "external_id": external_id, "internal_id": row.id})
                return ok(store.render_customer(row), 201)
            return ok(store.snapshot()["customers"])
        match = re.match(r"^/__admin/customers/(?P<id>[^/]+)$", path)
        if match and method == "DELETE":
            store.delete_customer(match["id"])
            return ok({"deleted": match["id"]})
        if path == "/__admin/transactions" and method == "POST":
            if not isinstance(payload, dict) or not payload.get("id"):
                raise ValueError("a transaction needs an id")
            store.transactions[str(payload["id"])] = payload
            return ok(payload, 201)
        if path == "/__admin/external-ids":
            return ok(store.snapshot()["external_ids"])
        return Reply(404, orjson.dumps({"error": f"no admin endpoint {method} {path}"}), JSON)
