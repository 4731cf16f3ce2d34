"""The simulator's in-memory iPaaS.com company: Customers, their Customer Addresses, external-id links and
Transactions.

Rules: Customer ids are unique, emails are not; addresses are children of one Customer; an external-id link is
one external id per (table, system, internal id) and is found both ways; a deleted Customer's links read
``DELETED:<external id>``. Validation failures raise ``ApiError``, rendered as an ASP.NET ProblemDetails body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CUSTOMER_FIELDS = (
    "customer_number", "first_name", "last_name", "email_address", "company", "comment", "category_id",
    "phone_number",
)
ADDRESS_FIELDS = (
    "first_name", "last_name", "company", "address_1", "address_2", "address_3", "city", "region", "country",
    "postal_code", "phone_number", "email_address", "type",
)
ADDRESS_FLAGS = ("is_primary_billing", "is_primary_shipping")
DELETED_PREFIX = "DELETED:"
_WORD = re.compile(r"(?<!^)(?=[A-Z])")


def pascal(name: str) -> str:
    """``email_address`` -> ``EmailAddress`` (the C# property names iPaaS.com uses in messages and filters)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def snake(name: str) -> str:
    """``EmailAddress`` -> ``email_address``."""
    return _WORD.sub("_", name).lower() if not name.islower() else name


class ApiError(Exception):
    """An iPaaS.com error answer: status, title, optional detail and field errors."""

    def __init__(
        self, status: int, title: str, *, detail: str | None = None, errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": f"https://httpstatuses.io/{self.status}",
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            document["detail"] = self.detail
        if self.errors:
            document["errors"] = self.errors
        return document


def validation_error(errors: dict[str, list[str]]) -> ApiError:
    return ApiError(400, "One or more validation errors occurred.", errors=errors)


def not_found(what: str, record_id: str) -> ApiError:
    return ApiError(404, "Not Found", detail=f"{what} {record_id} was not found.")


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _id_order(record_id: str) -> tuple[int, int, str]:
    """Ids in creation order (the simulator's are numbers); a seeded platform id (``c-1001``) after them."""
    return (0, int(record_id), "") if record_id.isdigit() else (1, 0, record_id)


@dataclass(slots=True)
class CustomerRow:
    id: str
    fields: dict[str, Any]
    custom_fields: list[dict[str, Any]]
    created: datetime
    updated: datetime
    version: int = 1
    deleted: bool = False


@dataclass(slots=True)
class AddressRow:
    id: str
    customer_id: str
    fields: dict[str, Any]
    custom_fields: list[dict[str, Any]]
    created: datetime
    updated: datetime
    version: int = 1


@dataclass(slots=True)
class Limits:
    max_text_length: int = 255
    max_comment_length: int = 4000
    require_email: bool = True


@dataclass
class Store:
    """One simulated iPaaS.com company's data."""

    limits: Limits = field(default_factory=Limits)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    customers: dict[str, CustomerRow] = field(default_factory=dict)
    addresses: dict[str, AddressRow] = field(default_factory=dict)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: dict[tuple[str, int, str], str] = field(default_factory=dict)
    """(table, system id, internal id) -> external id."""
    writes: int = 0
    """Customer and address writes that changed something (the echo-loop tests read it)."""
    _next_customer: int = 100_001
    _next_address: int = 500_001
    _next_link: int = 900_001
    _link_ids: dict[tuple[str, int, str], int] = field(default_factory=dict)

    # --- validation ----------------------------------------------------------------------------------------------
    def _clean(self, body: Any, names: Iterable[str], flags: Iterable[str] = ()) -> tuple[dict[str, Any], Any]:
        if not isinstance(body, dict):
            raise validation_error({"$": ["The JSON value could not be converted to an object."]})
        errors: dict[str, list[str]] = {}
        values: dict[str, Any] = {}
        for name in names:
            if name not in body:
                continue
            value = body[name]
            if isinstance(value, bool | dict | list):
                errors.setdefault(pascal(name), []).append(f"The field {pascal(name)} must be a string.")
                continue
            if isinstance(value, int | float):
                value = str(value)
            limit = self.limits.max_comment_length if name == "comment" else self.limits.max_text_length
            if isinstance(value, str) and len(value) > limit:
                errors.setdefault(pascal(name), []).append(
                    f"The field {pascal(name)} must be a string with a maximum length of {limit}."
                )
                continue
            values[name] = value
        for name in flags:
            if name in body:
                value = body[name]
                if value is not None and not isinstance(value, bool):
                    errors.setdefault(pascal(name), []).append(f"The field {pascal(name)} must be true or false.")
                else:
                    values[name] = bool(value)
        custom = body.get("custom_fields")
        if custom is not None and not (
            isinstance(custom, list) and all(isinstance(item, dict) for item in custom)
        ):
            errors.setdefault("CustomFields", []).append("The field CustomFields must be a list of objects.")
        if errors:
            raise validation_error(errors)
        return values, custom

    def now(self) -> datetime:
        return self.clock()

    # --- customers -----------------------------------------------------------------------------------------------
    def get_customer(self, customer_id: str) -> CustomerRow:
        row = self.customers.get(customer_id)
        if row is None or row.deleted:
            raise not_found("Customer", customer_id)
        return row

    def create_customer(self, body: Any, *, customer_id: str | None = None) -> CustomerRow:
        """A new Customer; ``customer_id`` seeds one under a platform's own id (the simulator numbers the others)."""
        values, custom = self._clean(body, CUSTOMER_FIELDS)
        if self.limits.require_email and not (values.get("email_address") or "").strip():
            raise validation_error({"EmailAddress": ["The EmailAddress field is required."]})
        if customer_id is not None and customer_id in self.customers:
            raise ValueError(f"customer {customer_id!r} exists")
        now = self.now()
        row = CustomerRow(
            id=customer_id or str(self._next_customer),
            fields={name: values.get(name) for name in CUSTOMER_FIELDS},
            custom_fields=list(custom or []),
            created=now,
            updated=now,
        )
        if customer_id is None:
            self._next_customer += 1
        self.customers[row.id] = row
        self.writes += 1
        return row

    def update_customer(self, customer_id: str, body: Any) -> CustomerRow:
        row = self.get_customer(customer_id)
        values, custom = self._clean(body, CUSTOMER_FIELDS)
        changed = {name: value for name, value in values.items() if row.fields.get(name) != value}
        if custom is not None and custom != row.custom_fields:
            row.custom_fields = list(custom)
            changed["custom_fields"] = custom
        if changed:
            row.fields.update({k: v for k, v in changed.items() if k != "custom_fields"})
            row.updated = self.now()
            row.version += 1
            self.writes += 1
        return row

    def delete_customer(self, customer_id: str) -> None:
        """Delete a Customer: its links then read ``DELETED:<external id>`` (admin only)."""
        row = self.get_customer(customer_id)
        row.deleted = True
        for key, external in list(self.links.items()):
            if key[0] == "customer" and key[2] == customer_id and not external.startswith(DELETED_PREFIX):
                self.links[key] = DELETED_PREFIX + external

    def find_customers(self, action: str | None, filters: dict[str, str]) -> list[CustomerRow]:
        if action is None:
            raise ApiError(400, "Bad Request", detail="The action parameter is required (equals or contains).")
        action = action.lower()
        if action not in ("equals", "contains"):
            raise ApiError(400, "Bad Request", detail=f"Unknown action '{action}'; use equals or contains.")
        conditions: list[tuple[str, str]] = []
        for name, value in filters.items():
            field_name = snake(name)
            if field_name not in CUSTOMER_FIELDS and field_name != "id":
                raise ApiError(400, "Bad Request", detail=f"Customers cannot be filtered by '{name}'.")
            conditions.append((field_name, value))
        if not conditions:
            raise ApiError(400, "Bad Request", detail="A filter such as EmailAddress=... is required.")

        def matches(row: CustomerRow) -> bool:
            for name, wanted in conditions:
                have = row.id if name == "id" else row.fields.get(name)
                if not isinstance(have, str):
                    return False
                if action == "equals" and have != wanted:
                    return False
                if action == "contains" and wanted.casefold() not in have.casefold():
                    return False
            return True

        rows = [row for row in self.customers.values() if not row.deleted and matches(row)]
        return sorted(rows, key=lambda row: _id_order(row.id))

    # --- addresses -----------------------------------------------------------------------------------------------
    def list_addresses(self, customer_id: str) -> list[AddressRow]:
        self.get_customer(customer_id)
        rows = [row for row in self.addresses.values() if row.customer_id == customer_id]
        return sorted(rows, key=lambda row: int(row.id))

    def get_address(self, customer_id: str, address_id: str) -> AddressRow:
        self.get_customer(customer_id)
        row = self.addresses.get(address_id)
        if row is None or row.customer_id != customer_id:
            raise not_found("Customer Address", address_id)
        return row

    def create_address(self, customer_id: str, body: Any) -> AddressRow:
        self.get_customer(customer_id)
        values, custom = self._clean(body, ADDRESS_FIELDS, ADDRESS_FLAGS)
        now = self.now()
        row = AddressRow(
            id=str(self._next_address),
            customer_id=customer_id,
            fields={**{name: values.get(name) for name in ADDRESS_FIELDS},
                    **{name: values.get(name, False) for name in ADDRESS_FLAGS}},
            custom_fields=list(custom or []),
            created=now,
            updated=now,
        )
        self._next_address += 1
        self.addresses[row.id] = row
        self.writes += 1
        return row

    def update_address(self, customer_id: str, address_id: str, body: Any) -> AddressRow:
        row = self.get_address(customer_id, address_id)
        values, custom = self._clean(body, ADDRESS_FIELDS, ADDRESS_FLAGS)
        changed = {name: value for name, value in values.items() if row.fields.get(name) != value}
        if custom is not None and custom != row.custom_fields:
            row.custom_fields = list(custom)
            changed["custom_fields"] = custom
        if changed:
            row.fields.update({k: v for k, v in changed.items() if k != "custom_fields"})
            row.updated = self.now()
            row.version += 1
            self.writes += 1
        return row

    # --- external ids --------------------------------------------------------------------------------------------
    @staticmethod
    def _link_body(body: Any, *, with_internal: bool) -> tuple[str, int, str, str | None]:
        if not isinstance(body, dict):
            raise validation_error({"$": ["The JSON value could not be converted to an object."]})
        errors: dict[str, list[str]] = {}
        table, system_id, external = body.get("table_name"), body.get("system_id"), body.get("external_id")
        internal = body.get("internal_id")
        if not isinstance(table, str) or not table.strip():
            errors["TableName"] = ["The TableName field is required."]
        if isinstance(system_id, bool) or not isinstance(system_id, int):
            errors["SystemId"] = ["The SystemId field is required and must be a number."]
        if not isinstance(external, str | int) or isinstance(external, bool) or str(external) == "":
            errors["ExternalId"] = ["The ExternalId field is required."]
        if with_internal and (not isinstance(internal, str | int) or isinstance(internal, bool) or internal == ""):
            errors["InternalId"] = ["The InternalId field is required."]
        if errors:
            raise validation_error(errors)
        assert isinstance(table, str) and isinstance(system_id, int)
        return table.strip().lower(), system_id, str(external), (str(internal) if internal is not None else None)

    def update_external_id(self, body: Any) -> dict[str, Any]:
        table, system_id, external, internal = self._link_body(body, with_internal=True)
        assert internal is not None
        key = (table, system_id, internal)
        link_id = self._link_ids.setdefault(key, self._next_link)
        if link_id == self._next_link:
            self._next_link += 1
        self.links[key] = external
        return {"id": link_id, "table_name": body["table_name"], "system_id": system_id, "external_id": external,
                "internal_id": internal, "tracking_guid": body.get("tracking_guid")}

    def lookup_special(self, body: Any) -> str | None:
        """external -> internal id (a deleted link answers ``DELETED:<internal id>``)."""
        table, system_id, external, _ = self._link_body(body, with_internal=False)
        for (link_table, link_system, internal), value in self.links.items():
            if link_table == table and link_system == system_id:
                if value == external:
                    return internal
                if value == DELETED_PREFIX + external:
                    return DELETED_PREFIX + internal
        return None

    def lookup_external(self, internal_id: str, system_id: int, table: str) -> str | None:
        return self.links.get((table.strip().lower(), system_id, internal_id))

    def links_of(self, table: str, internal_id: str) -> list[dict[str, Any]]:
        return [
            {"id": self._link_ids.get(key), "system_id": key[1], "system_name": "Klaviyo",
             "external_id": value, "internal_id": key[2]}
            for key, value in self.links.items()
            if key[0] == table.lower() and key[2] == internal_id
        ]

    # --- rendering -----------------------------------------------------------------------------------------------
    def render_customer(self, row: CustomerRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "tracking_guid": None,
            **row.fields,
            "created_datetime": iso(row.created),
            "updated_datetime": iso(row.updated),
            "custom_fields": list(row.custom_fields),
            "external_ids": self.links_of("customer", row.id),
            "extension_fields": [],
        }

    def render_address(self, row: AddressRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "customer_id": row.customer_id,
            **row.fields,
            "created_datetime": iso(row.created),
            "updated_datetime": iso(row.updated),
            "custom_fields": list(row.custom_fields),
            "external_ids": self.links_of("address", row.id),
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything, for ``/__admin/state``: customers (with addresses and versions), links, transactions."""
        customers = []
        for row in sorted(self.customers.values(), key=lambda r: _id_order(r.id)):
            document = self.render_customer(row)
            document["version"] = row.version
            document["deleted"] = row.deleted
            document["addresses"] = [
                {**self.render_address(a), "version": a.version}
                for a in sorted(self.addresses.values(), key=lambda a: int(a.id)) if a.customer_id == row.id
            ]
            customers.append(document)
        links = [
            {"table_name": table, "system_id": system_id, "internal_id": internal, "external_id": external}
            for (table, system_id, internal), external in self.links.items()
        ]
        return {"customers": customers, "external_ids": links, "transactions": list(self.transactions.values()),
                "writes": self.writes}
