"""Typed records: coercions, computed addresses, leniency and lossless round-trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from consumer.records import (
    Customer,
    CustomerAddress,
    KlaviyoProfile,
    Transaction,
    TransactionAddress,
    parse_datetime,
)

LONG = ("Ünïcødé 名前 🚀 " * 800)[:10_000]


def _customer(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "1001",
        "first_name": "Zoë",
        "last_name": "Ñúñez-李",
        "email_address": "zoe@example.com",
        "addresses": [
            {"id": "A1", "city": "Oslo", "is_primary_shipping": True},
            {"id": "A2", "city": "Bergen", "is_primary_billing": True},
        ],
    }
    data.update(overrides)
    return data


def test_customer_id_accepts_int_and_is_required() -> None:
    assert Customer.model_validate({"id": 1001}).id == "1001"
    with pytest.raises(ValidationError) as info:
        Customer.model_validate({"first_name": "A"})
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(("id",), "missing")]
    with pytest.raises(ValidationError):
        Customer.model_validate({"id": "  "})


def test_a_transaction_id_may_be_missing_for_the_order_flow_to_report() -> None:
    assert Transaction.model_validate({"id": 7}).id == "7"
    assert Transaction.model_validate({"id": " T-1 "}).id == "T-1"
    for missing in ({}, {"id": None}, {"id": ""}, {"id": "   "}):
        assert Transaction.model_validate({**missing, "total": "5"}).id is None


def test_primary_billing_address_prefers_flag_then_first() -> None:
    customer = Customer.model_validate(_customer())
    assert customer.primary_billing_address is not None
    assert customer.primary_billing_address.id == "A2"
    no_flag = Customer.model_validate(_customer(addresses=[{"id": "X"}, {"id": "Y"}]))
    assert no_flag.primary_billing_address == CustomerAddress(id="X")
    assert Customer.model_validate({"id": "1"}).primary_billing_address is None
    # exposed to path-based mappings through model_dump
    assert customer.model_dump()["primary_billing_address"]["city"] == "Bergen"


def test_custom_fields_normalised_from_dict_and_variants() -> None:
    from_dict = Customer.model_validate({"id": "1", "custom_fields": {"SubscribeProfile": "true", "LIST_VIP": 1}})
    from_list = Customer.model_validate(
        {"id": "1", "custom_fields": [{"name": "SubscribeProfile", "value": "true"}, {"Name": "LIST_VIP", "Value": 1}]}
    )
    assert from_dict.custom_fields == from_list.custom_fields
    assert from_dict.custom_field("SubscribeProfile") == "true"
    assert from_dict.custom_field("subscribeprofile") == "true"
    assert from_dict.custom_field("missing", "d") == "d"
    assert Customer.model_validate({"id": "1", "custom_fields": None}).custom_fields == []


def test_nulls_become_empty_and_booleans_default_false() -> None:
    customer = Customer.model_validate(
        {"id": "1", "addresses": [{"id": "a", "is_primary_billing": None}], "external_ids": None}
    )
    assert customer.addresses[0].is_primary_billing is False
    assert customer.external_ids == []


def test_datetimes_are_aware_and_unreadable_ones_are_kept_raw() -> None:
    customer = Customer.model_validate(
        {"id": "1", "created_datetime": "2024-01-05T10:00:00", "updated_datetime": "not a date"}
    )
    assert customer.created_datetime == datetime(2024, 1, 5, 10, tzinfo=UTC)
    assert customer.updated_datetime is None
    assert customer.model_extra == {"updated_datetime_raw": "not a date"}
    assert Customer.model_validate({"id": "1", "created_datetime": ""}).model_extra == {}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-05T10:00:00Z", datetime(2024, 1, 5, 10, tzinfo=UTC)),
        ("2024-01-05T12:00:00+02:00", datetime(2024, 1, 5, 12, tzinfo=timezone(timedelta(hours=2)))),
        ("2024-01-05 10:00:00", datetime(2024, 1, 5, 10, tzinfo=UTC)),
        ("2024-01-05T10:00:00.1234567Z", datetime(2024, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)),
        (1704448800, datetime(2024, 1, 5, 10, tzinfo=UTC)),
        (1704448800000, datetime(2024, 1, 5, 10, tzinfo=UTC)),
        (1704448800000000, datetime(2024, 1, 5, 10, tzinfo=UTC)),
        (1704448800000000000, datetime(2024, 1, 5, 10, tzinfo=UTC)),
        ("1704448800000", datetime(2024, 1, 5, 10, tzinfo=UTC)),
        ("/Date(1704448800000)/", datetime(2024, 1, 5, 10, tzinfo=UTC)),
        ("Fri, 05 Jan 2024 10:00:00 GMT", datetime(2024, 1, 5, 10, tzinfo=UTC)),
        ("nope", None),
        (True, None),
        (float("nan"), None),
        (10**40, None),
    ],
)
def test_parse_datetime(raw: Any, expected: datetime | None) -> None:
    assert parse_datetime(raw) == expected
    if expected is not None:
        assert parse_datetime(raw).tzinfo is not None  # type: ignore[union-attr]


def _transaction(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": 77,
        "transaction_number": "SO-77",
        "customer_id": 1001,
        "email_address": "zoe@example.com",
        "type": "Order",
        "status": "Complete",
        "subtotal": "100.00",
        "tax_amount": 8.25,
        "shipping_amount": 0,
        "discount_amount": None,
        "total": "108.25",
        "total_qty": "3",
        "created_datetime": "2024-01-05T10:00:00Z",
        "lines": [
            {"id": 1, "sequence_number": "1", "sku": "SKU-1", "qty": 2, "unit_price": "25.5", "line_info": None},
            {"id": 2, "sequence_number": 2, "sku": "SKU-2", "qty": "1", "unit_price": 49, "options": {"size": "L"}},
        ],
        "addresses": [
            {"type": "Shipping", "city": "Oslo"},
            {"type": "Billing", "city": "Bergen"},
        ],
        "payments": [{"method": "card", "amount": 108.25}],
        "notes": None,
    }
    data.update(overrides)
    return data


def test_transaction_money_lines_and_addresses() -> None:
    transaction = Transaction.model_validate(_transaction())
    assert transaction.id == "77"
    assert transaction.total == Decimal("108.25")
    assert transaction.tax_amount == Decimal("8.25")
    assert transaction.discount_amount is None
    assert transaction.total_qty == Decimal(3)
    assert [line.sequence_number for line in transaction.lines] == [1, 2]
    assert transaction.lines[0].qty == Decimal(2)
    assert transaction.lines[0].unit_price == Decimal("25.5")
    assert transaction.lines[0].line_info == {}
    assert transaction.lines[1].options == {"size": "L"}
    assert transaction.notes == []
    assert transaction.billing_address is not None and transaction.billing_address.city == "Bergen"
    assert transaction.shipping_address is not None and transaction.shipping_address.city == "Oslo"


def test_transaction_primary_flags_win_over_type() -> None:
    transaction = Transaction.model_validate(
        _transaction(
            addresses=[
                {"type": "Billing", "city": "A"},
                {"type": "Shipping", "city": "B", "is_primary_billing": True, "is_primary_shipping": True},
            ]
        )
    )
    assert transaction.billing_address == transaction.shipping_address
    assert transaction.billing_address is not None and transaction.billing_address.city == "B"
    assert Transaction.model_validate(_transaction(addresses=[{"type": "Other"}])).billing_address is None
    assert Transaction.model_validate(_transaction(addresses=[])).shipping_address is None


@pytest.mark.parametrize("bad", ["abc", "NaN", "1,000.00", True, {"x": 1}])
def test_transaction_non_numeric_money_is_a_validation_error(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        Transaction.model_validate(_transaction(total=bad))
    assert info.value.errors()[0]["loc"] == ("total",)


def test_blank_money_is_none() -> None:
    assert Transaction.model_validate(_transaction(total="  ")).total is None


def test_klaviyo_profile_resource_and_flat_form() -> None:
    resource = {
        "type": "profile",
        "id": "01GDDKASAP8TKDDA2GRZDSVP4H",
        "attributes": {
            "email": "sarah@example.com",
            "phone_number": "+15005550006",
            "created": "2022-11-08T00:00:00+00:00",
            "location": {"city": "New York", "latitude": "40.7128", "longitude": -74.006, "zip": 10017},
            "properties": {"pseudonym": "Dr. Octopus"},
            "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
            "predictive_analytics": {"historic_clv": 93.87},
        },
        "links": {"self": "https://a.klaviyo.com/api/profiles/01GDDKASAP8TKDDA2GRZDSVP4H/"},
    }
    profile = KlaviyoProfile.model_validate(resource)
    attributes = profile.attributes
    assert attributes.created == datetime(2022, 11, 8, tzinfo=UTC)
    assert attributes.location is not None
    assert (attributes.location.latitude, attributes.location.longitude) == ("40.7128", -74.006)
    assert attributes.location.zip == "10017"
    assert attributes.properties == {"pseudonym": "Dr. Octopus"}
    assert attributes.subscriptions == {"email": {"marketing": {"consent": "SUBSCRIBED"}}}
    assert attributes.model_extra == {"predictive_analytics": {"historic_clv": 93.87}}
    assert profile.model_extra == {"links": {"self": "https://a.klaviyo.com/api/profiles/01GDDKASAP8TKDDA2GRZDSVP4H/"}}

    flat = KlaviyoProfile.model_validate({"id": "01X", "email": "a@b.c", "first_name": "A"})
    assert flat.attributes.email == "a@b.c" and flat.attributes.first_name == "A"
    with pytest.raises(ValidationError):
        KlaviyoProfile.model_validate({"type": "event", "id": "1", "attributes": {}})
    with pytest.raises(ValidationError):
        KlaviyoProfile.model_validate({"type": "profile", "attributes": {}})


@pytest.mark.parametrize(
    "record",
    [
        Customer.model_validate(
            _customer(comment=LONG, company="株式会社テスト", unknown_field={"nested": [LONG]}, created_datetime="x")
        ),
        Transaction.model_validate(_transaction(lines=[{"id": 1, "description": LONG, "qty": "1.000"}])),
        KlaviyoProfile.model_validate(
            {"type": "profile", "id": "01X", "attributes": {"first_name": LONG, "properties": {"k": LONG}}}
        ),
    ],
)
def test_round_trip_is_lossless(record: Customer | Transaction | KlaviyoProfile) -> None:
    model = type(record)
    assert model.model_validate(record.model_dump()) == record
    assert model.model_validate_json(record.model_dump_json()) == record
    assert model.model_validate(record.model_dump(mode="json")) == record


def test_long_unicode_values_survive_unchanged() -> None:
    customer = Customer.model_validate(_customer(comment=LONG))
    assert customer.comment == LONG and len(LONG) == 10_000
    assert customer.last_name == "Ñúñez-李"


def test_transaction_address_model_defaults() -> None:
    address = TransactionAddress.model_validate({"postal_code": 10017, "ship_date": "2024-01-01"})
    assert address.postal_code == "10017"
    assert address.is_primary_billing is False
    assert address.model_extra == {"ship_date": "2024-01-01"}
