"""The dead-letter backlog's bookkeeping (no broker: the records are given as a ``TopicTail`` would read them).

A letter is replayed once a run's progress passed it and the run's filter selected it; everything else waits.
The end-to-end check against the real broker, across a restart, is in ``tests/observability/test_kafka_view.py``.
"""

from __future__ import annotations

import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.failures import headers as h
from consumer.failures.backlog import BacklogCount, DeadLetterBacklog
from consumer.topics import TopicCatalog

CATALOG = TopicCatalog.load(prefix="p.")
SOURCE = CATALOG.name("customer-changes")
DLT = CATALOG.name("customer-changes-dlt")
STATE = CATALOG.name("replay-state")
TP0 = TopicPartition(DLT, 0)
FLOW = "add_profile_from_ipaas"


def _letter(offset: int, code: str, *, key: str = "k", last_failure: str = "2026-03-01T12:00:00.000Z",
            original: str | None = SOURCE) -> ConsumerRecord[bytes, bytes]:
    headers = [(h.ERROR_CODE, code.encode()), (h.FLOW, FLOW.encode()), (h.LAST_FAILURE, last_failure.encode()),
               ("content-type", b"application/json")]
    if original:
        headers.append((h.ORIGINAL_TOPIC, original.encode()))
    return ConsumerRecord(DLT, 0, offset, 0, 0, key.encode(), b"{}", None, 1, 2, headers)


def _progress(offset: int, run_id: str, position: int | None, **selection: object) -> ConsumerRecord[bytes, bytes]:
    spec = {"flows": [], "codes": [], "keys": [], "since": None, "until": None, **selection}
    value = None if position is None else orjson.dumps({
        "run_id": run_id, "mode": "republish", "positions": {DLT: {"0": position}}, "replayed": 0, "filter": spec})
    return ConsumerRecord(STATE, 0, offset, 0, 0, run_id.encode(), value, None, 1, 2, [])


def _counts(backlog: DeadLetterBacklog) -> dict[str, BacklogCount]:
    return {code: count for (topic, flow, code), count in backlog.counts().items()
            if topic == SOURCE and flow == FLOW}


def test_a_run_replays_only_the_letters_its_filter_selected() -> None:
    backlog = DeadLetterBacklog(CATALOG)
    letters = [_letter(0, "A", key="k0"), _letter(1, "B", key="k1"), _letter(2, "A", key="k2"),
               _letter(3, "A", key="k3")]
    backlog.update(letters, [], read_up_to={TP0: 4}, log_start={TP0: 0})
    assert _counts(backlog) == {"A": BacklogCount(3, 0), "B": BacklogCount(1, 0)}

    # a run of code A looked at offsets 0..2 (key k3 not yet): A at 0 and 2 are replayed, B at 1 is not selected
    backlog.update([], [_progress(0, "run-a", 3, codes=["A"])], read_up_to={TP0: 4}, log_start={TP0: 0})
    assert _counts(backlog) == {"A": BacklogCount(1, 2), "B": BacklogCount(1, 0)}
    # a second run of every code passes everything: B and the last A go too
    backlog.update([], [_progress(1, "run-all", 4)], read_up_to={TP0: 4}, log_start={TP0: 0})
    assert _counts(backlog) == {"A": BacklogCount(0, 3), "B": BacklogCount(0, 1)}
    assert backlog.waiting_letters() == []


def test_the_key_and_time_filters_of_a_run_are_those_it_recorded() -> None:
    backlog = DeadLetterBacklog(CATALOG)
    backlog.update([_letter(0, "A", key="a", last_failure="2026-03-01T10:00:00.000Z"),
                    _letter(1, "A", key="b", last_failure="2026-03-01T12:00:00.000Z"),
                    _letter(2, "A", key="a", last_failure="2026-03-01T12:30:00.000Z")],
                   [_progress(0, "keyed", 3, keys=["a"], since="2026-03-01T11:00:00.000Z")],
                   read_up_to={TP0: 3}, log_start={TP0: 0})
    # only key a after 11:00 (offset 2)
    assert [letter.offset for letter in backlog.waiting_letters()] == [0, 1]
    assert _counts(backlog) == {"A": BacklogCount(2, 1)}


def test_progress_ahead_of_the_letters_read_applies_once_they_are_read() -> None:
    backlog = DeadLetterBacklog(CATALOG)
    backlog.update([_letter(0, "A")], [_progress(0, "run", 2)], read_up_to={TP0: 1}, log_start={TP0: 0})
    assert _counts(backlog) == {"A": BacklogCount(0, 1)}
    backlog.update([_letter(1, "A"), _letter(2, "A")], [], read_up_to={TP0: 3}, log_start={TP0: 0})
    assert _counts(backlog) == {"A": BacklogCount(1, 2)}  # offset 1 was passed by the run; offset 2 was not


def test_letters_deleted_by_retention_leave_both_counts() -> None:
    backlog = DeadLetterBacklog(CATALOG)
    backlog.update([_letter(offset, "A") for offset in range(4)], [_progress(0, "run", 2)],
                   read_up_to={TP0: 4}, log_start={TP0: 0})
    assert _counts(backlog) == {"A": BacklogCount(2, 2)}
    backlog.update([], [], read_up_to={TP0: 4}, log_start={TP0: 3})  # offsets 0..2 deleted
    assert _counts(backlog) == {"A": BacklogCount(1, 0)}


def test_a_letter_without_a_source_topic_waits_and_a_tombstone_forgets_the_run_only() -> None:
    dlt_of_two_sources = TopicCatalog.model_validate({
        **CATALOG.model_dump(), "topics": {
            **{k: v.model_dump() for k, v in CATALOG.topics.items()},
            "other-changes": {**CATALOG.topics["customer-changes"].model_dump(), "name": "other"}}})
    backlog = DeadLetterBacklog(dlt_of_two_sources)  # two sources share the DLT: no fallback source topic
    backlog.update([_letter(0, "A", original=None), _letter(1, "A")], [_progress(0, "run", 2)],
                   read_up_to={TP0: 2}, log_start={TP0: 0})
    counts = backlog.counts()
    assert counts[("unknown", FLOW, "A")] == BacklogCount(1, 0)  # a replay has nowhere to send it: skipped
    assert counts[(SOURCE, FLOW, "A")] == BacklogCount(0, 1)
    backlog.update([_letter(2, "A")], [_progress(1, "run", None)], read_up_to={TP0: 3}, log_start={TP0: 0})
    assert backlog.counts()[(SOURCE, FLOW, "A")] == BacklogCount(1, 1)


def test_records_read_counts_each_letter_once() -> None:
    backlog = DeadLetterBacklog(CATALOG)
    backlog.update([_letter(0, "A")], [], read_up_to={TP0: 1}, log_start={TP0: 0})
    backlog.update([_letter(1, "A")], [], read_up_to={TP0: 2}, log_start={TP0: 0})
    assert backlog.records_read == 2
