"""The dispatcher inside the running service: poison pills are dead-lettered at once, the stream moves on."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from consumer.catalog import EARLIER_CHANGE_DEAD_LETTERED, RECORD_NOT_READABLE, Flow
from consumer.envelopes import PoisonPill
from consumer.errors import UnexpectedError
from consumer.failures import headers as dl
from consumer.flows.context import Change, FlowContext
from consumer.observability import metrics
from consumer.records import Customer
from consumer.routing import Dispatcher, RoutingTable, Source
from consumer.runtime import Message, classify
from consumer.topics import TopicCatalog
from tests.support.changes import customer_source
from tests.support.service import running_service, service_settings
from tests.support.topic_space import TopicSpace


async def test_each_kind_of_poison_pill_is_dead_lettered_with_its_bytes_and_the_next_event_is_handled(
    topic_space: TopicSpace, unique: str
):
    handled: list[Change[Any]] = []

    async def record(event: Change[Any], ctx: FlowContext) -> None:
        handled.append(event)

    routes = [customer_source(record)]
    settings = service_settings(topic_space, unique, runtime={"max_value_bytes": 4096},
                                klaviyo={"api_key": "pk_test_not_used"})
    pills = {
        "POISON_PILL_NOT_UTF8": b"\xff\xfe\x00garbage",
        "POISON_PILL_INVALID_JSON": b'{"id": "c-1", "first_name": ',
        "POISON_PILL_SCHEMA_VIOLATION": orjson.dumps({"first_name": "no id", "email_address": "x@example.com"}),
        "POISON_PILL_UNKNOWN_EVENT_TYPE": orjson.dumps({"before": None, "after": None, "op": "x", "ts_ms": 1}),
        "POISON_PILL_OVERSIZE": orjson.dumps({"id": "c-1", "comment": "x" * 5000}),
        "POISON_PILL_UNKNOWN_ENVELOPE": orjson.dumps({"hello": "world"}),
    }
    records = []
    for index, value in enumerate(pills.values()):
        records.append((b"c-1", value, [("origin", b"test")]))
        records.append((b"c-1", orjson.dumps({"id": "c-1", "first_name": f"Good {index}"})))

    async with running_service(settings, routes=routes) as svc:
        placed = await svc.send("customer-changes", records)
        await svc.wait_finished(len(records))
        letters = await svc.dead_letters("customer-changes", expected=len(pills))
        logged = await svc.error_log(expected=2 * len(pills))

    assert [e.record.first_name for e in handled] == [f"Good {i}" for i in range(len(pills))]  # type: ignore[union-attr]
    assert len(letters) == len(pills)
    for letter, (code, value), (partition, offset) in zip(letters, pills.items(), placed[::2], strict=True):
        headers = dl.decoded_headers(letter.headers)
        assert letter.value == value and letter.key == b"c-1" and letter.partition == partition
        assert headers["origin"] == "test"
        assert headers[dl.ERROR_CODE] == code
        assert headers[dl.ERROR_CLASS] == "fatal"
        assert headers[dl.ATTEMPTS] == "1"
        assert headers[dl.ORIGINAL_OFFSET] == str(offset)
        assert headers[dl.ORIGINAL_TOPIC] == svc.topic("customer-changes")
        assert headers[dl.ORIGINAL_CONSUMER_GROUP] == settings.kafka.group_id
        assert headers[dl.FLOW] == "service"
        assert headers[dl.EXCEPTION_FQCN] == "consumer.envelopes.PoisonPill"
    errors = [e for e in logged if e["dead_lettered"]]
    assert {e["code"] for e in errors} == {RECORD_NOT_READABLE.code} and len(errors) == len(pills)
    # each good record followed a dead-lettered one of its key: applied, with the warning that a letter waits
    warnings = [e for e in logged if not e["dead_lettered"]]
    assert [e["code"] for e in warnings] == [EARLIER_CHANGE_DEAD_LETTERED.code] * len(pills)
    assert all(e["message"].startswith(RECORD_NOT_READABLE.message + " (") for e in errors)
    assert all(e["dead_lettered"] and e["source"]["topic"] == svc.topic("customer-changes") for e in errors)


# --- the dispatcher alone (no broker) ----------------------------------------------------------------------------
def _dispatcher(handler: Any) -> Dispatcher:
    async def warn(error: Any, transfer: Any) -> None:
        return None

    context = FlowContext(klaviyo=None, mappings={}, warn=warn)  # type: ignore[arg-type]
    table = RoutingTable([customer_source(handler)], TopicCatalog.load())
    return Dispatcher(table, context, max_value_bytes=4096)


def _message(value: bytes) -> Message:
    return Message(topic=TopicCatalog.load().name("customer-changes"), partition=0, offset=0, key=b"C1",
                   value=value, headers=[], timestamp=0)


async def test_a_handler_gets_its_typed_record_and_the_transfer():
    got: list[Change[Any]] = []

    async def handler(change: Change[Any], ctx: FlowContext) -> None:
        got.append(change)

    handled = await _dispatcher(handler)(_message(orjson.dumps({"id": "C1", "email_address": "a@shop.test"})))
    [change] = got
    assert isinstance(change.record, Customer) and change.record.email_address == "a@shop.test"
    assert (change.record_id, change.transfer.kind, handled.flow) == ("C1", "customer", "update_profile_from_ipaas")


async def test_a_notification_without_its_record_and_no_ipaas_client_is_a_poison_pill():
    async def handler(change: Change[Any], ctx: FlowContext) -> None:
        raise AssertionError("never called")

    with pytest.raises(PoisonPill) as caught:
        await _dispatcher(handler)(_message(orjson.dumps({"scope": "customer/updated", "id": "C1"})))
    assert caught.value.reason == "schema_violation" and caught.value.flow is Flow.UPDATE_PROFILE_FROM_IPAAS


async def test_a_handler_bug_is_an_unexpected_error_of_its_flow_and_transfer():
    async def handler(change: Change[Any], ctx: FlowContext) -> None:
        raise KeyError("oops")

    with pytest.raises(UnexpectedError) as caught:
        await _dispatcher(handler)(_message(orjson.dumps({"id": "C1"})))
    error = caught.value
    assert error.flow is Flow.UPDATE_PROFILE_FROM_IPAAS and error.transfer.id == "C1" and error.retryable
    assert classify(error).exception_fqcn == "builtins.KeyError"


def test_a_source_whose_dead_letter_topic_disagrees_with_the_catalog_is_refused_at_start_up():
    wrong = Source("customer-changes", (), frozenset(), "transaction-changes-dlt")
    with pytest.raises(ValueError, match="dead-letters to 'transaction-changes-dlt'"):
        RoutingTable([wrong], TopicCatalog.load())


async def test_a_record_that_changes_nothing_is_skipped_and_counted_not_dead_lettered():
    async def handler(change: Change[Any], ctx: FlowContext) -> None:
        raise AssertionError("never called")

    message = _message(orjson.dumps({"ts_ms": 1588252618953}))  # a Debezium heartbeat
    counted = metrics.RECORDS_SKIPPED.labels(message.topic, "heartbeat")
    before = counted._value.get()
    handled = await _dispatcher(handler)(message)
    assert (handled.outcome, handled.flow) == ("skipped", "service")
    assert counted._value.get() == before + 1
