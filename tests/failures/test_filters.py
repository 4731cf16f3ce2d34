"""The selections of ``dlq`` and ``errors``: dead letters by flow, code, key and time; topics and references."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka.structs import TopicPartition

from consumer.catalog import KLAVIYO_CONNECTION_ERROR, KLAVIYO_REJECTED_REQUEST, Flow
from consumer.failures import headers as dl
from consumer.failures.errorlog import LoggedError
from consumer.failures.filters import ErrorLogFilter, LetterFilter, dead_letter_topics, parse_ref
from consumer.topics import TopicCatalog
from tests.failures.helpers import letter

SELECTED, OTHER = KLAVIYO_REJECTED_REQUEST.code, KLAVIYO_CONNECTION_ERROR.code


def test_the_filter_selects_by_flow_code_key_and_time():
    selected = letter({dl.FLOW: Flow.ADD_PROFILE_FROM_IPAAS.slug, dl.ERROR_CODE: SELECTED,
                       dl.LAST_FAILURE: "2026-05-01T10:00:00.000Z"})
    build = LetterFilter.build
    assert build().matches(selected)
    assert build(flows=[Flow.ADD_PROFILE_FROM_IPAAS.value]).matches(selected)  # the catalog's name works too
    assert build(flows=["ADD_PROFILE_FROM_IPAAS"]).matches(selected)  # and the member's name
    assert not build(flows=["update_profile_from_ipaas"]).matches(selected)
    assert build(codes=[SELECTED.lower(), OTHER]).matches(selected)
    assert not build(codes=[OTHER]).matches(selected)
    assert build(keys=["c-1"]).matches(selected) and not build(keys=["c-2"]).matches(selected)
    assert build(since="2026-05-01T09:00:00Z", until="2026-05-01T11:00:00Z").matches(selected)
    assert not build(since="2026-05-01T10:00:01Z").matches(selected)


def test_the_filter_spec_is_what_a_run_records():
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    spec = LetterFilter.build(flows=["Service"], codes=[" x "], since="2h", until="2026-05-01T13:00:00+02:00",
                              now=now).spec()
    assert spec == {"flows": ["service"], "codes": ["X"], "keys": [], "since": "2026-05-01T10:00:00.000Z",
                    "until": "2026-05-01T11:00:00.000Z"}


def test_the_error_log_filter_selects_by_record_severity_and_time():
    entry = LoggedError(2, 9, "customer:c-1", {
        "time": "2026-05-01T10:00:00.000Z", "flow": "add_profile_from_ipaas", "code": SELECTED,
        "severity": "error", "transfer": {"kind": "customer", "id": "c-1"}})
    build = ErrorLogFilter.build
    assert build(records=["c-1"]).matches(entry) and build(records=["customer:c-1"]).matches(entry)
    assert not build(records=["c-2"]).matches(entry)
    assert build(severities=["ERROR"], flows=[Flow.ADD_PROFILE_FROM_IPAAS.value]).matches(entry)
    assert not build(severities=["warning"]).matches(entry)
    assert build(until="2026-05-01").matches(entry) is False
    assert build(since="2026-05-01T09:00:00", until="2026-05-01T11:00:00").matches(entry)


def test_topics_are_resolved_from_the_catalog():
    catalog = TopicCatalog.load(prefix="p.")
    everything = dead_letter_topics(catalog)
    assert len(everything) == 3 and all(name.endswith("-dlt") for name in everything)
    dlt = catalog.name("customer-changes-dlt")
    assert dead_letter_topics(catalog, ["customer-changes"]) == [dlt]
    assert dead_letter_topics(catalog, [catalog.name("customer-changes"), dlt, "customer-changes-dlt"]) == [dlt]
    with pytest.raises(ValueError, match="neither"):
        dead_letter_topics(catalog, ["error-log"])
    with pytest.raises(ValueError, match="not a topic"):
        dead_letter_topics(catalog, ["nope"])
    assert parse_ref(f"{dlt}:2:5", []) == [(TopicPartition(dlt, 2), 5)]
    assert parse_ref("2:5", ["a", "b"]) == [(TopicPartition("a", 2), 5), (TopicPartition("b", 2), 5)]
    with pytest.raises(ValueError, match="reference"):
        parse_ref("x:y", ["a"])
