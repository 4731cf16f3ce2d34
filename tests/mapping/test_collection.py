"""Loading, validating and applying collection files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from consumer.catalog import Flow
from consumer.mapping import (
    InvalidValue,
    ListPositionMissing,
    MappingEvaluationError,
    MappingFileError,
    RequiredValueMissing,
    TypeMismatch,
    load_collection,
    load_collections,
    parse_collection,
)


def parse(text: str, name: str = "user.yaml") -> Any:
    return parse_collection(textwrap.dedent(text).lstrip("\n"), name)


def refused(text: str, name: str = "user.yaml") -> MappingFileError:
    with pytest.raises(MappingFileError) as caught:
        parse(text, name)
    return caught.value


def test_example_of_the_issue(customer: dict[str, Any]) -> None:
    collection = parse(
        """
        flow: add_profile_from_ipaas
        source: customer
        target: klaviyo_profile
        fields:
          email: {path: email_address, transforms: [trim, lower]}
          phone_number: {path: phone_number, transforms: [{e164: {default_country: "1"}}]}
          location.address1: {path: primary_billing_address.address_1}
          external_id: {path: id, required: true}
          properties.Source: {value: "iPaaS.com"}
          properties["Full Name"]: {paths: [first_name, last_name], transforms: [trim, join]}
          properties.Tier: custom_fields[0].value
          properties.TierByName: "custom_fields[name=Tier].value"
          properties.Cities: {path: "addresses[*].city"}
          properties.Second: addresses[1].city
        """
    )
    assert collection.flow is Flow.ADD_PROFILE_FROM_IPAAS
    assert collection.field("email") is not None and collection.field("email").line == 5
    assert collection.apply(customer) == {
        "email": "ann.lee@example.org",
        "phone_number": "+15552345678",
        "location": {"address1": "1 Main St"},
        "external_id": "C42",
        "properties": {
            "Source": "iPaaS.com",
            "Full Name": "Ann Lee",
            "Tier": "gold",
            "TierByName": "gold",
            "Cities": ["Shelbyville", "Springfield"],
            "Second": "Springfield",
        },
    }


@pytest.mark.parametrize("count", [0, 5])
def test_list_position_two_on_zero_and_five_addresses(count: int, customer: dict[str, Any]) -> None:
    collection = parse(
        """
        flow: update_profile_from_ipaas
        fields:
          location.city: addresses[2].city
        """
    )
    customer["addresses"] = [{"city": f"City {n}"} for n in range(count)]
    if count == 5:
        assert collection.apply(customer) == {"location": {"city": "City 2"}}
        return
    with pytest.raises(ListPositionMissing) as caught:
        collection.apply(customer)
    error = caught.value
    assert (error.target, error.path, error.index, error.length) == ("location.city", "addresses[2].city", 2, 0)
    assert str(error) == (
        "field 'location.city' path 'addresses[2].city': list position 2 is not present (the record has 0 entries)"
    )


def test_on_missing_position_null(customer: dict[str, Any]) -> None:
    collection = parse(
        """
        flow: add_profile_from_ipaas
        fields:
          location.city: {path: "addresses[7].city", on_missing_position: null}
          properties.X: {path: "addresses[7].city", on_missing_position: "null", transforms: [{default: n/a}]}
          external_id: id
        """
    )
    assert collection.apply(customer) == {"properties": {"X": "n/a"}, "external_id": "C42"}


def test_required_keep_null_and_constants(customer: dict[str, Any]) -> None:
    collection = parse(
        """
        flow: update_profile_from_ipaas
        keep_null: true
        fields:
          title: {path: comment}
          organization: {path: comment, keep_null: false}
          properties.Flags: {value: [1, {a: b}]}
          properties.Since: {value: 2024-01-02}
          email: {path: email_address, transforms: [trim], required: true}
        """
    )
    built = collection.apply(customer)
    assert built == {
        "title": None,
        "properties": {"Flags": [1, {"a": "b"}], "Since": "2024-01-02"},
        "email": "Ann.Lee@Example.ORG",
    }
    built["properties"]["Flags"].append(2)  # constants are copied, not shared
    assert collection.apply(customer)["properties"]["Flags"] == [1, {"a": "b"}]
    customer["email_address"] = "   "
    with pytest.raises(RequiredValueMissing) as caught:
        collection.apply(customer)
    assert caught.value.target == "email"
    assert isinstance(caught.value, MappingEvaluationError)


def test_evaluation_errors_name_field_and_path_not_values(customer: dict[str, Any]) -> None:
    collection = parse(
        """
        flow: add_profile_from_ipaas
        fields:
          properties.Odd: {path: "custom_fields[0].value[0]"}
        """
    )
    with pytest.raises(TypeMismatch) as caught:
        collection.apply(customer)
    assert caught.value.target == "properties.Odd"
    assert caught.value.path == "custom_fields[0].value[0]"
    assert "gold" not in str(caught.value)
    number = parse(
        """
        flow: add_profile_from_ipaas
        fields:
          properties.N: {path: first_name, transforms: [number]}
        """
    )
    with pytest.raises(InvalidValue) as invalid:
        number.apply(customer)
    assert invalid.value.target == "properties.N" and "Ann" not in str(invalid.value)


def test_unicode_and_very_long_values(customer: dict[str, Any]) -> None:
    collection = parse(
        """
        flow: add_profile_from_ipaas
        fields:
          first_name: {path: first_name, transforms: [trim]}
          properties["Größe — 大小"]: {path: 'custom_fields[0]["Wert ✓"]'}
          properties.Joined: {paths: [first_name, last_name], transforms: [{join: " · "}]}
        """
    )
    long_name = "Zoë " * 50_000
    customer.update(first_name=f"  {long_name}", last_name="Ørsted", custom_fields=[{"Wert ✓": "ja 👍"}])
    built = collection.apply(customer)
    assert built["first_name"] == long_name.strip()
    assert built["properties"]["Größe — 大小"] == "ja 👍"
    assert built["properties"]["Joined"] == f"  {long_name} · Ørsted"


# --- refusals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (  # unknown path root
            """
            flow: add_profile_from_ipaas
            fields:
              email: {path: email_address}
              first_name: {path: emial}
            """,
            4,
            ["a customer has no field 'emial'"],
        ),
        (  # unknown nested field
            """
            flow: add_profile_from_ipaas
            fields:
              location.city:
                path: primary_billing_address.cty
            """,
            4,
            ["'primary_billing_address' has no field 'cty'"],
        ),
        (  # key on a list
            """
            flow: add_profile_from_ipaas
            fields:
              location.city: addresses.city
            """,
            3,
            ["'addresses' is a list"],
        ),
        (  # bad transform
            """
            flow: add_profile_from_ipaas
            fields:
              email:
                path: email_address
                transforms:
                  - trim
                  - lowercase
            """,
            7,
            ["unknown transform 'lowercase'"],
        ),
        (  # bad transform argument: the line of the argument
            """
            flow: add_profile_from_ipaas
            fields:
              phone_number:
                path: phone_number
                transforms:
                  - e164:
                      default_country: "1"
                      on_invalid: ignore
            """,
            8,
            ["on_invalid must be"],
        ),
        (  # bad path in a default
            """
            flow: placed_order_from_ipaas
            fields:
              properties.OrderId: {path: transaction_number, transforms: [{default: {path: idd}}]}
            """,
            3,
            ["a transaction has no field 'idd'"],
        ),
        (  # YAML syntax error
            """
            flow: add_profile_from_ipaas
            fields:
              email: {path: email_address
              first_name: first_name
            """,
            4,
            ["not valid YAML"],
        ),
        (  # bad path syntax
            """
            flow: add_profile_from_ipaas
            fields:

              email: "addresses[x].city"
            """,
            4,
            ["bad path", "column 10"],
        ),
        ("flow: add_profile_form_ipaas\nfields: {email: email_address}\n", 1, ["unknown flow"]),
        ("flow: authorization\nfields: {email: email_address}\n", 1, ["unknown flow"]),
        ("flow: add_profile_from_ipaas\nsource: transaction\nfields: {email: email_address}\n", 2, ["maps source"]),
        ("flow: add_profile_from_ipaas\ntarget: nowhere\nfields: {email: x}\n", 2, ["unknown target"]),
        ("flow: add_profile_from_ipaas\nfeilds: {email: email_address}\n", 2, ["unknown key 'feilds'"]),
        ("flow: add_profile_from_ipaas\nfields:\n  email: {path: id, requird: true}\n", 3, ["unknown key 'requird'"]),
        (
            "flow: add_profile_from_ipaas\nfields:\n  email: {path: id, on_missing_position: skip}\n",
            3,
            ["on_missing_position must be"],
        ),
        ("flow: add_profile_from_ipaas\nfields:\n  email: {path: id, value: x}\n", 3, ["exactly one of"]),
        ("flow: add_profile_from_ipaas\nfields:\n  emial: email_address\n", 3, ["a Klaviyo profile has no field"]),
        ("flow: add_profile_from_ipaas\nfields:\n  location[0]: id\n", 3, ["names only"]),
        ("flow: add_profile_from_ipaas\nfields:\n  email: id\n  email: id\n", 4, ["duplicate key"]),
        (
            "flow: add_profile_from_ipaas\nfields:\n  location: {value: {}}\n  location.city: id\n",
            4,
            ["inside 'location'"],
        ),
        ("flow: add_profile_from_ipaas\nfields:\n  email: {path: id, required: yes please}\n", 3, ["true or false"]),
        ("flow: add_profile_from_ipaas\nfields: []\n", 2, ["fields must be"]),
        ("fields: {email: email_address}\n", None, ["flow is missing"]),
        ("", None, ["empty"]),
        ("- a\n- b\n", None, ["a mapping collection is a mapping"]),
        ("flow: add_profile_from_ipaas\nfields:\n  1: id\n", 3, ["keys must be text"]),
        ("flow: add_profile_from_ipaas\nfields:\n  email: !!binary aGVsbG8=\n", 3, ["binary values"]),
        ("flow: add_profile_from_ipaas\nfields:\n  email: !custom x\n", 3, ["not valid YAML"]),
        ("flow: add_profile_from_ipaas\nfields:\n  email: a\n---\nflow: x\n", 4, ["not valid YAML"]),
        ("flow: add_profile_from_ipaas\nextra_fields: [a.b]\nfields: {email: a}\n", 2, ["one plain field name"]),
    ],
)
def test_bad_files_are_refused_with_line_and_reason(text: str, line: int | None, words: list[str]) -> None:
    error = refused(text)
    assert error.file == "user.yaml"
    assert error.line == line, str(error)
    for word in words:
        assert word in error.reason, error.reason
    prefix = f"user.yaml, line {line}: " if line is not None else "user.yaml: "
    assert str(error).startswith(prefix)


def test_open_parts_accept_any_name_and_extra_fields_extend_the_root() -> None:
    parse(
        """
        flow: ordered_product_from_ipaas
        fields:
          properties["Order Qty"]: line_info["Order Qty"]
          properties.Size: options.size.deep[3]
          properties.Tier: transaction.custom_fields[0].value
        """
    )
    assert "loyalty_tier" in refused("flow: add_profile_from_ipaas\nfields: {properties.T: loyalty_tier}\n").reason
    parse("flow: add_profile_from_ipaas\nextra_fields: [loyalty_tier]\nfields: {properties.T: loyalty_tier.x}\n")


def test_json_files(tmp_path: Path, customer: dict[str, Any]) -> None:
    good = tmp_path / "add_profile_from_ipaas.json"
    good.write_text(json.dumps({"flow": "add_profile_from_ipaas", "fields": {"email": {"path": "email_address"}}}))
    assert load_collection(good).apply(customer) == {"email": "  Ann.Lee@Example.ORG "}

    bad_path = tmp_path / "bad.json"
    bad_path.write_text(
        '{\n  "flow": "add_profile_from_ipaas",\n  "fields": {\n    "email": {"path": "emial"}\n  }\n}\n'
    )
    with pytest.raises(MappingFileError) as caught:
        load_collection(bad_path)
    assert caught.value.line == 4 and "emial" in caught.value.reason

    syntax = tmp_path / "syntax.json"
    syntax.write_text('{\n  "flow": "add_profile_from_ipaas",\n  "fields": {\n    "email": \n  }\n}\n')
    with pytest.raises(MappingFileError) as caught:
        load_collection(syntax)
    assert caught.value.line == 5 and "not valid JSON" in caught.value.reason

    # tab-indented JSON that PyYAML cannot mark: the line is found by searching for the key
    tabs = tmp_path / "tabs.json"
    tabs.write_text('{\n\t"flow": "add_profile_from_ipaas",\n\t"fields": {\n\t\t"emial": "email_address"\n\t}\n}\n')
    with pytest.raises(MappingFileError) as caught:
        load_collection(tabs)
    assert caught.value.line == 4


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError) as caught:
        load_collection(tmp_path / "missing.yaml")
    assert "cannot be read" in caught.value.reason
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"flow: add_profile_from_ipaas\n\xff\xfe\n")
    with pytest.raises(MappingFileError) as caught:
        load_collection(binary)
    assert caught.value.line == 2
    with pytest.raises(MappingFileError):
        load_collection(tmp_path / "notes.txt")


# --- user directories ------------------------------------------------------------------------------------

_USER_PLACED_ORDER = """\
flow: placed_order_from_ipaas
fields:
  metric: {value: Order Placed}
  unique_id: {path: transaction_number, required: true}
  value: {path: total, transforms: [{number: {type: decimal, places: 2}}]}
"""


def test_a_user_directory_replaces_one_flow(tmp_path: Path, transaction: dict[str, Any]) -> None:
    (tmp_path / "placed_order_from_ipaas.yml").write_text(_USER_PLACED_ORDER)
    (tmp_path / "README.md").write_text("not a collection")
    collections = load_collections(tmp_path)
    placed = collections["placed_order_from_ipaas"]
    assert placed.origin == str(tmp_path / "placed_order_from_ipaas.yml")
    assert placed.apply(transaction) == {"metric": "Order Placed", "unique_id": "SO-1001", "value": "21.19"}
    assert collections["ordered_product_from_ipaas"].origin == "defaults/ordered_product_from_ipaas.yaml"
    assert len(collections) == 8


def test_user_directory_refusals(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError, match="does not exist"):
        load_collections(tmp_path / "nope")

    (tmp_path / "placed_order.yaml").write_text(_USER_PLACED_ORDER)
    with pytest.raises(MappingFileError, match="must be a flow slug"):
        load_collections(tmp_path)
    (tmp_path / "placed_order.yaml").unlink()

    (tmp_path / "ordered_product_from_ipaas.yaml").write_text(_USER_PLACED_ORDER)
    with pytest.raises(MappingFileError) as caught:
        load_collections(tmp_path)
    assert caught.value.line == 1 and "ordered_product_from_ipaas" in caught.value.reason
    (tmp_path / "ordered_product_from_ipaas.yaml").unlink()

    (tmp_path / "placed_order_from_ipaas.yaml").write_text(_USER_PLACED_ORDER)
    (tmp_path / "placed_order_from_ipaas.json").write_text("{}")
    with pytest.raises(MappingFileError, match="already maps"):
        load_collections(tmp_path)


def test_an_unforeseen_conversion_failure_is_still_an_evaluation_error(
    customer: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumer.mapping import transforms

    def explode(self: object, value: Any, source: Any) -> Any:
        raise ValueError(f"secret {value}")

    collection = parse("flow: add_profile_from_ipaas\nfields:\n  first_name: {path: first_name, transforms: [trim]}\n")
    monkeypatch.setattr(transforms.Trim, "apply", explode)
    with pytest.raises(InvalidValue) as caught:
        collection.apply(customer)
    assert caught.value.target == "first_name" and "trim" in caught.value.reason
    assert "Ann" not in str(caught.value)
