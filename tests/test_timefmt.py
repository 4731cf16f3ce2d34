"""The one time grammar of the command line, and the one time formatter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer.timefmt import format_time, parse_iso, parse_time, to_utc

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "ago"), [
    ("2h", timedelta(hours=2)), ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)),
    ("7d", timedelta(days=7)), ("3d", timedelta(days=3)), ("1w", timedelta(weeks=1)), ("1.5h", timedelta(minutes=90)),
    (" 2H ", timedelta(hours=2)), ("2 h", timedelta(hours=2)), ("05m", timedelta(minutes=5)),
])
def test_relative_times_are_spans_before_now(text: str, ago: timedelta) -> None:
    assert parse_time(text, NOW) == NOW - ago


def test_a_relative_time_without_now_is_before_the_clock() -> None:
    assert datetime.now(UTC) - parse_time("2h") - timedelta(hours=2) < timedelta(minutes=1)


@pytest.mark.parametrize(("text", "moment"), [
    ("2026-04-30T10:00:00Z", datetime(2026, 4, 30, 10, tzinfo=UTC)),
    ("2026-04-30T10:00:00.000Z", datetime(2026, 4, 30, 10, tzinfo=UTC)),
    ("2026-04-30T10:00:00", datetime(2026, 4, 30, 10, tzinfo=UTC)),  # no zone: UTC
    ("2026-04-30T12:00:00+02:00", datetime(2026, 4, 30, 10, tzinfo=UTC)),
    ("2026-04-30", datetime(2026, 4, 30, tzinfo=UTC)),
    ("  2026-04-30T10:00  ", datetime(2026, 4, 30, 10, tzinfo=UTC)),
])
def test_iso_times_with_or_without_a_zone(text: str, moment: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == moment and parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["yesterday", "", "2x", "-2h", "2026-13-01"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="relative one"):
        parse_time(text)


def test_stored_times_are_read_leniently() -> None:
    assert parse_iso("2026-05-01T10:00:00.000Z") == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert parse_iso("2026-05-01T10:00:00") == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert parse_iso("not a time") is None and parse_iso("") is None and parse_iso(None) is None
    assert parse_iso("2h") is None  # a stored time is never relative


def test_one_formatter() -> None:
    moment = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2026-05-01T10:00:00.123Z"
    assert format_time(datetime(2026, 5, 1, 10, tzinfo=UTC)) == "2026-05-01T10:00:00.000Z"
    assert format_time(moment, zulu=False) == "2026-05-01T10:00:00.123+00:00"  # the JSON logs
    assert format_time(datetime(2026, 3, 1, 12, tzinfo=UTC), timespec="auto", zulu=False) == (
        "2026-03-01T12:00:00+00:00")  # the poller's watermark
    assert format_time(moment, timespec="auto") == "2026-05-01T10:00:00.123456Z"
    assert to_utc(datetime(2026, 5, 1, 10)) == datetime(2026, 5, 1, 10, tzinfo=UTC)
