"""The whole service end to end: Kafka → runtime → dispatcher → FROM flows → the Klaviyo simulator.

Every catalog entry of the FROM flows is asserted where a user meets it: verbatim in the error-log record, with
the dead letter (code and flow in its headers) for errors and no dead letter for warnings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from consumer import catalog
from consumer.failures import headers as dl
from consumer.failures.errorlog import read_error_log
from simulators.klaviyo import DEFAULT_API_KEY, Faults, KlaviyoSimulator, SimulatorConfig, Spec
from tests.support.service import RunningService, running_service, service_settings
from tests.support.topic_space import TopicSpace


@pytest.fixture
async def klaviyo_sim(openapi_spec: Spec) -> AsyncIterator[KlaviyoSimulator]:
    sim = KlaviyoSimulator(SimulatorConfig(seed=5))
    sim.state.spec = openapi_spec  # validate every request body against Klaviyo's contract
    async with sim:
        yield sim


def _settings(topic_space: TopicSpace, unique: str, sim: KlaviyoSimulator) -> Any:
    return service_settings(topic_space, unique, runtime={"retry_attempts": 2},
                            klaviyo={"base_url": sim.base_url, "api_key": DEFAULT_API_KEY, "max_retries": 1})


def _debezium(op: str, after: dict[str, Any]) -> bytes:
    return orjson.dumps({"schema": {"type": "struct"},
                         "payload": {"before": None, "after": after, "op": op, "ts_ms": 1_795_000_000_000}})


def _customer(cid: str, **fields: Any) -> dict[str, Any]:
    return {"id": cid, "first_name": "Ada", "last_name": "Lovelace", "email_address": f"{cid}@example.com", **fields}


def _transaction(tid: str, customer_id: str | None, total: Any = 1250, lines: list[dict[str, Any]] | None = None,
                 **fields: Any) -> dict[str, Any]:
    lines = lines if lines is not None else [
        {"sequence_number": 1, "sku": "ENG-1", "description": "Difference Engine", "qty": 1, "unit_price": 1200,
         "extended_price": 1200},
        {"sequence_number": 2, "sku": "CARD-50", "description": "Punched cards", "qty": 2, "unit_price": 25,
         "extended_price": 50},
    ]
    return {"id": tid, "transaction_number": f"SO-{tid}", "customer_id": customer_id, "total": total,
            "email_address": f"{customer_id}@example.com" if customer_id else None,
            "created_datetime": "2026-11-27T10:00:00Z", "lines": lines, **fields}


async def test_customers_and_orders_reach_klaviyo_once_even_when_redelivered(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    changes = [
        (b"c-1", _debezium("c", _customer("c-1"))),
        (b"c-1", orjson.dumps(_customer("c-1", last_name="King")), [("scope", b"customer/updated")]),
    ]
    orders = [(b"t-1", _debezium("c", _transaction("t-1", "c-1")))]
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        await svc.send("customer-changes", changes)
        await svc.send("transaction-changes", orders)
        await svc.wait_finished(3)
        await svc.send("customer-changes", changes)  # redelivery, as after a crash before the commit
        await svc.send("transaction-changes", orders)
        finished = await svc.wait_finished(6)

    assert [outcome for _, outcome in finished] == ["succeeded"] * 6
    profiles = list(klaviyo_sim.state.store.profiles.values())
    assert len(profiles) == 1
    assert profiles[0].attributes["external_id"] == "c-1"
    assert profiles[0].attributes["last_name"] == "King"
    events = klaviyo_sim.state.store.events
    assert sorted((e.metric_name, e.unique_id) for e in events) == [
        ("Ordered Product", "t-1:1:ENG-1"), ("Ordered Product", "t-1:2:CARD-50"), ("Placed Order", "t-1")]
    placed = next(e for e in events if e.metric_name == "Placed Order")
    assert placed.value == 1250 and placed.profile_id == profiles[0].id
    assert placed.properties["OrderId"] == "SO-t-1"
    assert [item["SKU"] for item in placed.properties["Items"]] == ["ENG-1", "CARD-50"]


async def _expect_failure(svc: RunningService, letters_topic: str, letters: list[Any], errors: list[dict[str, Any]],
                          key: bytes, entry: catalog.CatalogEntry, flow: catalog.Flow) -> dict[str, Any]:
    """The record of ``key`` was dead-lettered with the entry's code, and its error-log record says so verbatim."""
    letter = next(letter for letter in letters if letter.key == key)
    headers = dl.decoded_headers(letter.headers)
    assert headers[dl.ERROR_CODE] == entry.code
    assert headers[dl.FLOW] == flow.slug
    assert headers[dl.ORIGINAL_TOPIC] == svc.topic(letters_topic)
    source = {"topic": svc.topic(letters_topic), "partition": int(headers[dl.ORIGINAL_PARTITION]),
              "offset": int(headers[dl.ORIGINAL_OFFSET])}
    record = next(e for e in errors if e["dead_lettered"] and e["source"] == source)
    assert record["code"] == entry.code
    assert record["flow"] == flow.slug
    assert record["severity"] == "error"
    assert record["what_to_do"] == entry.action
    return record


async def test_each_from_flow_catalog_entry_is_dead_lettered_and_logged_verbatim(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    line = {"sequence_number": 1, "sku": "ENG-1", "description": "Difference Engine", "qty": 1, "unit_price": 5,
            "extended_price": 5}
    same_line_twice = [line, line]  # the second line's unique id is the first's
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        await svc.send("customer-changes", [
            (b"c-ok", _debezium("c", _customer("c-ok"))),
            (b"c-none", _debezium("c", {"id": "c-none", "first_name": "No", "last_name": "Contact"})),
        ])
        await svc.wait_finished(2)
        await svc.send("customer-changes", [
            (b"c-ok", orjson.dumps(_customer("c-ok", email_address="not-an-email")), [("scope", b"customer/updated")]),
        ])
        await svc.send("transaction-changes", [
            (b"t-neg", _debezium("c", _transaction("t-neg", None))),  # no profile to put the order on
            (b"t-cust", _debezium("c", _transaction("t-cust", "c-new", email_address="also not an email"))),
            (b"t-line", _debezium("c", _transaction("t-line", "c-ok", total=10, lines=same_line_twice))),
        ])
        await svc.wait_finished(6)
        klaviyo_sim.faults = Faults(fail_next=[400], operations=["create_profile"])
        await svc.send("customer-changes", [(b"c-400", _debezium("c", _customer("c-400")))])
        await svc.wait_finished(7)
        customer_letters = await svc.dead_letters("customer-changes", expected=3)
        order_letters = await svc.dead_letters("transaction-changes", expected=3)
        errors = await svc.error_log(expected=7)

    flow = catalog.Flow
    created = await _expect_failure(svc, "customer-changes", customer_letters, errors, b"c-none",
                                    catalog.PROFILE_COULD_NOT_BE_CREATED, flow.ADD_PROFILE_FROM_IPAAS)
    assert created["message"] == catalog.PROFILE_COULD_NOT_BE_CREATED.message
    assert created["transfer"] == {"kind": "customer", "id": "c-none", "event_type": "customer/created"}
    updated = await _expect_failure(svc, "customer-changes", customer_letters, errors, b"c-ok",
                                    catalog.PROFILE_COULD_NOT_BE_UPDATED, flow.UPDATE_PROFILE_FROM_IPAAS)
    assert updated["message"] == catalog.PROFILE_COULD_NOT_BE_UPDATED.message
    order = await _expect_failure(svc, "transaction-changes", order_letters, errors, b"t-neg",
                                  catalog.ORDER_EVENT_COULD_NOT_BE_CREATED, flow.PLACED_ORDER_FROM_IPAAS)
    assert order["message"] == catalog.ORDER_EVENT_COULD_NOT_BE_CREATED.message
    needs_customer = await _expect_failure(svc, "transaction-changes", order_letters, errors, b"t-cust",
                                           catalog.CUSTOMER_REQUIRED_FOR_ORDER, flow.PLACED_ORDER_FROM_IPAAS)
    assert needs_customer["message"] == catalog.CUSTOMER_REQUIRED_FOR_ORDER.message
    assert needs_customer["cause"]["code"] == catalog.PROFILE_COULD_NOT_BE_CREATED.code
    customers_own = [e for e in errors if e["transfer"] and e["transfer"]["id"] == "c-new"]
    assert [e["code"] for e in customers_own] == [catalog.PROFILE_COULD_NOT_BE_CREATED.code]
    product = await _expect_failure(svc, "transaction-changes", order_letters, errors, b"t-line",
                                    catalog.PRODUCT_EVENT_COULD_NOT_BE_CREATED, flow.ORDERED_PRODUCT_FROM_IPAAS)
    assert product["message"] == catalog.PRODUCT_EVENT_COULD_NOT_BE_CREATED.message
    rejected = await _expect_failure(svc, "customer-changes", customer_letters, errors, b"c-400",
                                     catalog.KLAVIYO_REJECTED_REQUEST, flow.ADD_PROFILE_FROM_IPAAS)
    assert rejected["message"].startswith("Error calling Klaviyo (400 ")
    assert rejected["http_status"] == 400
    # the good customer's profile exists; the order with a bad line still sent its Placed Order and its good line
    assert {e.unique_id for e in klaviyo_sim.state.store.events} == {"t-line", "t-line:1:ENG-1"}


async def test_an_order_dated_outside_klaviyos_window_or_without_a_date_is_dead_lettered_unsent(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    dates = {b"t-old": "1985-06-01T00:00:00Z", b"t-far": "2999-01-01T00:00:00Z", b"t-bad": "31/31/2026",
             b"t-none": None}
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        await svc.send("transaction-changes", [
            (key, _debezium("c", _transaction(key.decode(), None, email_address="guest@example.com",
                                              created_datetime=created)))
            for key, created in dates.items()])
        finished = await svc.wait_finished(4)
        letters = await svc.dead_letters("transaction-changes", expected=4)
        errors = await svc.error_log(expected=4)

    assert [outcome for _, outcome in finished] == ["dead_lettered"] * 4
    details = {}
    for key in dates:
        record = await _expect_failure(svc, "transaction-changes", letters, errors, key,
                                       catalog.ORDER_EVENT_COULD_NOT_BE_CREATED, catalog.Flow.PLACED_ORDER_FROM_IPAAS)
        assert record["message"] == catalog.ORDER_EVENT_COULD_NOT_BE_CREATED.message
        details[key] = record["detail"]
    assert details[b"t-old"] == ("field 'time' (path 'created_datetime'): the date is not after 1990-01-01, the "
                                 "earliest event time Klaviyo takes")
    assert details[b"t-far"].endswith("the date is more than a year in the future, the latest event time Klaviyo takes")
    assert details[b"t-bad"] == details[b"t-none"] == (
        "field 'time' (path 'created_datetime'): the date of the transaction is missing or could not be read")
    assert klaviyo_sim.received() == []  # nothing sent, nothing dated "now" by Klaviyo


async def test_a_transaction_without_an_id_is_order_event_could_not_be_created_with_its_original_bytes(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    no_id = {name: value for name, value in _transaction("x", None, email_address="guest@example.com").items()
             if name != "id"}
    debezium = _debezium("c", no_id)
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        await svc.send("transaction-changes", [(b"t-noid", debezium)])
        await svc.wait_finished(1)
        [letter] = await svc.dead_letters("transaction-changes", expected=1)
        errors = await svc.error_log(expected=1)

    assert letter.value == debezium and letter.key == b"t-noid"  # the record as it came
    record = await _expect_failure(svc, "transaction-changes", [letter], errors, b"t-noid",
                                   catalog.ORDER_EVENT_COULD_NOT_BE_CREATED, catalog.Flow.PLACED_ORDER_FROM_IPAAS)
    assert record["message"] == catalog.ORDER_EVENT_COULD_NOT_BE_CREATED.message
    assert record["detail"] == "field 'unique_id' path 'id': required value is missing or empty"
    assert record["transfer"] == {"kind": "transaction", "id": "t-noid", "event_type": "transaction/created"}
    assert klaviyo_sim.received() == []


async def test_a_near_duplicate_profile_is_a_warning_and_the_transfer_goes_on(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    klaviyo_sim.state.store.create_profile({"email": "grace@example.com", "first_name": "Grace"})
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        await svc.send("customer-changes", [
            (b"c-g", _debezium("c", _customer("c-g", email_address="Grace@Example.com", first_name="Grace")))])
        finished = await svc.wait_finished(1)
        errors = await svc.error_log(expected=1)

    assert [outcome for _, outcome in finished] == ["succeeded"]
    [warning] = errors
    entry = catalog.COULD_NOT_LINK_TO_EXISTING_PROFILE
    assert (warning["code"], warning["severity"], warning["message"]) == (entry.code, "warning", entry.message)
    assert warning["dead_lettered"] is False
    assert warning["transfer"]["id"] == "c-g"
    assert len(klaviyo_sim.state.store.profiles) == 2


async def test_a_success_without_its_body_is_error_calling_klaviyo_for_the_record_and_pauses_nothing(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        # the create happened but came back empty: the retry finds the profile (409) and links it
        klaviyo_sim.faults = Faults(hollow_next=1, operations=["create_profile"])
        await svc.send("customer-changes", [(b"c-h", _debezium("c", _customer("c-h")))])
        await svc.wait_finished(1)
        # the search of an update keeps coming back empty: every attempt fails, then the dead letter
        klaviyo_sim.faults = Faults(hollow_next=10, operations=["get_profiles"])
        await svc.send("customer-changes", [
            (b"c-u", orjson.dumps(_customer("c-u")), [("scope", b"customer/updated")])])
        finished = await svc.wait_finished(2)
        letters = await svc.dead_letters("customer-changes", expected=1)
        errors = await svc.error_log(expected=1)

    assert [outcome for _, outcome in finished] == ["succeeded", "dead_lettered"]
    assert len(klaviyo_sim.state.store.profiles) == 1
    record = await _expect_failure(svc, "customer-changes", letters, errors, b"c-u",
                                   catalog.KLAVIYO_REJECTED_REQUEST, catalog.Flow.UPDATE_PROFILE_FROM_IPAAS)
    assert record["message"] == ("Error calling Klaviyo (Klaviyo answered 200 to GET /api/profiles without the "
                                 "list of profiles it should return)")
    logged = [e.record["code"] for e in await read_error_log(svc.settings.kafka, svc.topic("error-log"))]
    assert logged == [catalog.KLAVIYO_REJECTED_REQUEST.code]  # no outage, no recovery record
    assert [r.fault for r in klaviyo_sim.received("get_profiles")] == ["hollow"] * 2  # retry_attempts: 2


async def test_klaviyo_unreachable_pauses_then_every_record_goes_through(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    klaviyo_sim.faults = Faults(drop_next=6)  # more dropped connections than the client retries
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        await svc.send("customer-changes", [(f"c-{i}".encode(), _debezium("c", _customer(f"c-{i}"))) for i in range(3)])
        finished = await svc.wait_finished(3)

    assert [outcome for _, outcome in finished] == ["succeeded"] * 3
    assert len(klaviyo_sim.state.store.profiles) == 3


async def test_readyz_says_not_ready_while_kafka_does_not_answer_the_background_view(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
) -> None:
    import dataclasses
    import urllib.error
    import urllib.request

    def readyz(port: int) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read())

    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        service = svc.service
        assert service.ops is not None and service.view is not None and service.runtime is not None
        await service.runtime.assigned.wait()
        assert readyz(service.ops.port)[0] == 200
        # what the view keeps after a refresh that could not reach the broker
        service.view.snapshot = dataclasses.replace(
            service.view.snapshot, errors={"lag": "KafkaConnectionError: Unable to bootstrap"})
        status, body = readyz(service.ops.port)
        assert status == 503 and body["kafka"] == {"lag": "KafkaConnectionError: Unable to bootstrap"}


# --- order events, batched across records ----------------------------------------------------------------------
def _guest_orders(numbers: range, bad: dict[int, str] | None = None) -> list[tuple[bytes, bytes]]:
    """Guest transactions (named by email, no customer lookups); ``bad`` gives some a created time of its own."""
    bad = bad or {}
    return [(f"t-{n}".encode(), _debezium("c", _transaction(
        f"t-{n}", None, email_address=f"guest{n}@example.com",
        **({"created_datetime": bad[n]} if n in bad else {})))) for n in numbers]


def _order_ids(numbers: Any) -> set[str]:
    return {uid for n in numbers for uid in (f"t-{n}", f"t-{n}:1:ENG-1", f"t-{n}:2:CARD-50")}


# Only Klaviyo knows these are wrong: event times the spec allows (after 1990) that Klaviyo's docs table refuses
# (before 2000), as the simulator does with ``earliest_event_year = 2000``.
KLAVIYO_ONLY_BAD = {97: "1995-06-01T00:00:00Z", 311: "1999-12-31T23:59:59Z", 444: "1990-01-01T00:00:01Z"}


async def test_500_orders_in_shared_jobs_dead_letter_exactly_the_3_klaviyo_refuses(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    orders = _guest_orders(range(500), KLAVIYO_ONLY_BAD)
    klaviyo_sim.state.store.earliest_event_year = 2000
    async with running_service(_settings(topic_space, unique, klaviyo_sim)) as svc:
        await svc.send("transaction-changes", orders)
        finished = await svc.wait_finished(500, timeout_s=120)
        letters = await svc.dead_letters("transaction-changes", expected=3)
        errors = await svc.error_log(expected=3)
        delivered_once = sorted(str(e.unique_id) for e in klaviyo_sim.state.store.events)
        await svc.send("transaction-changes", orders)  # redelivered, as after a crash before the commit
        again = await svc.wait_finished(1000, timeout_s=120)

    outcomes = {message.key: outcome for message, outcome in finished}
    assert {key for key, outcome in outcomes.items() if outcome == "dead_lettered"} == {
        f"t-{n}".encode() for n in KLAVIYO_ONLY_BAD}
    assert sum(outcome == "succeeded" for outcome in outcomes.values()) == 497
    assert sorted(letter.key for letter in letters) == sorted(f"t-{n}".encode() for n in KLAVIYO_ONLY_BAD)
    for n in KLAVIYO_ONLY_BAD:
        record = await _expect_failure(svc, "transaction-changes", letters, errors, f"t-{n}".encode(),
                                       catalog.KLAVIYO_REJECTED_REQUEST, catalog.Flow.PLACED_ORDER_FROM_IPAAS)
        assert record["message"] == ("Error calling Klaviyo (400 invalid: The event time must be after 2000 and at "
                                     "most one year in the future.)")
    good = set(range(500)) - set(KLAVIYO_ONLY_BAD)
    assert delivered_once == sorted(_order_ids(good))  # each of the 497 orders' 3 events exactly once
    jobs = [r for r in klaviyo_sim.received("bulk_create_events") if r.status == 202]
    assert 0 < len(jobs) < 50  # shared across records, not one per order
    # the redelivery: the same 3 refused again, nothing new stored
    assert sum(outcome == "succeeded" for _, outcome in again[500:]) == 497
    assert sorted(str(e.unique_id) for e in klaviyo_sim.state.store.events) == delivered_once


async def test_a_job_refused_without_a_pointer_is_bisected_to_the_orders_at_fault(
    topic_space: TopicSpace, unique: str, klaviyo_sim: KlaviyoSimulator
):
    klaviyo_sim.faults = Faults(omit_error_sources=True, operations=["bulk_create_events"])
    bad = {13: "1995-06-01T00:00:00Z", 71: "1995-06-01T00:00:00Z"}
    klaviyo_sim.state.store.earliest_event_year = 2000
    settings = service_settings(topic_space, unique, runtime={"retry_attempts": 2}, klaviyo={
        "base_url": klaviyo_sim.base_url, "api_key": DEFAULT_API_KEY, "max_retries": 1, "event_linger_ms": 300})
    async with running_service(settings) as svc:
        await svc.send("transaction-changes", _guest_orders(range(100), bad))
        finished = await svc.wait_finished(100, timeout_s=120)
        letters = await svc.dead_letters("transaction-changes", expected=2)
        errors = await svc.error_log(expected=2)

    assert sorted(message.key for message, outcome in finished if outcome == "dead_lettered") == [b"t-13", b"t-71"]
    for key in (b"t-13", b"t-71"):
        record = await _expect_failure(svc, "transaction-changes", letters, errors, key,
                                       catalog.KLAVIYO_REJECTED_REQUEST, catalog.Flow.PLACED_ORDER_FROM_IPAAS)
        assert record["message"].startswith("Error calling Klaviyo (400 invalid: The event time must be after 2000")
    assert sorted(str(e.unique_id) for e in klaviyo_sim.state.store.events) == sorted(
        _order_ids(set(range(100)) - set(bad)))
    refused = [r for r in klaviyo_sim.received("bulk_create_events") if r.status == 400]
    assert len(refused) >= 3  # the job, then halves of it down to each order at fault
