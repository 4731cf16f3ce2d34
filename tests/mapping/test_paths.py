"""Path syntax and evaluation."""

from __future__ import annotations

import pytest

from consumer.mapping import (
    ListPositionMissing,
    MappingEvaluationError,
    PathSyntaxError,
    TypeMismatch,
    evaluate,
    parse_path,
)
from consumer.mapping.paths import Index, Key, Select, Wildcard


def _addresses(count: int) -> dict[str, object]:
    return {"addresses": [{"city": f"City {n}", "zip": None} for n in range(count)]}


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("email_address", (Key("email_address"),)),
        ("primary_billing_address.city", (Key("primary_billing_address"), Key("city"))),
        ("addresses[1].city", (Key("addresses"), Index(1), Key("city"))),
        ("addresses[-1].city", (Key("addresses"), Index(-1), Key("city"))),
        ("lines[*].description", (Key("lines"), Wildcard(), Key("description"))),
        ('properties["Order Qty"]', (Key("properties"), Key("Order Qty"))),
        ("properties['a.b[c]']", (Key("properties"), Key("a.b[c]"))),
        ('properties["say \\"hi\\""]', (Key("properties"), Key('say "hi"'))),
        ('["Order Qty"].x', (Key("Order Qty"), Key("x"))),
        ("m[0][1]", (Key("m"), Index(0), Index(1))),
        ("properties.$source", (Key("properties"), Key("$source"))),
        ("properties.Größe", (Key("properties"), Key("Größe"))),
    ],
)
def test_parse(text: str, segments: tuple[object, ...]) -> None:
    path = parse_path(text)
    assert path.segments == segments
    assert path.text == text


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("", 1),
        (".a", 1),
        ("a.", 2),
        ("a..b", 3),
        ("a[", 2),
        ("a[x]", 2),
        ("a[1.5]", 2),
        ("a[]", 2),
        ('a["x"', 6),
        ('a[""]', 2),
        ("a b", 2),
        ("a]", 2),
        ("a.[0]", 3),
        ('a["x"]b', 7),
    ],
)
def test_parse_refuses(text: str, column: int) -> None:
    with pytest.raises(PathSyntaxError) as caught:
        parse_path(text)
    assert caught.value.column == column


def test_present_null_and_absent_values() -> None:
    source = {"a": {"b": 1, "n": None}, "top": "x"}
    assert evaluate(parse_path("top"), source) == "x"
    assert evaluate(parse_path("a.b"), source) == 1
    assert evaluate(parse_path("a.n"), source) is None
    assert evaluate(parse_path("a.missing"), source) is None
    assert evaluate(parse_path("missing.deeper.still"), source) is None
    assert evaluate(parse_path("a.n.deeper"), source) is None


def test_list_positions_are_zero_based_and_negative_from_the_end() -> None:
    source = _addresses(5)
    assert evaluate(parse_path("addresses[0].city"), source) == "City 0"
    assert evaluate(parse_path("addresses[2].city"), source) == "City 2"
    assert evaluate(parse_path("addresses[-1].city"), source) == "City 4"
    assert evaluate(parse_path("addresses[2].zip"), source) is None


def test_missing_list_position_raises_with_index_and_length() -> None:
    with pytest.raises(ListPositionMissing) as caught:
        evaluate(parse_path("addresses[2].city"), _addresses(0))
    error = caught.value
    assert (error.path, error.index, error.length) == ("addresses[2].city", 2, 0)
    assert isinstance(error, MappingEvaluationError)

    with pytest.raises(ListPositionMissing) as caught:
        evaluate(parse_path("addresses[2].city"), _addresses(2))
    assert (caught.value.index, caught.value.length) == (2, 2)

    with pytest.raises(ListPositionMissing) as caught:
        evaluate(parse_path("addresses[-3]"), _addresses(2))
    assert caught.value.index == -3


@pytest.mark.parametrize("source", [{}, {"addresses": None}])
def test_position_in_an_absent_list_is_missing(source: dict[str, object]) -> None:
    with pytest.raises(ListPositionMissing) as caught:
        evaluate(parse_path("addresses[0].city"), source)
    assert caught.value.length == 0


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("name[0]", {"name": "SECRET-VALUE"}),
        ("name.first", {"name": "SECRET-VALUE"}),
        ("items.first", {"items": ["SECRET-VALUE"]}),
        ("obj[0]", {"obj": {"a": "SECRET-VALUE"}}),
        ("n.x", {"n": 5}),
        ("items[*]", {"items": "SECRET-VALUE"}),
        ("lines[*].name[0]", {"lines": [{"name": "SECRET-VALUE"}]}),
    ],
)
def test_type_mismatch(text: str, source: dict[str, object]) -> None:
    with pytest.raises(TypeMismatch) as caught:
        evaluate(parse_path(text), source)
    assert caught.value.path == text
    assert "SECRET" not in str(caught.value)


def test_wildcard() -> None:
    source = {
        "lines": [
            {"description": "Apple", "tags": ["red", "fruit"], "options": {"size": "L"}},
            {"description": None, "tags": []},
            {"description": "Pear", "tags": ["green"]},
            None,
        ]
    }
    assert evaluate(parse_path("lines[*].description"), source) == ["Apple", "Pear"]
    assert evaluate(parse_path("lines[*].tags[*]"), source) == ["red", "fruit", "green"]
    assert evaluate(parse_path("lines[*].tags"), source) == [["red", "fruit"], [], ["green"]]
    assert evaluate(parse_path("lines[*].tags[1]"), source) == ["fruit"]  # lines without [1] are left out
    assert evaluate(parse_path("lines[*].options.size"), source) == ["L"]
    assert evaluate(parse_path("lines[*].description"), {"lines": []}) == []
    assert evaluate(parse_path("lines[*].description"), {"lines": None}) is None
    assert evaluate(parse_path("lines[*].description"), {}) is None


def test_quoted_keys_and_unicode() -> None:
    source = {"properties": {"Order Qty": 3, "Größe": "groß", "a.b": 1}}
    assert evaluate(parse_path('properties["Order Qty"]'), source) == 3
    assert evaluate(parse_path("properties.Größe"), source) == "groß"
    assert evaluate(parse_path('properties["a.b"]'), source) == 1


CUSTOM = {"custom_fields": [{"name": "Tier", "value": "gold"}, {"name": "SubscribeProfile", "value": "true"},
                            {"name": "LIST_VIP Club", "value": True}, {"name": None, "value": "x"}]}


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("custom_fields[name=SubscribeProfile].value",
         (Key("custom_fields"), Select("name", "SubscribeProfile"), Key("value"))),
        ('custom_fields[name="LIST_VIP Club"].value',
         (Key("custom_fields"), Select("name", "LIST_VIP Club"), Key("value"))),
        ("custom_fields[name='a]b=c'].value", (Key("custom_fields"), Select("name", "a]b=c"), Key("value"))),
        ("lines[*][0]", (Key("lines"), Wildcard(), Index(0))),
    ],
)
def test_parse_selection(text: str, segments: tuple[object, ...]) -> None:
    assert parse_path(text).segments == segments


@pytest.mark.parametrize("text", ["a[=x]", "a[name=]", "a[name=x y]", "a[n.m=x]", 'a[name="x"'])
def test_parse_refuses_a_bad_selection(text: str) -> None:
    with pytest.raises(PathSyntaxError):
        parse_path(text)


def test_a_custom_field_is_read_by_its_name_wherever_it_is() -> None:
    by_name = parse_path("custom_fields[name=SubscribeProfile].value")
    assert evaluate(by_name, CUSTOM) == "true"
    reordered = {"custom_fields": list(reversed(CUSTOM["custom_fields"]))}
    assert evaluate(by_name, reordered) == "true"
    # a position reads whatever field is there now: the reason names exist
    assert evaluate(parse_path("custom_fields[1].value"), reordered) is True
    assert evaluate(parse_path("custom_fields[1].value"), CUSTOM) == "true"


def test_selection_matches_exactly_then_ignoring_case_and_is_none_when_absent() -> None:
    assert evaluate(parse_path('custom_fields[name="LIST_VIP Club"].value'), CUSTOM) is True
    assert evaluate(parse_path("custom_fields[name=subscribeprofile].value"), CUSTOM) == "true"
    assert evaluate(parse_path("custom_fields[name=Missing].value"), CUSTOM) is None
    assert evaluate(parse_path("custom_fields[name=Tier].value"), {"custom_fields": None}) is None
    assert evaluate(parse_path("custom_fields[name=Tier].value"), {}) is None
    assert evaluate(parse_path("groups[*].fields[name=Tier].value"),
                    {"groups": [CUSTOM, {"fields": []}, {"fields": [{"name": "Tier", "value": "s"}]}]}) == ["s"]


def test_selection_on_something_not_a_list_is_a_type_mismatch() -> None:
    with pytest.raises(TypeMismatch):
        evaluate(parse_path("custom_fields[name=Tier]"), {"custom_fields": {"name": "Tier"}})
