"""A dead letter read back: its failure context decoded, and the headers it is replayed with."""

from __future__ import annotations

from consumer.catalog import KLAVIYO_REJECTED_REQUEST, RECORD_NOT_READABLE, UNEXPECTED_ERROR
from consumer.failures import headers as dl
from consumer.failures.deadletters import key_text, value_view
from tests.failures.helpers import FULL_CONTEXT as FULL
from tests.failures.helpers import letter

SELECTED = KLAVIYO_REJECTED_REQUEST.code


def test_a_letter_is_decoded_and_replayed_with_its_failure_context_and_a_replay_count():
    decoded = letter(FULL)
    assert (decoded.original_topic, decoded.original_partition, decoded.original_offset) == ("src", 3, 17)
    assert decoded.original_timestamp_ms == 1_700_000_000_000
    assert (decoded.flow, decoded.code, decoded.attempts, decoded.replay_count) == ("all", SELECTED, 3, 1)
    assert decoded.what_to_do == KLAVIYO_REJECTED_REQUEST.action
    assert decoded.history == [{"code": "X", "attempts": 1}]
    replayed = dict(decoded.replay_headers())
    assert replayed["trace"] == b"t-1" and replayed[dl.REPLAY_COUNT] == b"2"
    assert set(replayed) == {"trace", dl.REPLAY_COUNT} | set(dl.CARRIED_ON_REPLAY)
    assert dl.ORIGINAL_CONSUMER_GROUP not in replayed and dl.ERROR_CLASS not in replayed
    document = decoded.to_dict()
    assert (document["ref"], document["first_failure"], document["timestamp"]) == (
        "t.dlt:3:42", "2026-05-01T10:00:00.000Z", "2023-11-14T22:13:20.000Z")


def test_a_letter_without_context_has_defaults():
    bare = letter({}, key=b"\xff", value=None)
    assert (bare.flow, bare.code, bare.attempts, bare.replay_count, bare.history) == ("unknown", "UNKNOWN", 0, 0, [])
    assert bare.original_topic is None and bare.first_failure is None
    assert bare.last_failure is not None and bare.last_failure.timestamp() == 1_700_000_000  # dead-lettering time
    assert bare.what_to_do == UNEXPECTED_ERROR.action
    assert letter({dl.ERROR_CODE: "POISON_PILL_NOT_UTF8"}).what_to_do == RECORD_NOT_READABLE.action
    assert key_text(bare.key) == "hex:ff" and key_text(None) is None
    assert value_view(None) == (None, "null") and value_view(b"\xff\x00") == ("/wA=", "base64")
