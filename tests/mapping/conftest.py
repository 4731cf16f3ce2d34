"""Sample source records, shaped like ``model_dump(mode="json")`` of ``consumer.records``."""

from __future__ import annotations

from typing import Any

import pytest


def address(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "A1",
        "first_name": "Ann",
        "last_name": "Lee",
        "company": "ACME",
        "address_1": "1 Main St",
        "address_2": "Suite 2",
        "address_3": None,
        "city": "Springfield",
        "region": "IL",
        "country": "US",
        "postal_code": "62701",
        "phone_number": "+15552345678",
        "is_primary_billing": True,
        "is_primary_shipping": False,
    }
    return base | overrides


@pytest.fixture
def customer() -> dict[str, Any]:
    billing = address()
    return {
        "id": "C42",
        "customer_number": "0042",
        "first_name": " Ann ",
        "last_name": "Lee",
        "email_address": "  Ann.Lee@Example.ORG ",
        "company": "ACME",
        "phone_number": "(555) 234-5678",
        "comment": None,
        "custom_fields": [{"name": "Tier", "value": "gold"}],
        "addresses": [address(id="A0", is_primary_billing=False, city="Shelbyville"), billing],
        "primary_billing_address": billing,
    }


@pytest.fixture
def transaction() -> dict[str, Any]:
    billing = address(is_primary_shipping=True)
    return {
        "id": "T9",
        "transaction_number": "SO-1001",
        "customer_id": "C42",
        "email_address": "ann.lee@example.org",
        "type": "Order",
        "status": "Complete",
        "discount_amount": "5.00",
        "tax_amount": "1.20",
        "shipping_amount": "4.99",
        "subtotal": "20.00",
        "total": "21.19",
        "total_qty": "3",
        "created_datetime": "2024-05-06T07:08:09Z",
        "lines": [
            {
                "sequence_number": 1,
                "sku": "APL-1",
                "description": "Apple",
                "qty": "2",
                "unit_price": "5.00",
                "extended_price": "10.00",
                "discount_amount": None,
                "line_info": {"Order Qty": "2"},
                "options": {},
            },
            {
                "sequence_number": 2,
                "sku": "PR-2",
                "description": "Pear",
                "qty": "1",
                "unit_price": "10.00",
                "extended_price": "10.00",
                "discount_amount": None,
                "line_info": {},
                "options": {"size": "L"},
            },
        ],
        "addresses": [billing],
        "billing_address": billing,
        "shipping_address": billing,
    }


@pytest.fixture
def profile() -> dict[str, Any]:
    return {
        "type": "profile",
        "id": "01H8TVABCDEFGHJKMNPQRSTVWX",
        "attributes": {
            "email": "ann.lee@example.org",
            "phone_number": "+15552345678",
            "external_id": None,
            "first_name": "Ann",
            "last_name": "Lee",
            "organization": "ACME",
            "title": None,
            "location": {
                "address1": "1 Main St",
                "address2": None,
                "city": "Springfield",
                "country": "United States",
                "region": "IL",
                "zip": "62701",
                "timezone": "America/Chicago",
            },
            "properties": {"addresses": [{"street": "2 Side St", "city": "Capital City"}]},
            "created": "2024-01-01T00:00:00Z",
            "updated": "2024-05-01T00:00:00Z",
        },
    }
