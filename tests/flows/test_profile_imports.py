"""The linking rules of a profile written by a bulk import job: the row the per-record path's outcome allows, or
the per-record path itself."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.catalog import PROFILE_COULD_NOT_BE_CREATED, CatalogError, Flow
from consumer.flows.profile_imports import BulkProfile
from consumer.klaviyo import Location, Profile, ProfileAttributes
from consumer.klaviyo.importing import Identifier, ImportRejected

ADA = {"email": "ada@shop.test", "phone_number": "+15552345678", "external_id": "C1", "first_name": "Ada"}


def profile(pid: str, **attributes: Any) -> Profile:
    return Profile(id=pid, attributes=ProfileAttributes(**attributes))


def holding(*profiles: Profile) -> dict[Identifier, Profile]:
    found: dict[Identifier, Profile] = {}
    for p in profiles:
        for name in ("email", "phone_number", "external_id"):
            value = getattr(p.attributes, name)
            if value:
                found[(name, value.lower() if name == "email" else value)] = p
    return found


def never() -> dict[str, Any]:
    raise AssertionError("the Add mapping is not needed")


def test_a_new_customer_is_created_without_its_nulls() -> None:
    change = BulkProfile.created({**ADA, "title": None, "location": {"city": "London", "zip": None}})
    assert change.identifiers == {("email", "ada@shop.test"), ("phone_number", "+15552345678"), ("external_id", "C1")}
    assert change.eligible and change.size > 0
    row = change.resolve({})
    assert row is not None and row.profile_id is None
    assert row.attributes.to_request() == {**ADA, "location": {"city": "London"}}
    assert change.flow is Flow.ADD_PROFILE_FROM_IPAAS


@pytest.mark.parametrize("linked", [None, "C1"])
def test_a_profile_holding_the_email_unlinked_or_linked_to_this_customer_is_updated_by_id(linked: str | None) -> None:
    row = BulkProfile.created(ADA).resolve(holding(profile("P1", email="ada@shop.test", external_id=linked)))
    assert row is not None and row.profile_id == "P1" and row.attributes.external_id == "C1"


def test_a_profile_linked_to_another_customer_takes_the_per_record_path() -> None:
    assert BulkProfile.created(ADA).resolve(holding(profile("P1", email="ada@shop.test", external_id="C9"))) is None


def test_identifiers_on_two_profiles_take_the_per_record_path() -> None:
    held = holding(profile("P1", email="ada@shop.test"), profile("P2", phone_number="+15552345678"))
    assert BulkProfile.created(ADA).resolve(held) is None


def test_an_email_not_in_lower_case_is_not_eligible() -> None:
    assert not BulkProfile.created({**ADA, "email": "Ada@Shop.test"}).eligible


def test_a_null_that_would_clear_a_value_takes_the_per_record_path() -> None:
    holder = profile("P1", email="ada@shop.test", title="Countess", location=Location(city="London"))
    assert BulkProfile.created({**ADA, "title": None}).resolve(holding(holder)) is None
    assert BulkProfile.created({**ADA, "location": {"city": None}}).resolve(holding(holder)) is None
    row = BulkProfile.created({**ADA, "organization": None, "location": {"zip": None}}).resolve(holding(holder))
    assert row is not None and row.profile_id == "P1"  # nothing there to clear
    assert "organization" not in row.attributes.to_request()


def test_an_update_writes_the_linked_profile_with_the_update_mapping() -> None:
    change = BulkProfile.updated({**ADA, "last_name": "King"}, never)
    row = change.resolve(holding(profile("P1", email="ada@shop.test", external_id="C1")))
    assert row is not None and (row.profile_id, row.attributes.last_name) == ("P1", "King")
    assert change.flow is Flow.UPDATE_PROFILE_FROM_IPAAS


def test_an_update_whose_email_another_profile_holds_takes_the_per_record_path() -> None:
    held = holding(profile("P1", external_id="C1"), profile("P2", email="ada@shop.test"))
    assert BulkProfile.updated(ADA, never).resolve(held) is None


def test_an_update_without_external_id_finds_the_profile_by_email() -> None:
    attrs = {"email": "ada@shop.test", "title": "Countess"}
    row = BulkProfile.updated(attrs, never).resolve(holding(profile("P1", email="ada@shop.test", external_id="C7")))
    assert row is not None and row.profile_id == "P1"


def test_an_update_of_a_customer_never_sent_is_added_with_the_add_mapping() -> None:
    change = BulkProfile.updated({**ADA, "first_name": "Upd"}, lambda: {**ADA, "first_name": "Add"})
    row = change.resolve({})
    assert row is not None and row.profile_id is None and row.attributes.first_name == "Add"
    assert change.flow is Flow.ADD_PROFILE_FROM_IPAAS


def test_an_update_never_sent_whose_add_mapping_fails_raises_the_add_error() -> None:
    def failing() -> dict[str, Any]:
        raise CatalogError(PROFILE_COULD_NOT_BE_CREATED, "no email and no phone", flow=Flow.ADD_PROFILE_FROM_IPAAS)

    with pytest.raises(CatalogError) as caught:
        BulkProfile.updated({"external_id": "C1"}, failing).resolve({})
    assert caught.value.code == "PROFILE_COULD_NOT_BE_CREATED"


def test_an_add_mapping_with_identifiers_nobody_looked_up_takes_the_per_record_path() -> None:
    change = BulkProfile.updated({"external_id": "C1", "email": "ada@shop.test"}, lambda: {**ADA, "email": "x@y.test"})
    assert change.resolve({}) is None


def test_an_import_error_is_the_flow_s_entry_with_klaviyo_s_detail() -> None:
    change = BulkProfile.updated(ADA, never)
    change.resolve(holding(profile("P1", external_id="C1", email="ada@shop.test")))
    error = change.refused(ImportRejected("field 'phone_number': invalid: Invalid phone number format",
                                          field="phone_number", code="invalid"))
    assert error.code == "PROFILE_COULD_NOT_BE_UPDATED" and error.flow is Flow.UPDATE_PROFILE_FROM_IPAAS
    assert error.detail == ("Klaviyo's bulk import refused the profile: field 'phone_number': invalid: "
                            "Invalid phone number format")
