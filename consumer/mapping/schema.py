"""The known shapes of mapping sources and targets, used to refuse misspelt paths at load time.

A shape is ``VALUE`` (a leaf: text, number, true/false, date), ``OPEN`` (a dict or list whose content is free,
such as Klaviyo ``properties`` or iPaaS.com ``custom_fields``), a ``dict`` of named shapes, or ``ListOf``.
Source shapes follow the records' ``model_dump(mode="json")`` (iPaaS.com Customer, Transaction, Transaction
Line, inbound Klaviyo profile); target shapes follow the Klaviyo profile/event attributes and the iPaaS.com
Customer / Customer Address bodies the flows write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .paths import Index, Key, Path, Select, Wildcard


class _Leaf:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


VALUE: Final = _Leaf("VALUE")
OPEN: Final = _Leaf("OPEN")


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list whose entries have the shape ``item``."""

    item: Shape


Shape = _Leaf | ListOf | dict[str, "Shape"]

_BASE: dict[str, Shape] = {
    "id": VALUE,
    "tracking_guid": VALUE,
    "custom_fields": OPEN,
    "external_ids": OPEN,
    "extension_fields": OPEN,
    "created_datetime": VALUE,
    "updated_datetime": VALUE,
    # consumer.records keeps a datetime it cannot parse as "<name>_raw"
    "created_datetime_raw": VALUE,
    "updated_datetime_raw": VALUE,
}

_POSTAL: dict[str, Shape] = {
    "first_name": VALUE,
    "last_name": VALUE,
    "company": VALUE,
    "address_1": VALUE,
    "address_2": VALUE,
    "address_3": VALUE,
    "city": VALUE,
    "region": VALUE,
    "country": VALUE,
    "postal_code": VALUE,
    "phone_number": VALUE,
    "email_address": VALUE,
    "is_primary_billing": VALUE,
    "is_primary_shipping": VALUE,
}

ADDRESS: dict[str, Shape] = {
    **_BASE,
    "customer_id": VALUE,
    **_POSTAL,
    "shipping_method": VALUE,
    "shipping_method_description": VALUE,
    "shipping_amount": VALUE,
    "type": VALUE,
    "ship_date": VALUE,
}

CUSTOMER: dict[str, Shape] = {
    **_BASE,
    "customer_number": VALUE,
    "first_name": VALUE,
    "last_name": VALUE,
    "email_address": VALUE,
    "company": VALUE,
    "phone_number": VALUE,
    "comment": VALUE,
    "category_id": VALUE,
    "addresses": ListOf(ADDRESS),
    "primary_billing_address": ADDRESS,
    "primary_shipping_address": ADDRESS,
}

TRANSACTION_LINE: dict[str, Shape] = {
    **_BASE,
    "parent_id": VALUE,
    "sequence_number": VALUE,
    "status": VALUE,
    "sku": VALUE,
    "description": VALUE,
    "type": VALUE,
    "qty": VALUE,
    "qty_shipped": VALUE,
    "unit_price": VALUE,
    "extended_price": VALUE,
    "original_unit_price": VALUE,
    "discount_amount": VALUE,
    "discount_percent": VALUE,
    "tax_percent": VALUE,
    "estimated_tax_amount": VALUE,
    "weight": VALUE,
    "address": ADDRESS,
    "line_info": OPEN,
    "options": OPEN,
}

TRANSACTION: dict[str, Shape] = {
    **_BASE,
    "system_id": VALUE,
    "transaction_parent_id": VALUE,
    "transaction_number": VALUE,
    "customer_id": VALUE,
    "email_address": VALUE,
    "type": VALUE,
    "status": VALUE,
    "discount_amount": VALUE,
    "tax_amount": VALUE,
    "shipping_amount": VALUE,
    "subtotal": VALUE,
    "total": VALUE,
    "total_qty": VALUE,
    "lines": ListOf(TRANSACTION_LINE),
    "addresses": ListOf(ADDRESS),
    "billing_address": ADDRESS,
    "shipping_address": ADDRESS,
    "taxes": ListOf(OPEN),
    "payments": ListOf(OPEN),
    "tracking": ListOf(OPEN),
    "notes": ListOf(OPEN),
    "discounts": ListOf(OPEN),
}

# Ordered Product: one line, with its parent transaction under ``transaction``.
TRANSACTION_LINE_SOURCE: dict[str, Shape] = {**TRANSACTION_LINE, "transaction": TRANSACTION}

KLAVIYO_LOCATION: dict[str, Shape] = {
    name: VALUE
    for name in ("address1", "address2", "city", "country", "region", "zip", "timezone", "latitude", "longitude", "ip")
}

_KLAVIYO_PROFILE_FIELDS: dict[str, Shape] = {
    "email": VALUE,
    "phone_number": VALUE,
    "external_id": VALUE,
    "first_name": VALUE,
    "last_name": VALUE,
    "organization": VALUE,
    "locale": VALUE,
    "title": VALUE,
    "image": VALUE,
    "location": KLAVIYO_LOCATION,
    "properties": OPEN,
}

KLAVIYO_PROFILE: dict[str, Shape] = {
    "id": VALUE,
    "type": VALUE,
    "attributes": {
        **_KLAVIYO_PROFILE_FIELDS,
        "anonymous_id": VALUE,
        "created": VALUE,
        "updated": VALUE,
        "last_event_date": VALUE,
        "created_raw": VALUE,
        "updated_raw": VALUE,
        "last_event_date_raw": VALUE,
        "subscriptions": OPEN,
        "predictive_analytics": OPEN,
    },
    "relationships": OPEN,
    "links": OPEN,
    "meta": OPEN,
}


SOURCES: dict[str, dict[str, Shape]] = {
    "customer": CUSTOMER,
    "transaction": TRANSACTION,
    "transaction_line": TRANSACTION_LINE_SOURCE,
    "klaviyo_profile": KLAVIYO_PROFILE,
}

IPAAS_CUSTOMER: dict[str, Shape] = {
    "customer_number": VALUE,
    "first_name": VALUE,
    "last_name": VALUE,
    "email_address": VALUE,
    "company": VALUE,
    "phone_number": VALUE,
    "comment": VALUE,
    "category_id": VALUE,
    "custom_fields": OPEN,
}

IPAAS_CUSTOMER_ADDRESS: dict[str, Shape] = {
    **_POSTAL,
    "type": VALUE,
    "custom_fields": OPEN,
}

# Targets. Profile/event targets are Klaviyo attributes; the flow wraps them in JSON:API documents (an event's
# ``metric`` is the metric name, its ``profile`` the profile attributes).
TARGETS: dict[str, dict[str, Shape]] = {
    "klaviyo_profile": dict(_KLAVIYO_PROFILE_FIELDS),
    "klaviyo_event": {
        "metric": VALUE,
        "unique_id": VALUE,
        "value": VALUE,
        "value_currency": VALUE,
        "time": VALUE,
        "backfill": VALUE,
        "profile": dict(_KLAVIYO_PROFILE_FIELDS),
        "properties": OPEN,
    },
    "ipaas_customer": IPAAS_CUSTOMER,
    "ipaas_customer_address": IPAAS_CUSTOMER_ADDRESS,
}


def _names(shape: dict[str, Shape]) -> str:
    names = sorted(shape)
    shown = ", ".join(names[:12])
    return shown + (", ..." if len(names) > 12 else "")


def check_path(path: Path, shape: dict[str, Shape], what: str) -> str | None:
    """Check ``path`` against ``shape``; returns the reason it is refused, or None when it fits.

    ``what`` names the root in messages, e.g. "a customer".
    """
    current: Shape = shape
    walked = ""
    for segment in path.segments:
        if current is OPEN:
            return None
        if isinstance(segment, Key):
            if isinstance(current, dict):
                if segment.name not in current:
                    owner = what if not walked else f"{walked!r}"
                    return f"{owner} has no field {segment.name!r} (known: {_names(current)})"
                current = current[segment.name]
                walked = f"{walked}.{segment.name}" if walked else segment.name
                continue
            if isinstance(current, ListOf):
                return (f"{walked!r} is a list: read an entry with [0], [name=...] or every entry with [*] "
                        "first")
            return f"{walked!r} is a single value and has no field {segment.name!r}"
        if isinstance(segment, Index | Wildcard | Select):
            if isinstance(current, ListOf):
                current = current.item
                walked = f"{walked}{segment}"
                continue
            label = f"{walked!r}" if walked else what
            return f"{label} is not a list, so {segment} cannot be read"
    return None
