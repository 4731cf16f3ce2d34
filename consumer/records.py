"""Typed records: the platform's Customer, Customer Address, Transaction, Transaction Line and Transaction
Address, and the Klaviyo profile that comes back inbound.

Field names are the snake_case wire names of iPaaS.com (``IPaaSApi/Model/*.cs`` of the integration template)
and of Klaviyo's JSON:API profile resource. Every model allows extra fields, so nothing a source sends is
lost; a path-based mapping reads them from ``model_dump()`` like declared fields.

Leniency, decided once here so every envelope gets the same records:

- ids and other text fields accept numbers (``123`` -> ``"123"``); ``Customer.id`` is required and must not be
  blank; a Transaction without an id (absent, null or blank: ``id`` is None) is still read, so that its order flow
  reports the missing unique order id ("Order Event Could Not Be Created") instead of an unreadable record;
- money and quantities are ``Decimal``; ``None`` and ``""`` mean "no value", anything non-numeric (``"abc"``,
  ``NaN``, ``true``) is a validation error;
- datetimes become aware ``datetime`` objects (a naive value is taken as UTC): ISO 8601 / RFC 3339 text,
  epoch numbers (seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude), .NET
  ``/Date(ms)/`` and RFC 2822 text. A value that cannot be parsed does not reject the record: the field
  becomes ``None`` and the original is kept as the extra field ``<name>_raw``;
- lists and objects accept ``None`` (-> empty) and JSON text (a CDC stream of a ``json`` column);
- booleans accept ``None`` (-> ``False``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, computed_field, model_validator

__all__ = [
    "CustomField",
    "Customer",
    "CustomerAddress",
    "KlaviyoLocation",
    "KlaviyoProfile",
    "KlaviyoProfileAttributes",
    "Record",
    "Transaction",
    "TransactionAddress",
    "TransactionLine",
    "parse_datetime",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOTNET_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


# --------------------------------------------------------------------------------------------------- helpers


def _from_epoch(number: int | float | Decimal) -> datetime | None:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude."""
    amount = Decimal(number)
    if not amount.is_finite():
        return None
    magnitude = abs(amount)
    if magnitude < 100_000_000_000:  # seconds up to year 5138
        micros = amount * 1_000_000
    elif magnitude < 100_000_000_000_000:
        micros = amount * 1_000
    elif magnitude < 100_000_000_000_000_000:
        micros = amount
    else:
        micros = amount / 1_000
    try:
        return _EPOCH + timedelta(microseconds=int(micros))
    except (OverflowError, ValueError):
        return None


def parse_datetime(value: Any) -> datetime | None:
    """An aware ``datetime`` from the forms sources send, or ``None`` when the value cannot be read.

    A naive value is taken as UTC (the platform stores UTC; Debezium's ``Timestamp`` types are UTC epochs).
    """
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        if isinstance(value, float) and value != value:  # NaN
            return None
        return _from_epoch(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if _NUMBER.match(text):
        return _from_epoch(Decimal(text))
    dotnet = _DOTNET_DATE.match(text)
    if dotnet:
        try:  # milliseconds since the epoch, UTC; the optional offset is only the display zone
            return _EPOCH + timedelta(milliseconds=int(dotnet.group(1)))
        except OverflowError:
            return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _from_json_text(value: Any) -> Any:
    """JSON text of an object or array (a CDC stream of a ``json`` column) -> the decoded value."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                return value
    return value


def _list_or_empty(value: Any) -> Any:
    value = _from_json_text(value)
    return [] if value is None else value


def _dict_or_empty(value: Any) -> Any:
    value = _from_json_text(value)
    return {} if value is None else value


def _dict_or_none(value: Any) -> Any:
    return _from_json_text(value)


def _bool_or_false(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return False
    return value


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _to_aware(value: Any) -> Any:
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return value
    parsed = parse_datetime(value)
    return value if parsed is None else parsed  # an unreadable value is left for pydantic to report


def _custom_fields(value: Any) -> Any:
    """``[{"name","value"}]`` (also ``Name``/``Value``, ``key``) or a ``{name: value}`` dict -> the list form."""
    value = _from_json_text(value)
    if value is None:
        return []
    if isinstance(value, dict):
        return [{"name": name, "value": item} for name, item in value.items()]
    if isinstance(value, list):
        normalised: list[Any] = []
        for item in value:
            if isinstance(item, dict) and ("name" not in item or "value" not in item):
                item = dict(item)
                for name_key in ("Name", "key", "Key"):
                    if "name" not in item and name_key in item:
                        item["name"] = item.pop(name_key)
                if "value" not in item and "Value" in item:
                    item["value"] = item.pop("Value")
            normalised.append(item)
        return normalised
    return value


OptStr = str | None
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
OptId = Annotated[Id | None, BeforeValidator(_blank_to_none)]
Money = Annotated[Decimal | None, BeforeValidator(_blank_to_none)]
Timestamp = Annotated[datetime | None, BeforeValidator(_to_aware)]
Flag = Annotated[bool, BeforeValidator(_bool_or_false)]
JsonDict = Annotated[dict[str, Any], BeforeValidator(_dict_or_empty)]
JsonList = Annotated[list[Any], BeforeValidator(_list_or_empty)]
DictList = Annotated[list[dict[str, Any]], BeforeValidator(_list_or_empty)]


class _Model(BaseModel):
    """Base of every record: extras kept, numbers accepted as text (see the module doc)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, populate_by_name=True)


class _Prepared(_Model):
    """A record with datetimes read leniently or computed fields (a validator of its own runs on every one, so the
    records that have neither, such as lines and addresses, go without it)."""

    _datetime_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        prepared: dict[str, Any] | None = None
        # A dump fed back in carries the computed fields; they are derived, never extras.
        for name in cls.model_computed_fields:
            if name in data:
                prepared = prepared if prepared is not None else dict(data)
                del prepared[name]
        for name in cls._datetime_fields:
            raw = data.get(name)
            if raw is None or isinstance(raw, datetime):
                continue
            prepared = prepared if prepared is not None else dict(data)
            parsed = parse_datetime(raw)
            prepared[name] = parsed
            if parsed is None and not (isinstance(raw, str) and not raw.strip()):
                prepared.setdefault(f"{name}_raw", raw)
        return prepared if prepared is not None else data


# ------------------------------------------------------------------------------------------ iPaaS.com models


class CustomField(_Model):
    """One custom field of a platform record (``custom_fields[]``)."""

    name: OptStr = None
    value: Any = None


class _PostalAddress(_Model):
    """The postal fields the platform's address types share."""

    first_name: OptStr = None
    last_name: OptStr = None
    company: OptStr = None
    address_1: OptStr = None
    address_2: OptStr = None
    address_3: OptStr = None
    city: OptStr = None
    region: OptStr = None
    country: OptStr = None
    postal_code: OptStr = None
    phone_number: OptStr = None
    is_primary_billing: Flag = False
    is_primary_shipping: Flag = False


class CustomerAddress(_PostalAddress):
    """A Customer Address (collection type 17). Field list after the transaction address (see the notes)."""

    id: OptStr = None
    customer_id: OptStr = None


class Customer(_Prepared):
    """An iPaaS.com Customer (``CustomerResponse``), with its addresses when the stream carries them."""

    _datetime_fields = ("created_datetime", "updated_datetime")

    id: Id
    tracking_guid: OptStr = None
    customer_number: OptStr = None
    first_name: OptStr = None
    last_name: OptStr = None
    email_address: OptStr = None
    company: OptStr = None
    comment: OptStr = None
    category_id: OptStr = None
    phone_number: OptStr = None
    created_datetime: Timestamp = None
    updated_datetime: Timestamp = None
    custom_fields: Annotated[list[CustomField], BeforeValidator(_custom_fields)] = Field(default_factory=list)
    external_ids: JsonList = Field(default_factory=list)
    extension_fields: Annotated[list[Any] | dict[str, Any], BeforeValidator(_list_or_empty)] = Field(
        default_factory=list
    )
    addresses: Annotated[list[CustomerAddress], BeforeValidator(_list_or_empty)] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def primary_billing_address(self) -> CustomerAddress | None:
        """The address flagged primary billing, else the first address, else ``None``."""
        for address in self.addresses:
            if address.is_primary_billing:
                return address
        return self.addresses[0] if self.addresses else None

    def custom_field(self, name: str, default: Any = None) -> Any:
        """The value of the custom field ``name`` (exact name first, then case-insensitive)."""
        for field in self.custom_fields:
            if field.name == name:
                return field.value
        folded = name.casefold()
        for field in self.custom_fields:
            if field.name is not None and field.name.casefold() == folded:
                return field.value
        return default


class TransactionLine(_Model):
    """A Transaction Line (``TransactionLineResponse``); the SKU is the product key."""

    id: OptStr = None
    parent_id: OptStr = None
    sequence_number: Annotated[int | None, BeforeValidator(_blank_to_none)] = None
    status: OptStr = None
    sku: OptStr = None
    description: OptStr = None
    type: OptStr = None
    qty: Money = None
    qty_shipped: Money = None
    unit_price: Money = None
    extended_price: Money = None
    original_unit_price: Money = None
    discount_amount: Money = None
    discount_percent: Money = None
    tax_percent: Money = None
    estimated_tax_amount: Money = None
    weight: Money = None
    line_info: JsonDict = Field(default_factory=dict)
    options: JsonDict = Field(default_factory=dict)


class TransactionAddress(_PostalAddress):
    """A transaction's billing or shipping address (``ShippingAddressResponse``)."""

    shipping_method: OptStr = None
    type: OptStr = None
    customer_id: OptStr = None


def _pick_address(
    addresses: list[TransactionAddress], flag: Literal["is_primary_billing", "is_primary_shipping"], word: str
) -> TransactionAddress | None:
    for address in addresses:
        if getattr(address, flag):
            return address
    for address in addresses:
        if address.type and word in address.type.casefold():
            return address
    return None


class Transaction(_Prepared):
    """An iPaaS.com Transaction (``TransactionResponse``) with its child collections."""

    _datetime_fields = ("created_datetime", "updated_datetime")

    id: OptId = None
    system_id: OptStr = None
    transaction_parent_id: OptStr = None
    transaction_number: OptStr = None
    customer_id: OptStr = None
    email_address: OptStr = None
    type: OptStr = None
    status: OptStr = None
    discount_amount: Money = None
    tax_amount: Money = None
    shipping_amount: Money = None
    subtotal: Money = None
    total: Money = None
    total_qty: Money = None
    created_datetime: Timestamp = None
    updated_datetime: Timestamp = None
    lines: Annotated[list[TransactionLine], BeforeValidator(_list_or_empty)] = Field(default_factory=list)
    addresses: Annotated[list[TransactionAddress], BeforeValidator(_list_or_empty)] = Field(default_factory=list)
    taxes: DictList = Field(default_factory=list)
    payments: DictList = Field(default_factory=list)
    tracking: DictList = Field(default_factory=list)
    notes: DictList = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def billing_address(self) -> TransactionAddress | None:
        """Primary billing address, else the first whose ``type`` mentions billing, else ``None``."""
        return _pick_address(self.addresses, "is_primary_billing", "bill")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def shipping_address(self) -> TransactionAddress | None:
        """Primary shipping address, else the first whose ``type`` mentions shipping, else ``None``."""
        return _pick_address(self.addresses, "is_primary_shipping", "ship")


# -------------------------------------------------------------------------------------------- Klaviyo models


class KlaviyoLocation(_Model):
    """A profile's single postal address (``ProfileLocation``)."""

    address1: OptStr = None
    address2: OptStr = None
    city: OptStr = None
    country: OptStr = None
    region: OptStr = None
    zip: OptStr = None
    timezone: OptStr = None
    latitude: float | str | None = None
    longitude: float | str | None = None
    ip: OptStr = None


class KlaviyoProfileAttributes(_Prepared):
    """The ``attributes`` of a Klaviyo profile resource."""

    _datetime_fields = ("created", "updated", "last_event_date")

    email: OptStr = None
    phone_number: OptStr = None
    external_id: OptStr = None
    anonymous_id: OptStr = None
    first_name: OptStr = None
    last_name: OptStr = None
    organization: OptStr = None
    locale: OptStr = None
    title: OptStr = None
    image: OptStr = None
    created: Timestamp = None
    updated: Timestamp = None
    last_event_date: Timestamp = None
    location: Annotated[KlaviyoLocation | None, BeforeValidator(_dict_or_none)] = None
    properties: JsonDict = Field(default_factory=dict)
    subscriptions: Annotated[dict[str, Any] | None, BeforeValidator(_dict_or_none)] = None


_RESOURCE_KEYS = frozenset({"type", "id", "attributes", "relationships", "links", "meta"})


class KlaviyoProfile(_Model):
    """A Klaviyo profile, as the JSON:API resource ``{"type":"profile","id":..,"attributes":{..}}``.

    A flat object (``{"id":.., "email":..}``, e.g. a CDC row) is accepted too: its non-resource keys become
    the attributes.
    """

    type: Literal["profile"] = "profile"
    id: Id
    attributes: KlaviyoProfileAttributes = Field(default_factory=KlaviyoProfileAttributes)

    @model_validator(mode="before")
    @classmethod
    def _flat_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "attributes" not in data:
            attributes = {key: item for key, item in data.items() if key not in _RESOURCE_KEYS}
            data = {key: item for key, item in data.items() if key in _RESOURCE_KEYS}
            data["attributes"] = attributes
        return data


Record = Customer | Transaction | KlaviyoProfile
"""Any record a change event carries."""
