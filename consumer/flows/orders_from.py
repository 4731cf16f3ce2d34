"""Add Klaviyo Placed Order / Ordered Product Event FROM iPaaS.com: a Transaction becomes one Placed Order event
and one Ordered Product event per line, after Klaviyo's guide for platforms without a pre-built integration.

Steps (1 and 2 send nothing, so bad input costs no call):
  1. Build the Placed Order with its mapping. It needs an event name (``metric``, at most 127 characters), a
     unique order id (``unique_id``, the transaction id) and a profile reference (``profile.external_id`` = the
     customer id, ``profile.email`` or ``profile.phone_number``; a guest's email must be well formed); ``value``
     (the total) must be a number (negative for a refund or return); ``time`` (the transaction's date) must be
     mapped, readable and inside Klaviyo's window (after 1990-01-01, at most a year ahead: ``event_time_problem``).
     Else "Order Event Could Not Be Created". An order is never sent without its date: Klaviyo would date it
     "now" (``consumer.records`` keeps an unreadable date as ``None``, which is the missing case here).
     ``Items`` (one entry per line) is added unless the mapping fills it.
  2. Build one Ordered Product per line with its mapping: event name, profile reference and a ``unique_id`` that
     identifies the line (``<transaction id>:<sequence>:<sku>`` by default; it must differ from the order's and
     from every other line's), value (the line total) a number (negative for a discount or return line), and a
     time as above (the transaction's date by default). A line that fails is left out
     and reported as "Product Event Could Not Be Created" after the other events are sent (the transfer fails
     and is dead-lettered; Klaviyo's de-duplication makes the resend after the fix a no-op for what arrived).
     A transaction without lines sends the Placed Order alone (with ``Items: []``).
  3. Make sure the customer exists in Klaviyo (only when the order names one by ``profile.external_id``): link
     cache, then ``GET`` by external_id, else the Add Profile flow creates it from the platform Customer: read
     from iPaaS.com (the Customer with its addresses; kept a while, so the orders of one customer cost one read:
     ``consumer.flows.customers``) when iPaaS.com is configured and the reference is the transaction's customer
     id; else (no iPaaS.com, or a reference that is not the customer id) from the transaction's email and billing
     address. If that fails, the customer's own error (a Customer iPaaS.com does not have: "Error calling
     iPaaS.com (... 404 ...)") is written to the error log (under the customer's transfer) and "Customer
     Required for Order Could Not Be Created" fails the order; errors that are retryable or blame a destination
     (Klaviyo or iPaaS.com 5xx, 429, connection, 401/403) are raised as they are, so the runtime retries or the
     order waits for that destination (an iPaaS.com outage holds only the orders whose customer must be read).
     A guest order (no customer id) names its profile by email/phone: Klaviyo creates or matches that profile
     when it takes the event.
  4. Send: the events go to Klaviyo's event batcher (``ctx.events``), which sends them together with other
     records' events (single ``POST /api/events`` or bulk jobs of up to 1,000 events of many orders, whichever
     the quota favours; see ``consumer.klaviyo.batching``); the events name the profile by its id. The handler
     returns once Klaviyo accepted all of them. A 404 for a profile id the link cache gave (deleted or merged in
     Klaviyo) forgets the link, runs step 3 again and resends once. If Klaviyo refuses an event, the transaction
     fails: a refused event name, unique_id or profile reference is "Order Event Could Not Be Created" (the Placed
     Order) or "Product Event Could Not Be Created" (a line), with Klaviyo's detail; any other refused field (a
     time the spec allows but Klaviyo refuses, say) is "Error calling Klaviyo (...)". In a bulk job none of its
     events was taken; sent as single events (a trickle), the others may have been, and the resend after the fix
     is a no-op for them.

Idempotent: Klaviyo keeps one event per (profile, metric, unique_id), so a redelivered or updated transaction
creates nothing new. With ``ctx.generate_events`` off (the "Generate Events" setting) nothing is sent.

Klaviyo calls per order, besides its share of the batcher's event requests (one bulk job carries the events of
up to ~250 orders of 3 lines; a trickle goes as single events):
  customer linked and in the link cache (steady state) ... 0
  customer linked, not cached .............................. 1  (GET by external_id)
  customer absent .......................................... 2  (GET, POST profile; see profiles_from for
                                                                 a 409 link or a near-duplicate check)
                                                                 + 2 iPaaS.com reads (Customer, addresses)
                                                                 when configured, once per customer a while
  guest order (no customer id) ............................. 0
  "Generate Events" off .................................... 0 (and no events)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import ValidationError

from consumer.catalog import (
    CUSTOMER_REQUIRED_FOR_ORDER,
    ORDER_EVENT_COULD_NOT_BE_CREATED,
    PRODUCT_EVENT_COULD_NOT_BE_CREATED,
    CatalogEntry,
    CatalogError,
    Flow,
)
from consumer.flows.context import Change, FlowContext
from consumer.flows.ports import EventSink
from consumer.flows.profiles_from import IDENTIFIERS, attribute, ensure_profile, is_valid_email
from consumer.klaviyo import KlaviyoConnectionError, KlaviyoRejected, NewEvent, ProfileAttributes
from consumer.klaviyo.errors import EventRejected
from consumer.klaviyo.models import event_time_problem
from consumer.mapping import MappingCollection
from consumer.records import Customer, CustomerAddress, Transaction, TransactionLine, parse_datetime
from consumer.transfers import TransferRef

__all__ = ["send_order_events"]

log = logging.getLogger("consumer.flows.orders_from")

MAX_METRIC_LENGTH = 127
MAX_LIST_ITEMS = 4000
"""Klaviyo's limit on the entries of an array property; longer lists (``Items``, ``ItemNames``) are cut."""
MAX_LISTED_LINES = 10
"""How many failed lines a "Product Event Could Not Be Created" detail names."""
_ACCOUNT_STATUSES = frozenset({401, 403})
_REQUIRED_FIELDS = ("metric", "unique_id", "profile")
"""What the catalog's "could not be created" entries are about: the event name, unique id and profile."""


@dataclass(frozen=True, slots=True)
class _Draft:
    """One validated event, waiting for its profile reference."""

    metric: str
    unique_id: str
    properties: dict[str, Any]
    profile: dict[str, Any]
    value: float | None = None
    value_currency: str | None = None
    time: datetime | None = None
    backfill: bool | None = None

    def event(self, profile_id: str | None) -> NewEvent:
        """The event, naming its profile by ``profile_id``, or by the mapped identifiers for a guest order."""
        if profile_id is not None:
            extra = {k: v for k, v in self.profile.items() if k not in IDENTIFIERS}
            profile = ProfileAttributes.model_validate(extra)
        else:
            profile = ProfileAttributes.model_validate(self.profile)
        fields: dict[str, Any] = {
            "metric": self.metric, "unique_id": self.unique_id, "properties": self.properties,
            "profile": profile, "profile_id": profile_id,
        }
        for name in ("value", "value_currency", "time", "backfill"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return NewEvent(**fields)


@dataclass
class _Built:
    placed: _Draft
    lines: list[_Draft] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    """Which line each of ``lines`` is ("line 2 (sequence 2)")."""
    failed: list[str] = field(default_factory=list)


# --- building ------------------------------------------------------------------------------------------------
def _fail(entry: CatalogEntry, flow: Flow, detail: str) -> CatalogError:
    return CatalogError(entry, detail, flow=flow)


def _number(value: Any, what: str, entry: CatalogEntry, flow: Flow) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _fail(entry, flow, f"field 'value': the {what} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(entry, flow, f"field 'value': the {what} is not a number") from None
    if not math.isfinite(number):
        raise _fail(entry, flow, f"field 'value': the {what} is not a number")
    return number  # negative totals are valid: refunds, discount lines, returns


def _time(target: Mapping[str, Any], mapping: MappingCollection, entry: CatalogEntry, flow: Flow) -> datetime:
    """The event's time: the mapped date of the transaction, inside Klaviyo's window (``event_time_problem``).

    Missing or unreadable is the event's error, never "now": Klaviyo would date the order when it arrived."""
    mapped = mapping.field("time")
    where = f"field 'time' (path '{mapped.source_text}')" if mapped and mapped.source_text else "field 'time'"
    if mapped is None:
        raise _fail(entry, flow, "field 'time' is not mapped: the event needs the date of the transaction")
    value = target.get("time")
    if value is None:
        raise _fail(entry, flow, f"{where}: the date of the transaction is missing or could not be read")
    moment = parse_datetime(value)
    if moment is None:
        raise _fail(entry, flow, f"{where}: not a date")
    problem = event_time_problem(moment)
    if problem is not None:
        raise _fail(entry, flow, f"{where}: {problem}")
    return moment


def _draft(target: Mapping[str, Any], mapping: MappingCollection, entry: CatalogEntry, flow: Flow,
           what: str) -> _Draft:
    """Validate a mapped event target; raises ``entry`` naming the missing or bad field (never a value)."""
    metric = target.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        raise _fail(entry, flow, "field 'metric': the event name is missing")
    if len(metric) > MAX_METRIC_LENGTH:
        raise _fail(entry, flow, f"field 'metric': the event name is longer than {MAX_METRIC_LENGTH} characters")
    unique_id = target.get("unique_id")
    if unique_id is None or not str(unique_id).strip():
        raise _fail(entry, flow, "field 'unique_id': the unique identifier is missing")
    mapped = target.get("profile")
    profile: dict[str, Any] = mapped if isinstance(mapped, dict) else {}
    if not any(profile.get(name) for name in IDENTIFIERS):
        raise _fail(entry, flow, "the profile reference (profile.external_id, profile.email or "
                                 "profile.phone_number) is missing")
    email = profile.get("email")
    if email is not None and not profile.get("external_id") and not is_valid_email(email):  # a guest's reference
        raise _fail(entry, flow, "field 'profile.email': not a valid email address")
    properties = target.get("properties")
    draft = _Draft(
        metric=metric,
        unique_id=str(unique_id),
        properties=dict(properties) if isinstance(properties, dict) else {},
        profile=dict(profile),
        value=_number(target.get("value"), what, entry, flow),
        value_currency=target.get("value_currency"),
        time=_time(target, mapping, entry, flow),
        backfill=target.get("backfill"),
    )
    try:  # the event's own checks (time, currency ...), with a stand-in profile id
        draft.event("check")
    except ValidationError as exc:
        names = sorted({".".join(str(part) for part in error["loc"]) or "event" for error in exc.errors()})
        raise _fail(entry, flow, f"the event is not valid: {', '.join(names)}") from None
    return draft


def _money(value: Decimal | None) -> float | None:
    return None if value is None else float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _item(line: TransactionLine) -> dict[str, Any]:
    """One ``Items`` entry of the Placed Order (Klaviyo's guide; the SKU is iPaaS.com's product key)."""
    sku = line.sku.strip() if line.sku and line.sku.strip() else None
    item = {
        "ProductID": sku,
        "SKU": sku,
        "ProductName": line.description.strip() if line.description else None,
        "Quantity": None if line.qty is None else float(line.qty),
        "ItemPrice": _money(line.unit_price),
        "RowTotal": _money(line.extended_price),
    }
    return {key: value for key, value in item.items() if value is not None}


def _capped(properties: dict[str, Any], unique_id: str) -> dict[str, Any]:
    for key, value in properties.items():
        if isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
            log.warning("Event list property cut to Klaviyo's limit",
                        extra={"property": key, "items": len(value), "limit": MAX_LIST_ITEMS, "event": unique_id})
            properties[key] = value[:MAX_LIST_ITEMS]
    return properties


def build_events(ctx: FlowContext, transaction: Transaction) -> _Built:
    """Map and validate the Placed Order (raising its catalog error) and every line (collecting failures)."""
    source = transaction.model_dump(mode="json")
    order_flow, line_flow = Flow.PLACED_ORDER_FROM_IPAAS, Flow.ORDERED_PRODUCT_FROM_IPAAS
    orders = ctx.mappings[order_flow.slug]
    placed = _draft(orders.build(source), orders, ORDER_EVENT_COULD_NOT_BE_CREATED, order_flow, "order total")
    if "Items" not in placed.properties:
        placed.properties["Items"] = [_item(line) for line in transaction.lines]
    _capped(placed.properties, placed.unique_id)
    built = _Built(placed)
    products = ctx.mappings[line_flow.slug]
    seen: dict[str, int] = {}
    for position, (line, line_source) in enumerate(zip(transaction.lines, source["lines"], strict=True)):
        where = f"line {position + 1}" + (f" (sequence {line.sequence_number})" if line.sequence_number else "")
        try:
            draft = _draft(products.build({**line_source, "transaction": source}), products,
                           PRODUCT_EVENT_COULD_NOT_BE_CREATED, line_flow, "line total")
            if draft.unique_id == placed.unique_id or draft.unique_id in seen:
                other = "the order" if draft.unique_id == placed.unique_id else f"line {seen[draft.unique_id] + 1}"
                raise _fail(PRODUCT_EVENT_COULD_NOT_BE_CREATED, line_flow,
                            f"field 'unique_id' does not identify the line: it repeats {other}'s")
        except CatalogError as exc:
            built.failed.append(f"{where}: {exc.detail or exc.message}")
            continue
        seen[draft.unique_id] = position
        built.lines.append(draft)
        built.where.append(where)
    return built


# --- the customer --------------------------------------------------------------------------------------------
def customer_from(transaction: Transaction, external_id: str, email: str | None) -> Customer:
    """The Customer an order implies when iPaaS.com cannot say: its reference, email and billing address (name,
    phone, company)."""
    billing = transaction.billing_address
    fields: dict[str, Any] = {"id": external_id, "email_address": email}
    if billing is not None:
        fields.update(
            first_name=billing.first_name, last_name=billing.last_name, company=billing.company,
            phone_number=billing.phone_number,
            addresses=[CustomerAddress.model_validate(
                {**billing.model_dump(exclude={"type", "shipping_method", "is_primary_shipping"}),
                 "customer_id": external_id, "is_primary_billing": True})],
        )
    return Customer.model_validate(fields)


def _passes_through(exc: CatalogError) -> bool:
    """A failure that says nothing about the customer: retry or pause rather than fail the order."""
    if isinstance(exc, KlaviyoConnectionError) or exc.retryable or exc.infrastructure:
        return True
    return isinstance(exc, KlaviyoRejected) and exc.http_status in _ACCOUNT_STATUSES


def _order_customer(ctx: FlowContext, transaction: Transaction, external_id: str,
                    email: str | None) -> Callable[[], Awaitable[Customer]]:
    """What reads the Customer the order's profile is made from: the platform Customer from iPaaS.com (kept a
    while: ``ctx.customers``) when iPaaS.com is configured and the order names its customer by the transaction's
    customer id; else the Customer the transaction implies (``customer_from``)."""
    ipaas = ctx.ipaas
    if ipaas is None or not transaction.customer_id or transaction.customer_id.strip() != external_id:
        async def implied() -> Customer:
            return customer_from(transaction, external_id, email)

        return implied

    async def fetch() -> Customer:
        record = await ipaas.fetch_record("customer", external_id)
        if not isinstance(record, Customer):
            raise TypeError(f"iPaaS.com gave a {type(record).__name__} for a customer")
        return record

    async def platform() -> Customer:
        return await ctx.customers.customer(external_id, fetch)

    return platform


async def _ensure_customer(ctx: FlowContext, transaction: Transaction, placed: _Draft) -> str | None:
    """The profile id the order's events name, or None for a guest order (named by its identifiers)."""
    external_id = placed.profile.get("external_id")
    if not external_id:
        return None
    external_id = str(external_id)
    transfer = TransferRef(kind="customer", id=external_id)
    customer = _order_customer(ctx, transaction, external_id, placed.profile.get("email"))
    try:
        return await ensure_profile(ctx, customer, transfer, external_id)
    except CatalogError as exc:
        if _passes_through(exc):
            raise
        await ctx.warn(exc, transfer)
        raise CatalogError(CUSTOMER_REQUIRED_FOR_ORDER, f"customer {external_id}: {exc.code}",
                           flow=Flow.PLACED_ORDER_FROM_IPAAS, cause=exc) from exc


# --- sending -------------------------------------------------------------------------------------------------
def _field_name(path: str) -> str:
    """The mapping's name for a field Klaviyo pointed at: ``profile/data/attributes/email`` -> ``profile.email``."""
    parts = [part for part in path.split("/") if part and part not in ("data", "attributes")]
    return "metric" if parts[:1] == ["metric"] else ".".join(parts)


def _refused(exc: EventRejected, built: _Built) -> CatalogError:
    """Klaviyo refused one of the order's events: the catalog error for it (``exc`` itself, flow attributed,
    unless a required field was refused)."""
    order = exc.index == 0
    flow = Flow.PLACED_ORDER_FROM_IPAAS if order else Flow.ORDERED_PRODUCT_FROM_IPAAS
    name = _field_name(exc.field)
    if exc.http_status == 400 and name and name.split(".")[0] in _REQUIRED_FIELDS:
        entry = ORDER_EVENT_COULD_NOT_BE_CREATED if order else PRODUCT_EVENT_COULD_NOT_BE_CREATED
        where = "" if order or exc.index > len(built.where) else f"{built.where[exc.index - 1]}: "
        return CatalogError(entry, f"{where}field '{name}': Klaviyo refused it ({exc.detail})", flow=flow, cause=exc)
    attribute(exc, flow)
    return exc


def _sink(ctx: FlowContext) -> EventSink:
    if ctx.events is None:
        raise RuntimeError("the order flow needs an event sink (FlowContext.events)")
    return ctx.events


async def send_order_events(change: Change[Transaction], ctx: FlowContext) -> None:
    """Handler of ``transaction/created`` and ``transaction/updated``."""
    if not ctx.generate_events:
        log.debug("Generate Events is off; transaction not sent", extra={"event_type": change.transfer.event_type})
        return
    try:
        await _send_order(ctx, change.record)
    except CatalogError as exc:
        attribute(exc, Flow.PLACED_ORDER_FROM_IPAAS)
        raise


async def _send_order(ctx: FlowContext, transaction: Transaction) -> None:
    built = build_events(ctx, transaction)
    sink = _sink(ctx)
    external_id = built.placed.profile.get("external_id")
    cached = ctx.links.get(str(external_id)) if external_id else None
    profile_id = await _ensure_customer(ctx, transaction, built.placed)
    drafts = [built.placed, *built.lines]
    try:
        try:
            await sink.submit([draft.event(profile_id) for draft in drafts])
        except KlaviyoRejected as exc:
            if exc.http_status != 404 or cached is None or profile_id != cached:
                raise
            # The cached profile is gone (deleted or merged in Klaviyo): find or create it again, then resend.
            ctx.links.forget(str(external_id))
            profile_id = await _ensure_customer(ctx, transaction, built.placed)
            await sink.submit([draft.event(profile_id) for draft in drafts])
    except EventRejected as exc:
        refused = _refused(exc, built)
        if refused is exc:
            raise
        raise refused from exc
    if built.failed:
        shown = "; ".join(built.failed[:MAX_LISTED_LINES])
        more = f" (+{len(built.failed) - MAX_LISTED_LINES} more lines)" if len(built.failed) > MAX_LISTED_LINES else ""
        raise CatalogError(PRODUCT_EVENT_COULD_NOT_BE_CREATED, f"{shown}{more}", flow=Flow.ORDERED_PRODUCT_FROM_IPAAS)
