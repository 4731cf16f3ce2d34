"""The dispatcher inside the running service: poison pills are dead-lettered at once, the stream moves on."""

from __future__ import annotations

import orjson

from consumer.catalog import RECORD_NOT_READABLE, Flow
from consumer.envelopes import ChangeEvent
from consumer.failures import headers as dl
from consumer.flows.context import FlowContext
from consumer.routing import Route
from tests.support.service import running_service, service_settings
from tests.support.topic_space import TopicSpace


async def test_each_kind_of_poison_pill_is_dead_lettered_with_its_bytes_and_the_next_event_is_handled(
    topic_space: TopicSpace, unique: str
):
    handled: list[ChangeEvent] = []

    async def record(event: ChangeEvent, ctx: FlowContext) -> None:
        handled.append(event)

    routes = [Route("customer-changes", "customer/created", Flow.ADD_PROFILE_FROM_IPAAS, record),
              Route("customer-changes", "customer/updated", Flow.UPDATE_PROFILE_FROM_IPAAS, record)]
    settings = service_settings(topic_space, unique, runtime={"max_value_bytes": 4096},
                                klaviyo={"api_key": "pk_test_not_used"})
    pills = {
        "POISON_PILL_NOT_UTF8": b"\xff\xfe\x00garbage",
        "POISON_PILL_INVALID_JSON": b'{"id": "c-1", "first_name": ',
        "POISON_PILL_SCHEMA_VIOLATION": orjson.dumps({"first_name": "no id", "email_address": "x@example.com"}),
        "POISON_PILL_UNKNOWN_EVENT_TYPE": orjson.dumps({"before": None, "after": None, "op": "t", "ts_ms": 1}),
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
        errors = await svc.error_log(expected=len(pills))

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
    assert {e["code"] for e in errors} == {RECORD_NOT_READABLE.code}
    assert all(e["message"].startswith(RECORD_NOT_READABLE.message + " (") for e in errors)
    assert all(e["dead_lettered"] and e["source"]["topic"] == svc.topic("customer-changes") for e in errors)
