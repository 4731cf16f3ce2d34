"""Each transform, and its declaration checks."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from consumer.mapping import InvalidValue, build_transform
from consumer.mapping.transforms import TransformConfigError, to_e164


def run(declaration: Any, value: Any, source: dict[str, Any] | None = None) -> Any:
    return build_transform(declaration).apply(value, source or {})


def test_trim() -> None:
    assert run("trim", "  Ann  ") == "Ann"
    assert run("trim", "\t\n ") is None
    assert run("trim", "") is None
    assert run("trim", None) is None
    assert run("trim", 12) == 12
    assert run("trim", [" a ", "  ", None, "b"]) == ["a", "b"]
    assert run("trim", "\u3000Zoë\u00a0") == "Zoë"


def test_lower_upper_text() -> None:
    assert run("lower", "Ann@Example.ORG") == "ann@example.org"
    assert run("upper", "straße") == "STRASSE"
    assert run("lower", None) is None
    assert run("lower", ["A", "B"]) == ["a", "b"]
    assert run("text", 123) == "123"
    assert run("text", 12.5) == "12.5"
    assert run("text", Decimal("1E+2")) == "100"
    assert run("text", True) == "true"
    assert run("text", "x") == "x"
    with pytest.raises(InvalidValue):
        run("text", {"a": 1})


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        ("+1 (555) 234-5678", None, "+15552345678"),
        ("(555) 234-5678", "1", "+15552345678"),
        ("555.234.5678", "1", "+15552345678"),
        ("1-555-234-5678", "1", "+15552345678"),
        ("555-234-5678 x123", "1", "+15552345678"),
        ("555-234-5678 ext. 9", "1", "+15552345678"),
        ("011 44 20 7946 0958", "1", "+442079460958"),
        ("0044 20 7946 0958", "1", "+442079460958"),
        ("020 7946 0958", "44", "+442079460958"),
        (5552345678, "1", "+15552345678"),
        ("+49 30 1234567", "1", "+49301234567"),
    ],
)
def test_e164(value: Any, country: str | None, expected: str) -> None:
    declaration = {"e164": {"default_country": country}} if country else "e164"
    assert run(declaration, value) == expected


@pytest.mark.parametrize(
    ("value", "country"),
    [
        ("555-1234", "1"),  # 7 digits: no area code
        ("123-456-7890", "1"),  # area code cannot start with 1
        ("555-123-4567", "1"),  # exchange cannot start with 1
        ("1-800-FLOWERS", "1"),
        ("5552345678", None),  # national number without a default country
        ("+1 555 234 56789", None),  # NANP with 11 digits after the 1
        ("+123", None),
        ("++15552345678", None),
        ("not a phone", "1"),
        ("+" + "9" * 16, None),
    ],
)
def test_e164_invalid(value: str, country: str | None) -> None:
    declaration = {"e164": {"default_country": country}} if country else "e164"
    with pytest.raises(InvalidValue) as caught:
        run(declaration, value)
    assert value not in str(caught.value)
    lenient = {"e164": {"default_country": country, "on_invalid": "null"}}
    assert run(lenient, value) is None


def test_e164_empty_and_short_form() -> None:
    assert run({"e164": "1"}, "  ") is None
    assert run({"e164": 44}, "07911 123456") == "+447911123456"
    assert run("e164", None) is None
    assert run({"e164": {"on_invalid": None}}, "junk") is None
    assert to_e164("+1 555 234 5678", None) == "+15552345678"


def test_join() -> None:
    assert run("join", ["Ann", None, "", "  ", "Lee"]) == "Ann Lee"
    assert run({"join": ", "}, ["1 Main", ["Apt 2", None], 5]) == "1 Main, Apt 2, 5"
    assert run({"join": {"separator": ":"}}, ["T1", 3]) == "T1:3"
    assert run("join", []) is None
    assert run("join", [None, ""]) is None
    assert run("join", None) is None
    assert run("join", "already text") == "already text"
    with pytest.raises(InvalidValue):
        run("join", [{"a": 1}])


def test_default() -> None:
    assert run({"default": "n/a"}, None) == "n/a"
    assert run({"default": "n/a"}, "") == "n/a"
    assert run({"default": "n/a"}, "  ") == "n/a"
    assert run({"default": "n/a"}, []) == "n/a"
    assert run({"default": "n/a"}, "x") == "x"
    assert run({"default": 0}, 0) == 0
    assert run({"default": {"value": [1]}}, None) == [1]
    assert run({"default": {"path": "id"}}, None, {"id": "T1"}) == "T1"
    assert run({"default": {"path": "a.b"}}, None, {}) is None


@pytest.mark.parametrize(
    ("declaration", "value", "expected"),
    [
        ("number", "12.50", 12.5),
        ("number", 3, 3.0),
        ("number", " -4.25 ", -4.25),
        ({"number": {"places": 2}}, "12.345", 12.35),
        ({"number": {"places": 2}}, 2.675, 2.68),  # half up on the written decimal, not the binary float
        ({"number": "int"}, "2.5", 3),
        ({"number": {"type": "int"}}, "-2.5", -3),
        ({"number": {"type": "int"}}, 7, 7),
        ({"number": {"type": "decimal", "places": 2}}, "12.5", "12.50"),
        ({"number": {"type": "decimal"}}, "1E+3", "1000"),
        ({"number": {"type": "decimal", "places": 0}}, Decimal("0.5"), "1"),
        ("number", None, None),
        ("number", "  ", None),
        ("number", ["1", "2.5"], [1.0, 2.5]),
    ],
)
def test_number(declaration: Any, value: Any, expected: Any) -> None:
    result = run(declaration, value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("value", ["abc", "1,234.00", "1_000", "NaN", "Infinity", True, {"a": 1}, "1e400", "9" * 200])
def test_number_invalid(value: Any) -> None:
    with pytest.raises(InvalidValue):
        run("number", value)


@pytest.mark.parametrize(
    ("declaration", "value", "expected"),
    [
        ("date", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05+00:00"),
        ("date", "2024-01-02T03:04:05.250+02:00", "2024-01-02T01:04:05.250000+00:00"),
        ("date", "2024-01-02", "2024-01-02T00:00:00+00:00"),
        ("date", "2024-01-02 03:04:05", "2024-01-02T03:04:05+00:00"),
        ("date", "1/2/2024 3:04:05 PM", "2024-01-02T15:04:05+00:00"),
        ("date", "01/02/2024", "2024-01-02T00:00:00+00:00"),
        ("date", "Tue, 02 Jan 2024 03:04:05 +0000", "2024-01-02T03:04:05+00:00"),
        ("date", 1704164645, "2024-01-02T03:04:05+00:00"),
        ("date", 1704164645000, "2024-01-02T03:04:05+00:00"),
        ({"date": "%Y-%m-%d"}, "2024-01-02T23:30:00-05:00", "2024-01-03"),
        (
            {"date": {"format": "%Y-%m-%d %H:%M", "output_timezone": "America/New_York"}},
            "2024-01-02T12:00:00Z",
            "2024-01-02 07:00",
        ),
        ({"date": {"timezone": "Europe/Berlin"}}, "2024-07-01 12:00:00", "2024-07-01T10:00:00+00:00"),
        ({"date": {"input_formats": ["%d.%m.%Y"]}}, "02.01.2024", "2024-01-02T00:00:00+00:00"),
        ("date", None, None),
        ("date", "", None),
    ],
)
def test_date(declaration: Any, value: Any, expected: Any) -> None:
    assert run(declaration, value) == expected


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2024-13-45", "31/31/2024", True, [["x"]], "2" * 100, "0001-01-01T00:00:00+05:00", 1e20],
)
def test_date_invalid(value: Any) -> None:
    with pytest.raises(InvalidValue):
        run("date", value)


@pytest.mark.parametrize(
    "declaration",
    [
        "nope",
        {"trim": {"x": 1}},
        {"e164": {"default_country": "abc"}},
        {"e164": {"default_country": "0"}},
        {"e164": {"on_invalid": "ignore"}},
        {"e164": {"country": "1"}},
        {"join": {"separator": 1}},
        "default",
        {"default": {"value": 1, "path": "id"}},
        {"default": {"path": "a..b"}},
        {"number": {"type": "complex"}},
        {"number": {"type": "int", "places": 2}},
        {"number": {"places": -1}},
        {"date": {"format": 5}},
        {"date": {"timezone": "Mars/Olympus"}},
        {"date": {"input_formats": [1]}},
        {"trim": None, "lower": None},
        ["trim"],
    ],
)
def test_bad_declarations(declaration: Any) -> None:
    with pytest.raises(TransformConfigError):
        build_transform(declaration)


def test_long_and_unicode_values() -> None:
    long = "ä" * 100_000
    assert run("trim", f"  {long}  ") == long
    assert run("upper", long) == "Ä" * 100_000
    assert run({"join": "-"}, [long, long]) == f"{long}-{long}"
    with pytest.raises(InvalidValue) as caught:
        run("e164", "+1" + "5" * 100_000)
    assert "5555" not in str(caught.value)
    with pytest.raises(InvalidValue):
        run("number", "1" * 100_000)
    with pytest.raises(InvalidValue):
        run("date", "2024" * 10_000)
