"""iPaaS.com request bodies and the names the API uses.

Responses are the typed records of ``consumer.records`` (``Customer``, ``CustomerAddress``, ``Transaction``):
snake_case on the wire, extra fields kept. Request bodies are the writable fields only, validated here so a
misspelt field fails in our code, not at iPaaS.com; they are dumped with ``exclude_unset`` so a field the caller
did not give is not sent (and ``None`` is sent as ``null``, clearing it).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

# External-id table names, as the integration template's ConvertMappingCollectionTypeToTableName spells them.
CUSTOMER_TABLE = "customer"
ADDRESS_TABLE = "Address"
TRANSACTION_TABLE = "transaction"

# Which API (base path) serves a table's external ids (template: MappingCollectionTypeToEndpointURL).
TABLE_APIS: dict[str, str] = {
    CUSTOMER_TABLE.lower(): "customers",
    ADDRESS_TABLE.lower(): "customers",
    "customer category": "customers",
    TRANSACTION_TABLE.lower(): "transactions",
    "transaction line": "transactions",
    "transaction address": "transactions",
}

DELETED_PREFIX = "DELETED:"
"""A looked-up external id starting with this marks a deleted link."""

CUSTOMER_WRITABLE = (
    "customer_number",
    "first_name",
    "last_name",
    "email_address",
    "company",
    "comment",
    "category_id",
    "phone_number",
    "custom_fields",
)
ADDRESS_WRITABLE = (
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "address_3",
    "city",
    "region",
    "country",
    "postal_code",
    "phone_number",
    "email_address",
    "is_primary_billing",
    "is_primary_shipping",
    "type",
    "custom_fields",
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class CustomerWrite(_Body):
    """Body of ``POST customers/v2/Customer`` and ``PUT customers/v2/Customer/{id}``."""

    customer_number: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email_address: str | None = None
    company: str | None = None
    comment: str | None = None
    category_id: str | None = None
    phone_number: str | None = None
    custom_fields: list[dict[str, Any]] | None = None


class AddressWrite(_Body):
    """Body of ``POST customers/v2/Customer/{id}/Address`` and ``PUT .../Address/{address_id}``."""

    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    address_1: str | None = None
    address_2: str | None = None
    address_3: str | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None
    postal_code: str | None = None
    phone_number: str | None = None
    email_address: str | None = None
    is_primary_billing: bool | None = None
    is_primary_shipping: bool | None = None
    type: str | None = None
    custom_fields: list[dict[str, Any]] | None = None


class _LinkBody(_Body):
    """External-id bodies leave nulls out (the template serialises them with ``NullValueHandling.Ignore``)."""

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ExternalIdUpdate(_LinkBody):
    """Body of ``POST v2/External/UpdateExternalId`` (template ``ExternalIdRequest``)."""

    table_name: str
    system_id: int
    external_id: str
    internal_id: str
    tracking_guid: str | None = None


class ExternalIdLookup(_LinkBody):
    """Body of ``POST v2/External/LookupSpecial`` (template ``ExternalIdSpecialRequest``)."""

    table_name: str
    system_id: int
    external_id: str
    tracking_guid: str | None = None


def api_of_table(table: str) -> str:
    """The API (``customers``, ``transactions``) whose ``v2/External`` endpoints hold ``table``'s links."""
    try:
        return TABLE_APIS[table.lower()]
    except KeyError:
        raise ValueError(f"unknown external-id table {table!r}") from None
