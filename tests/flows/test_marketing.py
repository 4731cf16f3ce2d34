"""Marketing consent (``SubscribeProfile``) and list membership (``LIST_``/``UCLIST_``) FROM iPaaS.com, against the
Klaviyo simulator (bodies validated against Klaviyo's contract)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.flows.context import FlowContext
from consumer.flows.marketing import CONSENT_PROPERTY, MarketingState, list_changes
from consumer.flows.profiles_from import sync_profile
from consumer.records import Customer
from simulators.klaviyo import KlaviyoSimulator

from .conftest import MakeContext, change, customer


def ops(simulator: KlaviyoSimulator) -> list[str]:
    return [request.operation or "" for request in simulator.received()]


def consent_of(simulator: KlaviyoSimulator) -> str:
    (record,) = simulator.store.profiles.values()
    return record.email_consent


def with_fields(**fields: Any) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in fields.items()]


def consent_customer(value: Any, **overrides: Any) -> dict[str, Any]:
    return customer(custom_fields=with_fields(SubscribeProfile=value), **overrides)


def context(make_ctx: MakeContext, simulator: KlaviyoSimulator, **state: Any) -> tuple[FlowContext, str]:
    consent_list = simulator.store.create_list("Newsletter")
    return make_ctx(marketing=MarketingState(consent_list_id=consent_list.id, **state)), consent_list.id


async def test_consent_given_subscribes_through_a_job_and_joins_the_consent_list(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    ctx, list_id = context(make_ctx, simulator)
    await sync_profile(change("customer", "created", consent_customer("true")), ctx)

    assert ops(simulator) == ["create_profile", "get_profile", "bulk_subscribe_profiles", "update_profile"]
    (job,) = simulator.received("bulk_subscribe_profiles")
    assert job.body["data"]["relationships"]["list"]["data"] == {"type": "list", "id": list_id}
    (record,) = simulator.store.profiles.values()
    assert record.email_consent == "SUBSCRIBED"
    assert record.properties[CONSENT_PROPERTY] is True
    assert simulator.store.lists[list_id].members == {record.id}


async def test_creating_a_profile_does_not_subscribe_it_without_a_consent_list(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    await sync_profile(change("customer", "created", consent_customer(True)), make_ctx())
    assert ops(simulator) == ["create_profile"]
    assert consent_of(simulator) == "NEVER_SUBSCRIBED"


async def test_consent_withdrawn_unsubscribes_and_unchanged_sends_nothing(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    ctx, _ = context(make_ctx, simulator)
    await sync_profile(change("customer", "created", consent_customer("true")), ctx)
    simulator.state.requests.clear()

    await sync_profile(change("customer", "updated", consent_customer("false")), ctx)
    assert ops(simulator) == ["update_profile", "get_profile", "bulk_unsubscribe_profiles", "update_profile"]
    assert consent_of(simulator) == "UNSUBSCRIBED"
    simulator.state.requests.clear()

    await sync_profile(change("customer", "updated", consent_customer("false")), ctx)
    assert ops(simulator) == ["update_profile"]  # unchanged, known to this process: no read, no job
    restarted = make_ctx(marketing=MarketingState(consent_list_id=ctx.marketing.consent_list_id))
    simulator.state.requests.clear()
    await sync_profile(change("customer", "updated", consent_customer("false")), restarted)
    assert ops(simulator) == ["get_profiles", "update_profile", "get_profile"]  # read once, nothing sent
    assert consent_of(simulator) == "UNSUBSCRIBED"


async def test_an_unrelated_update_does_not_resubscribe_a_profile_that_unsubscribed(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    ctx, list_id = context(make_ctx, simulator)
    await sync_profile(change("customer", "created", consent_customer("true")), ctx)
    (record,) = simulator.store.profiles.values()
    record.email_consent = "UNSUBSCRIBED"  # the person clicked "unsubscribe" in an email
    record.consent_timestamp = simulator.store.now()
    simulator.state.requests.clear()

    renamed = consent_customer("true", first_name="Augusta")
    await sync_profile(change("customer", "updated", renamed), ctx)
    restarted = make_ctx(marketing=MarketingState(consent_list_id=list_id))
    await sync_profile(change("customer", "updated", renamed), restarted)

    assert "bulk_subscribe_profiles" not in ops(simulator)
    assert record.email_consent == "UNSUBSCRIBED"
    assert record.attributes["first_name"] == "Augusta"

    # the platform says so now: withdrawn, then given again
    await sync_profile(change("customer", "updated", consent_customer("false")), restarted)
    await sync_profile(change("customer", "updated", consent_customer("true")), restarted)
    assert len(simulator.received("bulk_subscribe_profiles")) == 1
    assert record.email_consent == "SUBSCRIBED"


async def test_consent_never_applied_does_not_override_a_newer_unsubscription(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    ctx, _ = context(make_ctx, simulator)
    record, _ = simulator.store.upsert_profile(None, {"email": "ada@shop.test", "external_id": "C1"}, None)
    record.email_consent = "UNSUBSCRIBED"
    record.consent_timestamp = simulator.store.now()
    stale = (datetime.now(UTC) - timedelta(days=30)).isoformat()

    await sync_profile(change("customer", "updated", consent_customer("true", updated_datetime=stale)), ctx)
    assert "bulk_subscribe_profiles" not in ops(simulator)
    assert record.email_consent == "UNSUBSCRIBED"
    assert record.properties[CONSENT_PROPERTY] is True


async def test_list_fields_join_and_leave_lists_once_under_redelivery(
    simulator: KlaviyoSimulator, make_ctx: MakeContext
) -> None:
    store = simulator.store
    vip, news, old, configured = (store.create_list(name) for name in ("VIP", "News", "Old", "Wholesale"))
    ctx = make_ctx(marketing=MarketingState(list_ids={"Wholesale": configured.id}))
    fields = with_fields(LIST_VIP="true", LIST_News=False, UCLIST_Old=True, LIST_Wholesale=1, LIST_Nowhere=True)
    record = customer(custom_fields=fields)
    await sync_profile(change("customer", "created", record), ctx)
    (profile_id,) = store.profiles
    old.members.add(profile_id)
    await sync_profile(change("customer", "created", record), ctx)  # redelivered
    restarted = make_ctx(marketing=MarketingState(list_ids={"Wholesale": configured.id}))
    await sync_profile(change("customer", "created", record), restarted)  # redelivered after a restart

    assert vip.members == {profile_id}
    assert configured.members == {profile_id}
    assert news.members == set()
    assert old.members == set()
    assert len(simulator.received("add_profiles_to_list")) == 4  # 2 lists, by this process and the restarted one
    lookups = [r.query["filter"] for r in simulator.received("get_lists")]
    assert 'equals(name,"Wholesale")' not in lookups
    assert lookups.count('equals(name,"VIP")') == 2  # cached per process
    assert consent_of(simulator) == "NEVER_SUBSCRIBED"  # list membership gives no consent


def test_uclist_wins_over_list_for_the_same_name() -> None:
    record = Customer.model_validate({"id": "C1", "custom_fields": with_fields(
        LIST_A="true", UCLIST_A="true", LIST_B="yes", UCLIST_C="false", LIST_="true")})
    assert list_changes(record) == (["B"], ["A"])
