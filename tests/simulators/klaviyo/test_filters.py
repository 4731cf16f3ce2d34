from datetime import UTC, datetime

import pytest

from simulators.klaviyo.filters import Condition, FieldRule, FilterError, Group, compile_filter, parse_filter

RULES = {
    "email": FieldRule(frozenset({"equals", "any"})),
    "updated": FieldRule(frozenset({"greater-than", "less-than"}), "datetime"),
}
RECORD = {"email": "a@b.test", "updated": datetime(2025, 1, 1, 12, tzinfo=UTC)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('equals(email,"a@b.test")', True),
        ("equals(email,'a@b.test')", True),
        ('equals(email,"x@b.test")', False),
        ('any(email,["x@b.test","a@b.test"])', True),
        ("greater-than(updated,2025-01-01T00:00:00Z)", True),
        ("greater-than(updated,2025-01-01T12:00:00+00:00)", False),
        ('and(equals(email,"a@b.test"),less-than(updated,2026-01-01T00:00:00Z))', True),
        ('equals(email,"a@b.test"),greater-than(updated,2026-01-01T00:00:00Z)', False),
        ('or(equals(email,"x"),equals(email,"a@b.test"))', True),
        ('not(equals(email,"a@b.test"))', False),
    ],
)
def test_filters_match(text: str, expected: bool) -> None:
    assert compile_filter(text, RULES, "profile")(RECORD.get) is expected


def test_escaped_quotes() -> None:
    assert parse_filter(r'equals(email,"o\"brien@b.test")') == [Condition("equals", "email", 'o"brien@b.test')]
    assert isinstance(parse_filter('and(equals(email,"a"))')[0], Group)


@pytest.mark.parametrize(
    "text",
    ['equals(first_name,"a")', 'greater-than(email,"a")', "equals(email", 'equals(email,"a"))', "any(email,'a')",
     "greater-than(updated,soon)", 'bogus(email,"a")', '"a"', 'equals(email,"unterminated)'],
)
def test_bad_filters(text: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(text, RULES, "profile")
