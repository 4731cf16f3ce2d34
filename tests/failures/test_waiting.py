"""The keys with a dead letter waiting, and the warning when a later change of one succeeds."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.catalog import EARLIER_CHANGE_DEAD_LETTERED, PROFILE_COULD_NOT_BE_CREATED, CatalogError
from consumer.failures import headers as dl
from consumer.failures.waiting import WaitingLetters, warn_of_waiting_letters
from consumer.runtime import Failure, Handled, InboundMessage, Message

FAILED = Failure(code=PROFILE_COULD_NOT_BE_CREATED.code, message="no email", exception_fqcn="x.Y")


def record(key: bytes | None, offset: int, *, topic: str = "src", replayed: bool = False) -> Message:
    headers = [(dl.REPLAY_COUNT, b"1")] if replayed else []
    return Message(topic, 0, offset, key, b"{}", headers, 0)


def test_a_later_change_of_a_dead_lettered_key_is_reported_once() -> None:
    letters = WaitingLetters()
    letters.dead_lettered(record(b"k", 5), FAILED)
    assert letters.succeeded(record(b"k", 5)) is None  # not a later change
    assert letters.succeeded(record(b"k", 6, topic="other")) is None  # another topic's key
    waiting = letters.succeeded(record(b"k", 6))
    assert waiting is not None and (waiting.offset, waiting.code) == (5, FAILED.code)
    assert letters.succeeded(record(b"k", 7)) is None and not letters  # once


def test_a_replay_forgets_the_key_without_a_warning_and_keyless_records_are_not_tracked() -> None:
    letters = WaitingLetters()
    letters.dead_lettered(record(b"k", 5), FAILED)
    letters.dead_lettered(record(None, 6), FAILED)
    assert len(letters) == 1
    assert letters.succeeded(record(b"k", 9, replayed=True)) is None and not letters


def test_the_oldest_keys_are_forgotten_beyond_the_bound() -> None:
    letters = WaitingLetters(max_keys=2)
    for offset, key in enumerate((b"a", b"b", b"a", b"c")):  # a again: it is the newest now
        letters.dead_lettered(record(key, offset), FAILED)
    assert len(letters) == 2
    assert letters.succeeded(record(b"b", 10)) is None
    assert letters.succeeded(record(b"a", 10)) is not None and letters.succeeded(record(b"c", 10)) is not None
    with pytest.raises(ValueError):
        WaitingLetters(max_keys=0)


async def test_the_processor_writes_the_warning_for_the_later_change_and_survives_a_failed_write() -> None:
    letters = WaitingLetters()
    written: list[tuple[CatalogError, Any, InboundMessage]] = []
    broken = False

    async def report(error: CatalogError, transfer: Any, source: InboundMessage) -> None:
        if broken:
            raise ConnectionError("the broker is away")
        written.append((error, transfer, source))

    async def processor(message: InboundMessage) -> Handled:
        return Handled(flow="update_profile_from_ipaas", transfer=("customer", message.key))

    process = warn_of_waiting_letters(processor, letters, report)
    letters.dead_lettered(record(b"k", 5), FAILED)
    later = record(b"k", 8)
    assert (await process(later)).transfer == ("customer", b"k")
    [(error, transfer, source)] = written
    assert error.entry is EARLIER_CHANGE_DEAD_LETTERED and transfer == ("customer", b"k") and source is later
    assert error.detail == f"the change at partition 0, offset 5 of src failed with {FAILED.code} and waits on its " \
                           "dead-letter topic"
    letters.dead_lettered(record(b"k", 9), FAILED)
    broken = True
    assert (await process(record(b"k", 10))).outcome == "succeeded"  # delivered; the warning is only logged
