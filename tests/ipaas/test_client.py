"""The iPaaS.com client against the running simulator: operations, the wire format, failures and retries."""

from __future__ import annotations

import httpx
import pytest

from consumer.http.ratelimit import Window
from consumer.ipaas import ADDRESS_TABLE, IpaasClient, IpaasConnectionError, IpaasRejected
from consumer.ipaas.client import DEFAULT_BACKOFF
from consumer.observability.metrics import IPAAS_REQUESTS
from consumer.records import Customer, Transaction
from consumer.settings import IpaasSettings
from simulators.ipaas import Faults, IpaasSimulator
from tests.support.sleeps import RecordedSleeps

from .conftest import FAST_BACKOFF, MakeIpaas


async def test_customer_round_trip_keeps_unicode_and_speaks_snake_case(
    ipaas: IpaasClient, ipaas_sim: IpaasSimulator
) -> None:
    created = await ipaas.create_customer(
        {"email_address": "zoë@exämple.test", "first_name": "Zoë", "last_name": "Ñúñez 山田", "company": "Café"}
    )
    assert created.id and created.first_name == "Zoë" and created.last_name == "Ñúñez 山田"

    fetched = await ipaas.get_customer(created.id)
    assert fetched is not None
    assert (fetched.email_address, fetched.company) == ("zoë@exämple.test", "Café")
    request = ipaas_sim.received("create_customer")[0]
    assert request.auth_scheme == "Bearer"
    assert request.path == "/customers/v2/Customer"
    assert request.body == {"email_address": "zoë@exämple.test", "first_name": "Zoë", "last_name": "Ñúñez 山田",
                            "company": "Café"}

    updated = await ipaas.update_customer(created.id, {"last_name": "Other"}, current=fetched)
    assert (updated.first_name, updated.last_name) == ("Zoë", "Other")
    put = ipaas_sim.received("update_customer")[0]
    assert put.path == f"/customers/v2/Customer/{created.id}"
    assert put.body["first_name"] == "Zoë" and put.body["last_name"] == "Other"  # the whole record is sent

    assert await ipaas.get_customer("999999999") is None


async def test_find_by_email_is_exact_and_contains_is_case_insensitive(
    ipaas: IpaasClient, ipaas_sim: IpaasSimulator
) -> None:
    first = ipaas_sim.seed_customer(email_address="Ann@Shop.test")
    second = ipaas_sim.seed_customer(email_address="Ann@Shop.test")  # emails are not unique
    ipaas_sim.seed_customer(email_address="other@shop.test")

    exact = await ipaas.find_customers_by_email("Ann@Shop.test")
    assert [c.id for c in exact] == [first.id, second.id]
    assert await ipaas.find_customers_by_email("ann@shop.test") == []
    loose = await ipaas.find_customers_by_email("ann@shop.test", exact=False)
    assert [c.id for c in loose] == [first.id, second.id]
    assert ipaas_sim.received("find_customers")[0].query == {"action": "equals", "EmailAddress": "Ann@Shop.test"}


async def test_external_id_links_both_ways_and_deleted_links(ipaas: IpaasClient, ipaas_sim: IpaasSimulator) -> None:
    customer = ipaas_sim.seed_customer(email_address="link@shop.test")
    assert await ipaas.lookup_internal_id("01PROFILE") is None
    assert await ipaas.lookup_external_id(customer.id) is None

    await ipaas.update_external_id(customer.id, "01PROFILE")
    await ipaas.update_external_id(customer.id, "01PROFILE")  # idempotent
    assert await ipaas.lookup_internal_id("01PROFILE") == customer.id
    assert await ipaas.lookup_external_id(customer.id) == "01PROFILE"
    body = ipaas_sim.received("update_external_id")[0].body
    assert body == {"table_name": "customer", "system_id": ipaas.system_id, "external_id": "01PROFILE",
                    "internal_id": customer.id}
    fetched = await ipaas.get_customer(customer.id)
    assert fetched is not None and fetched.external_ids[0]["external_id"] == "01PROFILE"

    ipaas_sim.store.delete_customer(customer.id)
    assert await ipaas.lookup_internal_id("01PROFILE") is None
    assert await ipaas.lookup_internal_id("01PROFILE", allow_deleted=True) == customer.id
    assert await ipaas.lookup_external_id(customer.id, allow_deleted=True) == "01PROFILE"


async def test_addresses_are_children_of_a_customer(ipaas: IpaasClient, ipaas_sim: IpaasSimulator) -> None:
    customer = ipaas_sim.seed_customer(email_address="home@shop.test")
    address = await ipaas.create_customer_address(customer.id, {"address_1": "Hauptstraße 5", "city": "Köln"})
    assert address.customer_id == customer.id
    assert ipaas_sim.received("create_customer_address")[0].path == f"/customers/v2/Customer/{customer.id}/Address"
    assert address.id is not None
    changed = await ipaas.update_customer_address(customer.id, address.id, {"postal_code": "50667"}, current=address)
    assert (changed.address_1, changed.city, changed.postal_code) == ("Hauptstraße 5", "Köln", "50667")
    assert [a.id for a in await ipaas.list_customer_addresses(customer.id)] == [address.id]
    assert await ipaas.list_customer_addresses("404404") == []

    await ipaas.update_external_id(address.id, "01P|address", table=ADDRESS_TABLE)
    assert await ipaas.lookup_internal_id("01P|address", table=ADDRESS_TABLE) == address.id
    assert await ipaas.lookup_internal_id("01P|address") is None  # another table


async def test_fetch_record_reads_customers_with_addresses_and_transactions(
    ipaas: IpaasClient, ipaas_sim: IpaasSimulator
) -> None:
    customer = ipaas_sim.seed_customer(email_address="fetch@shop.test",
                                       addresses=[{"city": "Oslo", "is_primary_billing": True}])
    record = await ipaas.fetch_record("customer", customer.id)
    assert isinstance(record, Customer)
    assert record.primary_billing_address is not None and record.primary_billing_address.city == "Oslo"

    ipaas_sim.store.transactions["T-1"] = {"id": "T-1", "transaction_number": "1001", "total": "12.50",
                                           "lines": [{"sku": "SKU-1", "qty": 1}]}
    transaction = await ipaas.fetch_record("transaction", "T-1")
    assert isinstance(transaction, Transaction) and transaction.lines[0].sku == "SKU-1"

    with pytest.raises(IpaasRejected) as caught:
        await ipaas.fetch_record("customer", "424242")
    assert (caught.value.http_status, caught.value.retryable) == (404, False)
    with pytest.raises(ValueError):
        await ipaas.fetch_record("klaviyo_profile", "x")


async def test_validation_problem_is_a_clear_non_retryable_error(ipaas: IpaasClient, ipaas_sim: IpaasSimulator) -> None:
    with pytest.raises(IpaasRejected) as caught:
        await ipaas.create_customer({"email_address": "long@shop.test", "first_name": "x" * 5000})
    error = caught.value
    assert (error.http_status, error.retryable, error.infrastructure) == (400, False, False)
    assert "FirstName: The field FirstName must be a string with a maximum length of 255." in error.message
    assert error.errors == {"FirstName": ["The field FirstName must be a string with a maximum length of 255."]}
    assert ipaas_sim.store.customers == {}

    with pytest.raises(IpaasRejected) as missing:
        await ipaas.create_customer({"first_name": "No email"})
    assert "EmailAddress: The EmailAddress field is required." in missing.value.message


async def test_a_wrong_token_is_401_retryable_infrastructure_and_never_leaks(
    make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator
) -> None:
    secret = "wrong-token-abcdef0123456789"
    client = make_ipaas(token=secret)
    with pytest.raises(IpaasRejected) as caught:
        await client.get_customer("1")
    error = caught.value
    assert (error.http_status, error.retryable, error.infrastructure) == (401, True, True)
    assert secret not in str(error) and secret not in repr(client)
    assert ipaas_sim.received()[0].auth_scheme == "Bearer"
    with pytest.raises(ValueError, match="api_token"):
        IpaasClient(IpaasSettings(base_url=ipaas_sim.base_url))


async def test_5xx_on_a_read_is_retried(
    make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator, sleeps: RecordedSleeps
) -> None:
    customer = ipaas_sim.seed_customer(email_address="retry@shop.test")
    ipaas_sim.faults = Faults(fail_next=[503, 500, 502])
    before = IPAAS_REQUESTS.labels("get_customer", "GET", "503")._value.get()
    fetched = await make_ipaas(max_retries=4).get_customer(customer.id)
    assert fetched is not None and fetched.id == customer.id
    assert [r.status for r in ipaas_sim.received("get_customer")] == [503, 500, 502, 200]
    assert IPAAS_REQUESTS.labels("get_customer", "GET", "503")._value.get() == before + 1
    # the 503's Retry-After: 1 stretches the first backoff; the others stay within the backoff's ceilings
    assert sleeps.delays[0] == 1.0 and len(sleeps.delays) == 3
    assert all(0 <= delay <= FAST_BACKOFF.ceiling(attempt) for attempt, delay in enumerate(sleeps.delays) if attempt)


async def test_5xx_on_a_create_is_not_resent_but_raised_retryable(
    make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator
) -> None:
    ipaas_sim.faults = Faults(fail_next=[503])
    with pytest.raises(IpaasRejected) as caught:
        await make_ipaas().create_customer({"email_address": "once@shop.test"})
    assert (caught.value.http_status, caught.value.retryable, caught.value.infrastructure) == (503, True, True)
    assert len(ipaas_sim.received("create_customer")) == 1


async def test_429_waits_for_retry_after_then_succeeds_even_for_a_create(
    make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator
) -> None:
    ipaas_sim.faults = Faults(fail_next=[429], retry_after_s=0)
    created = await make_ipaas().create_customer({"email_address": "throttled@shop.test"})
    assert [r.status for r in ipaas_sim.received("create_customer")] == [429, 201]
    assert list(ipaas_sim.store.customers) == [created.id]


async def test_an_advertised_quota_configures_the_limiter(make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator) -> None:
    ipaas_sim.config.rate_limit_per_s = 50
    client = make_ipaas()
    await client.find_customers_by_email("quota@shop.test")
    assert client._limiter().windows == (Window(50, 1.0),)


async def test_a_non_json_answer_to_a_read_is_retried(make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator) -> None:
    customer = ipaas_sim.seed_customer(email_address="html@shop.test")
    ipaas_sim.faults = Faults(non_json_next=2)
    fetched = await make_ipaas().get_customer(customer.id)
    assert fetched is not None and fetched.id == customer.id
    assert [r.fault for r in ipaas_sim.received("get_customer")] == ["non_json", "non_json", None]


async def test_a_non_json_answer_that_persists_is_a_retryable_error_naming_the_page(
    make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator
) -> None:
    ipaas_sim.faults = Faults(non_json_next=3)
    with pytest.raises(IpaasRejected) as caught:
        await make_ipaas(max_retries=2).find_customers_by_email("x@shop.test")
    error = caught.value
    assert (error.http_status, error.retryable) == (200, True)
    assert "text/html page: 200 Service Gateway" in error.message


async def test_a_garbled_answer_to_a_create_is_not_resent(make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator) -> None:
    ipaas_sim.faults = Faults(garble_next=1)
    with pytest.raises(IpaasRejected) as caught:
        await make_ipaas().create_customer({"email_address": "garbled@shop.test"})
    assert caught.value.retryable
    assert len(ipaas_sim.store.customers) == 1  # created once; the flow's retry finds it by email


async def test_dropped_connections_on_reads_are_retried(make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator) -> None:
    customer = ipaas_sim.seed_customer(email_address="drop@shop.test")
    ipaas_sim.faults = Faults(drop_next=2)
    fetched = await make_ipaas().get_customer(customer.id)
    assert fetched is not None
    assert len(ipaas_sim.received("get_customer")) == 3


async def test_a_hung_server_times_out_as_a_connection_error(make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator) -> None:
    ipaas_sim.faults = Faults(hang_next=5, hang_s=5.0)
    client = make_ipaas(max_retries=0, read_timeout_s=0.2, total_timeout_s=0.5)
    with pytest.raises(IpaasConnectionError) as caught:
        await client.create_customer({"email_address": "hang@shop.test"})
    error = caught.value
    assert (error.retryable, error.infrastructure) == (True, True)
    assert "ReadTimeout" in error.message and "after 1 attempt" in error.message


async def test_an_unreachable_server_is_a_connection_error(ipaas_sim: IpaasSimulator, sleeps: RecordedSleeps) -> None:
    settings = IpaasSettings(base_url="http://127.0.0.1:9", api_token="tok-unreachable-123456", max_retries=1)
    async with IpaasClient(settings, sleep=sleeps) as client:
        with pytest.raises(IpaasConnectionError) as caught:
            await client.get_customer("1")
    assert "ConnectError" in caught.value.message and "after 2 attempts" in caught.value.message
    assert len(sleeps.delays) == 1 and 0 <= sleeps.delays[0] <= DEFAULT_BACKOFF.ceiling(0)


# --- a success without what the operation returns ------------------------------------------------------------
async def test_a_success_without_the_customer_is_an_ipaas_error_of_the_record(
    make_ipaas: MakeIpaas, ipaas_sim: IpaasSimulator
) -> None:
    customer = ipaas_sim.seed_customer(email_address="hollow@shop.test")
    ipaas_sim.faults = Faults(hollow_next=2, operations=["get_customer", "create_customer"])
    client = make_ipaas()
    with pytest.raises(IpaasRejected) as read:
        await client.get_customer(customer.id)  # not "no such customer"
    with pytest.raises(IpaasRejected) as created:
        await client.create_customer({"email_address": "new@shop.test"})
    assert read.value.message == ("Error calling iPaaS.com (iPaaS.com answered 200 to GET /customers/v2/Customer/{id} "
                                  "without the customer it should return)")
    assert created.value.message == ("Error calling iPaaS.com (iPaaS.com answered 201 to POST /customers/v2/Customer "
                                     "without the customer it should return)")
    for error in (read.value, created.value):
        assert (error.retryable, error.outage) == (True, None)
    assert len(ipaas_sim.received("create_customer")) == 1  # a create is not sent again


@pytest.mark.parametrize(("body", "operation", "detail"), [
    (b'{"first_name": "No id"}', "get_customer", "without the customer it should return (unreadable id)"),
    (b"[]", "get_customer", "without the customer it should return (a JSON array instead of an object)"),
    (b'{"total": 0}', "find_customers", "without the list of customers it should return (a JSON object instead "
                                        "of an array)"),
])
async def test_a_json_answer_of_another_shape_is_an_ipaas_error_not_an_unexpected_one(
    sleeps: RecordedSleeps, body: bytes, operation: str, detail: str
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body,
                                                                   headers={"content-type": "application/json"}))
    settings = IpaasSettings(base_url="http://ipaas.test", api_token="token-value-1234", max_retries=0)
    async with IpaasClient(settings, transport=transport, sleep=sleeps) as client:
        with pytest.raises(IpaasRejected) as caught:
            if operation == "get_customer":
                await client.get_customer("42")
            else:
                await client.find_customers_by_email("x@shop.test")
    assert caught.value.message.endswith(f"{detail})") and caught.value.outage is None
