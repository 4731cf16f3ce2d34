"""The shipped default collections, applied to sample records."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.catalog import (
    ADDRESS_VALUE_COULD_NOT_BE_READ,
    ORDER_EVENT_COULD_NOT_BE_CREATED,
    PROFILE_COULD_NOT_BE_CREATED,
    CatalogError,
    Flow,
)
from consumer.mapping import FLOW_KINDS, MappingCollection, default_collections, load_collections


@pytest.fixture(scope="module")
def defaults() -> dict[str, MappingCollection]:
    return default_collections()


def test_every_flow_has_a_default(defaults: dict[str, MappingCollection]) -> None:
    assert set(defaults) == {flow.slug for flow in FLOW_KINDS}
    for slug, collection in defaults.items():
        assert collection.slug == slug
        assert (collection.source, collection.target) == FLOW_KINDS[collection.flow]
        assert collection.origin == f"defaults/{slug}.yaml"
    assert set(load_collections(None)) == set(defaults)


@pytest.mark.parametrize("slug", ["add_profile_from_ipaas", "update_profile_from_ipaas"])
def test_profile_from_ipaas(defaults: dict[str, MappingCollection], customer: dict[str, Any], slug: str) -> None:
    built = defaults[slug].apply(customer)
    assert built == {
        "email": "Ann.Lee@Example.ORG",  # trimmed, case kept
        "first_name": "Ann",
        "last_name": "Lee",
        "phone_number": "+15552345678",
        "organization": "ACME",
        "location": {
            "address1": "1 Main St",
            "address2": "Suite 2",
            "city": "Springfield",
            "region": "IL",
            "country": "US",
            "zip": "62701",
        },
        "external_id": "C42",
    }


def test_profile_from_ipaas_without_address_or_phone(
    defaults: dict[str, MappingCollection], customer: dict[str, Any]
) -> None:
    customer.update(primary_billing_address=None, addresses=[], phone_number=None, company="  ")
    built = defaults["add_profile_from_ipaas"].apply(customer)
    assert "location" not in built and "phone_number" not in built and "organization" not in built
    assert built["external_id"] == "C42"


def test_profile_from_ipaas_bad_phone_is_reported_through_the_catalog(
    defaults: dict[str, MappingCollection], customer: dict[str, Any]
) -> None:
    customer["phone_number"] = "call 555-PRIVATE"
    with pytest.raises(CatalogError) as caught:
        defaults["add_profile_from_ipaas"].build(customer)
    error = caught.value
    assert error.entry is PROFILE_COULD_NOT_BE_CREATED
    assert error.flow is Flow.ADD_PROFILE_FROM_IPAAS
    assert not error.retryable
    assert error.detail is not None and "phone_number" in error.detail
    assert "PRIVATE" not in error.detail and "PRIVATE" not in str(error)


def test_placed_order(defaults: dict[str, MappingCollection], transaction: dict[str, Any]) -> None:
    built = defaults["placed_order_from_ipaas"].apply(transaction)
    billing = {
        "FirstName": "Ann",
        "LastName": "Lee",
        "Company": "ACME",
        "Address1": "1 Main St",
        "Address2": "Suite 2",
        "City": "Springfield",
        "RegionCode": "IL",
        "CountryCode": "US",
        "Zip": "62701",
        "Phone": "+15552345678",
    }
    assert built == {
        "metric": "Placed Order",
        "unique_id": "T9",
        "value": 21.19,
        "time": "2024-05-06T07:08:09+00:00",
        "profile": {"email": "ann.lee@example.org", "external_id": "C42"},
        "properties": {
            "OrderId": "SO-1001",
            "ItemNames": ["Apple", "Pear"],
            "DiscountValue": 5.0,
            "BillingAddress": billing,
            "ShippingAddress": billing,
        },
    }


def test_placed_order_falls_back_to_the_id_and_needs_an_id(
    defaults: dict[str, MappingCollection], transaction: dict[str, Any]
) -> None:
    collection = defaults["placed_order_from_ipaas"]
    transaction.update(transaction_number=None, lines=[], shipping_address=None)
    built = collection.apply(transaction)
    assert built["properties"]["OrderId"] == "T9"
    assert built["properties"]["ItemNames"] == []
    assert "ShippingAddress" not in built["properties"]
    transaction["id"] = None
    with pytest.raises(CatalogError) as caught:
        collection.build(transaction)
    assert caught.value.entry is ORDER_EVENT_COULD_NOT_BE_CREATED
    assert "unique_id" in (caught.value.detail or "")


def test_ordered_product(defaults: dict[str, MappingCollection], transaction: dict[str, Any]) -> None:
    collection = defaults["ordered_product_from_ipaas"]
    built = [collection.apply({**line, "transaction": transaction}) for line in transaction["lines"]]
    assert built[0] == {
        "metric": "Ordered Product",
        "unique_id": "T9:1:APL-1",
        "value": 10.0,
        "time": "2024-05-06T07:08:09+00:00",
        "profile": {"email": "ann.lee@example.org", "external_id": "C42"},
        "properties": {
            "OrderId": "SO-1001",
            "ProductID": "APL-1",
            "SKU": "APL-1",
            "ProductName": "Apple",
            "Quantity": 2.0,
            "ItemPrice": 5.0,
            "RowTotal": 10.0,
        },
    }
    assert built[1]["unique_id"] == "T9:2:PR-2"
    assert len({event["unique_id"] for event in built}) == len(built)


@pytest.mark.parametrize("slug", ["add_profile_to_ipaas", "update_profile_to_ipaas"])
def test_profile_to_ipaas(defaults: dict[str, MappingCollection], profile: dict[str, Any], slug: str) -> None:
    assert defaults[slug].apply(profile) == {
        "email_address": "ann.lee@example.org",
        "first_name": "Ann",
        "last_name": "Lee",
        "company": "ACME",
        "phone_number": "+15552345678",
    }


def test_add_profile_to_ipaas_requires_the_email(
    defaults: dict[str, MappingCollection], profile: dict[str, Any]
) -> None:
    profile["attributes"]["email"] = None
    with pytest.raises(CatalogError) as caught:
        defaults["add_profile_to_ipaas"].build(profile)
    assert caught.value.flow is Flow.ADD_PROFILE_TO_IPAAS
    assert "email_address" in (caught.value.detail or "")
    assert "email_address" not in defaults["update_profile_to_ipaas"].apply(profile)


@pytest.mark.parametrize("slug", ["add_profile_address_to_ipaas", "update_profile_address_to_ipaas"])
def test_profile_address_to_ipaas(defaults: dict[str, MappingCollection], profile: dict[str, Any], slug: str) -> None:
    assert defaults[slug].apply(profile) == {
        "address_1": "1 Main St",
        "city": "Springfield",
        "region": "IL",
        "country": "United States",
        "postal_code": "62701",
        "first_name": "Ann",
        "last_name": "Lee",
        "company": "ACME",
        "phone_number": "+15552345678",
    }
    profile["attributes"]["location"] = None
    assert set(defaults[slug].apply(profile)) == {"first_name", "last_name", "company", "phone_number"}


def test_defaults_with_the_records_models() -> None:
    records = pytest.importorskip("consumer.records")
    defaults = default_collections()
    customer = records.Customer(
        id=7, email_address="a@b.org", phone_number="555 234 5678", addresses=[{"city": "X", "postal_code": 1}]
    )
    built = defaults["add_profile_from_ipaas"].apply(customer.model_dump(mode="json"))
    assert built == {
        "email": "a@b.org",
        "phone_number": "+15552345678",
        "location": {"city": "X", "zip": "1"},
        "external_id": "7",
    }
    transaction = records.Transaction(
        id="T1", total="9.999", created_datetime="2024-01-02 03:04:05", lines=[{"sku": "S", "qty": "1.0"}]
    )
    dumped = transaction.model_dump(mode="json")
    order = defaults["placed_order_from_ipaas"].apply(dumped)
    assert order["value"] == 10.0 and order["time"] == "2024-01-02T03:04:05+00:00"
    line = defaults["ordered_product_from_ipaas"].apply({**dumped["lines"][0], "transaction": dumped})
    assert line["unique_id"] == "T1:S" and line["properties"]["Quantity"] == 1.0
    profile = records.KlaviyoProfile(id="01H", email="x@y.org", location={"zip": "10001"})
    address = defaults["add_profile_address_to_ipaas"].apply(profile.model_dump(mode="json"))
    assert address == {"postal_code": "10001"}


def test_a_list_position_the_profile_lacks_reads_as_address_value_could_not_be_read(
    profile: dict[str, Any],
) -> None:
    from consumer.mapping import parse_collection

    collection = parse_collection(
        """
flow: add_profile_address_to_ipaas
fields:
  address_1: attributes.properties.addresses[1].street
  city: {path: "attributes.properties.addresses[1].city"}
""",
        "user.yaml",
    )
    with pytest.raises(CatalogError) as caught:
        collection.build(profile)
    error = caught.value
    assert error.entry is ADDRESS_VALUE_COULD_NOT_BE_READ
    assert error.message == ADDRESS_VALUE_COULD_NOT_BE_READ.message
    assert error.detail is not None and "address_1" in error.detail and "position 1" in error.detail
    assert "Side St" not in error.detail
