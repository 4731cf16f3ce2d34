"""The Klaviyo profile poller against the Klaviyo simulator and the real broker: publishing, the durable
watermark in the compacted state topic, restarts, the overlapping second, at-least-once, sync and backfill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consumer.envelopes import Action, EnvelopeFormat, decode
from consumer.http.backoff import Backoff
from consumer.kafka import reliable_producer
from consumer.klaviyo import ApiKeyAuth, KlaviyoClient, KlaviyoRejected
from consumer.observability.metrics import POLLER_INTERVAL, POLLER_LAST_POLL, POLLER_PROFILES, POLLER_WATERMARK
from consumer.poller import (
    CHANGES_TOPIC,
    STATE_TOPIC,
    ProfilePoller,
    Watermark,
    WatermarkStore,
    change_record,
    open_poller,
)
from consumer.records import KlaviyoProfile
from consumer.settings import KlaviyoSettings, Settings
from consumer.topics import TopicCatalog
from simulators.klaviyo import DEFAULT_API_KEY, Faults, KlaviyoSimulator, SimulatorConfig
from simulators.klaviyo.store import Store
from tests.support.kafka import end_offsets, kafka_settings, read_all
from tests.support.sleeps import RecordedSleeps
from tests.support.topic_space import TopicSpace

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A hand-driven clock shared by the Klaviyo simulator's store and the poller."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


# --- the watermark itself ---------------------------------------------------------------------------------------
def test_watermark_covers_what_was_published_and_advances_monotonically() -> None:
    mark = Watermark(T0, {"a": "d1"})
    assert mark.covers(T0 - timedelta(seconds=1), "z")
    assert mark.covers(T0, "a", "d1") and mark.covers(T0, "a")
    assert not mark.covers(T0, "a", "d2")  # changed again within the watermark's second
    assert not mark.covers(T0, "b", "d1")
    assert not mark.covers(T0 + timedelta(seconds=1), "a", "d1")
    assert mark.advance(T0, "b", "d3") == Watermark(T0, {"a": "d1", "b": "d3"})
    assert mark.advance(T0, "a", "d1") is mark
    assert mark.advance(T0, "a", "d2") == Watermark(T0, {"a": "d2"})
    assert mark.advance(T0 + timedelta(seconds=1), "c", "d4") == Watermark(T0 + timedelta(seconds=1), {"c": "d4"})
    assert mark.advance(T0 - timedelta(seconds=5), "old", "d5") is mark
    naive = Watermark(T0).advance(datetime(2026, 3, 1, 12, 0, 0), "n", "d6")  # a naive time is UTC
    assert naive.ids_at_watermark == {"n"}


def test_watermark_json_round_trip_and_refusals() -> None:
    mark = Watermark(T0, {"b": "22", "a": "11"})
    document = orjson.loads(mark.to_json())
    assert document == {"updated": "2026-03-01T12:00:00+00:00", "ids_at_watermark": ["a", "b"],
                        "digests": {"a": "11", "b": "22"}, "version": 1}
    assert Watermark.from_json(mark.to_json()) == mark
    legacy = Watermark.from_json(b'{"updated": "2026-03-01T12:00:00Z", "ids_at_watermark": ["a"]}')
    assert legacy == Watermark(T0, {"a": None}) and legacy.covers(T0, "a", "anything")
    for bad in (b"[]", b'{"ids_at_watermark": []}', b'{"updated": "2026-03-01T12:00:00Z", "ids_at_watermark": [1]}'):
        with pytest.raises(ValueError):
            Watermark.from_json(bad)


def test_a_crowded_second_is_not_listed_but_kept_inside_the_overlap() -> None:
    crowded = Watermark(T0, {f"id{i}": None for i in range(3)})
    assert crowded.bounded(3) is crowded
    bounded = crowded.bounded(2)
    assert bounded == Watermark(T0 - timedelta(microseconds=1))
    assert not any(bounded.covers(T0, f"id{i}") for i in range(3))  # published again, never missed
    assert Watermark.from_json(bounded.to_json()) == bounded


# --- against the simulator and the broker -----------------------------------------------------------------------
@dataclass
class Rig:
    """A Klaviyo simulator on a hand-driven clock, a client, a producer and a prefixed topic catalog."""

    sim: KlaviyoSimulator
    clock: Clock
    klaviyo: KlaviyoClient
    producer: AIOKafkaProducer
    catalog: TopicCatalog
    bootstrap: str
    settings: Any

    @property
    def changes(self) -> str:
        return self.catalog.name(CHANGES_TOPIC)

    @property
    def state(self) -> str:
        return self.catalog.name(STATE_TOPIC)

    @property
    def partitions(self) -> int:
        return self.catalog.topics[CHANGES_TOPIC].partitions

    def poller(self, **options: Any) -> ProfilePoller:
        options.setdefault("clock", self.clock)
        options.setdefault("start_at", T0)
        return ProfilePoller.from_catalog(self.klaviyo, self.producer, kafka=self.settings, catalog=self.catalog,
                                          **options)

    def profile(self, email: str, **attributes: Any) -> str:
        """Create a profile (updated = the clock's current second)."""
        return self.sim.store.create_profile({"email": email, **attributes}).id

    def touch(self, profile_id: str, **attributes: Any) -> None:
        self.sim.store.update_profile(profile_id, attributes, None)

    async def published(self) -> list[tuple[str, Any]]:
        """Every record on the changes topic so far, decoded as the dispatcher decodes it: (key, event)."""
        total = sum((await end_offsets(self.bootstrap, self.changes, self.partitions)).values())
        records = await read_all(self.bootstrap, self.changes, total) if total else []
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        out = []
        for record in records:
            (event,) = decode("klaviyo_profile", record.key, record.value, record.headers)
            out.append((record.key.decode(), event))
        return out

    async def count(self) -> int:
        return sum((await end_offsets(self.bootstrap, self.changes, self.partitions)).values())

    async def stored_watermark(self) -> Watermark | None:
        return await WatermarkStore(self.settings, self.producer, self.state).load("klaviyo-profiles")


@pytest.fixture
async def rig(kafka_bootstrap: str, topic_space: TopicSpace, sleeps: RecordedSleeps) -> AsyncIterator[Rig]:
    clock = Clock()
    settings = kafka_settings(kafka_bootstrap)
    catalog = await topic_space.catalog(CHANGES_TOPIC, STATE_TOPIC, partitions=2)  # the poller's own topics
    async with KlaviyoSimulator(SimulatorConfig(seed=3, validate_bodies=False)) as sim:
        sim.state.store = Store(clock=clock)
        klaviyo_settings = KlaviyoSettings(base_url=sim.base_url, api_key=DEFAULT_API_KEY, max_retries=2,
                                           connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=10.0)
        async with KlaviyoClient(klaviyo_settings, ApiKeyAuth(DEFAULT_API_KEY),
                                 backoff=Backoff(base_s=0.01, cap_s=0.02), retry_after_cap_s=0.05,
                                 sleep=sleeps) as klaviyo:
            producer = reliable_producer(settings)
            await producer.start()
            try:
                yield Rig(sim, clock, klaviyo, producer, catalog, kafka_bootstrap, settings)
            finally:
                await producer.stop()


async def test_changed_profiles_are_published_keyed_by_id_and_decodable(rig: Rig) -> None:
    before = POLLER_PROFILES._value.get()
    rig.clock.tick()
    ada = rig.profile("ada@shop.test", first_name="Ada", location={"city": "Köln"})
    rig.clock.tick()
    bob = rig.profile("bob@shop.test", first_name="Bob 🚲")
    poller = rig.poller()

    first = await poller.run_once()
    assert (first.published, first.ids) == (2, [ada, bob])
    rig.clock.tick()
    rig.touch(ada, last_name="Lovelace")
    second = await poller.run_once()
    assert (second.published, second.ids) == (1, [ada])
    third = await poller.run_once()
    assert third.published == 0

    published = await rig.published()
    by_key: dict[str, list[Any]] = {}
    for key, item in published:
        by_key.setdefault(key, []).append(item)
    assert {key: [e.action for e in events] for key, events in by_key.items()} == {
        ada: [Action.CREATED, Action.UPDATED], bob: [Action.CREATED]}  # per key in order (one partition each)
    event = by_key[ada][1]
    assert event.format is EnvelopeFormat.PLAIN_JSON and event.record_id == ada
    assert isinstance(event.record, KlaviyoProfile)
    assert (event.record.attributes.last_name, event.record.attributes.location.city) == ("Lovelace", "Köln")
    assert event.occurred_at == T0 + timedelta(seconds=3)
    assert by_key[bob][0].record.attributes.first_name == "Bob 🚲"
    assert POLLER_PROFILES._value.get() == before + 3
    assert POLLER_WATERMARK._value.get() == (T0 + timedelta(seconds=3)).timestamp()
    assert (await rig.stored_watermark()).ids_at_watermark == {ada}
    assert (await rig.stored_watermark()).updated == T0 + timedelta(seconds=3)

    request = rig.sim.received("get_profiles")[-1]
    assert request.query["filter"] == f"greater-than(updated,{(T0 + timedelta(seconds=2)).isoformat()})"
    assert request.query["sort"] == "updated"


async def test_the_watermark_survives_a_restart_with_no_gap_and_no_duplicate(rig: Rig) -> None:
    rig.clock.tick()
    early = [rig.profile(f"early{i}@shop.test") for i in range(3)]
    rig.clock.tick()
    same_second = [rig.profile(f"same{i}@shop.test") for i in range(3)]
    first = rig.poller(page_size=2)
    assert (await first.run_once()).published == 6
    watermark = await rig.stored_watermark()
    assert watermark is not None
    assert (watermark.updated, watermark.ids_at_watermark) == (T0 + timedelta(seconds=2), set(same_second))

    # while nobody polls: more changes in the watermark's own second, and later ones
    late_in_second = rig.profile("late@shop.test")
    rig.touch(same_second[0], first_name="Changed in the same second")  # same second, new content
    rig.clock.tick()
    after = rig.profile("after@shop.test")
    rig.touch(early[1], first_name="Changed later")

    restarted = rig.poller(page_size=2, start_at=T0 + timedelta(days=30))  # a stored watermark wins
    result = await restarted.run_once()
    assert set(result.ids) == {late_in_second, same_second[0], after, early[1]}
    assert result.skipped == 2  # the overlapping second's unchanged, already-published profiles
    published = await rig.published()
    assert len(published) == await rig.count() == 10
    assert sorted(key for key, _ in published) == sorted(
        [*early, *same_second, late_in_second, same_second[0], after, early[1]])
    latest = [event for key, event in published if key == same_second[0]][-1]
    assert latest.record.attributes.first_name == "Changed in the same second"
    again = await restarted.run_once()
    assert (again.published, await rig.count()) == (0, 10)


async def test_a_crash_after_publishing_republishes_at_most_the_unsaved_page(rig: Rig) -> None:
    ids = []
    for i in range(4):
        rig.clock.tick()
        ids.append(rig.profile(f"p{i}@shop.test"))
    crashing = rig.poller(page_size=2)
    await crashing.watermark()
    saves = 0
    real_save = crashing.store.save

    async def save_then_crash(name: str, watermark: Watermark) -> None:
        nonlocal saves
        saves += 1
        if saves == 2:
            raise ConnectionError("broker gone before the watermark was written")
        await real_save(name, watermark)

    crashing.store.save = save_then_crash  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await crashing.run_once()
    assert await rig.count() == 4  # both pages were published (acknowledged) before the crash

    result = await rig.poller(page_size=2).run_once()
    assert result.ids == ids[2:]  # the page whose watermark was lost, once more; nothing missed
    published = [key for key, _ in await rig.published()]
    assert sorted(published) == sorted([*ids, *ids[2:]])


async def test_a_bulk_import_in_one_second_keeps_the_state_small_and_misses_nothing(rig: Rig) -> None:
    rig.clock.tick()
    bulk = [rig.profile(f"bulk{i}@shop.test") for i in range(3)]
    first = rig.poller(max_ids_at_watermark=2)
    assert (await first.run_once()).published == 3
    assert await rig.stored_watermark() == Watermark(T0 + timedelta(seconds=1) - timedelta(microseconds=1))

    restarted = rig.poller(max_ids_at_watermark=2)
    assert sorted((await restarted.run_once()).ids) == sorted(bulk)  # that second again: inside the overlap
    rig.clock.tick()
    later = rig.profile("later@shop.test")
    # until the watermark moves past the crowded second, each poll publishes that second again
    assert sorted((await restarted.run_once()).ids) == sorted([*bulk, later])
    assert (await rig.stored_watermark()).ids_at_watermark == {later}
    assert (await restarted.run_once()).published == 0
    assert sorted(key for key, _ in await rig.published()) == sorted([*bulk, *bulk, *bulk, later])


async def test_a_new_poller_starts_at_its_start_point_and_stores_it(rig: Rig) -> None:
    old = rig.profile("before-start@shop.test")
    rig.clock.tick(10)
    poller = rig.poller(start_at=None)  # default: now
    assert (await poller.run_once()).published == 0
    assert await rig.stored_watermark() == Watermark(rig.clock())
    rig.clock.tick()
    new = rig.profile("after-start@shop.test")
    assert (await poller.run_once()).ids == [new]
    assert old not in [key for key, _ in await rig.published()]


async def test_backfill_publishes_history_and_leaves_the_watermark_alone(rig: Rig) -> None:
    rig.clock.tick()
    old = rig.profile("old@shop.test")
    rig.clock.tick(3600)
    recent = rig.profile("recent@shop.test")
    poller = rig.poller(start_at=rig.clock())
    await poller.run_once()
    stored = await rig.stored_watermark()

    result = await poller.backfill(T0)
    assert result.ids == [old, recent]
    assert (await poller.backfill(T0 + timedelta(seconds=10))).ids == [recent]
    assert await rig.stored_watermark() == stored


async def test_sync_profile_publishes_one_profile_now(rig: Rig) -> None:
    profile_id = rig.profile("one@shop.test", first_name="Uno")
    poller = rig.poller(start_at=T0 + timedelta(days=1))
    profile = await poller.sync_profile(profile_id)
    assert profile.id == profile_id
    ((key, event),) = await rig.published()
    assert key == profile_id and event.record.attributes.first_name == "Uno"
    with pytest.raises(KlaviyoRejected) as caught:
        await poller.sync_profile("01NOTAPROFILE0000000000000")
    assert caught.value.http_status == 404


async def test_run_polls_on_wake_survives_klaviyo_failures_and_stops(rig: Rig) -> None:
    poller = rig.poller(interval_s=3600, error_backoff=Backoff(base_s=0.0, cap_s=0.0))
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        await asyncio.wait_for(poller.wait_for_cycle(1), 30)
        rig.clock.tick()
        first = rig.profile("woken@shop.test")
        rig.sim.faults = Faults(fail_next=[503, 503, 503], operations=["get_profiles"])
        poller.wake()
        await asyncio.wait_for(poller.wait_for_cycle(2), 30)
        assert isinstance(poller.last_error, KlaviyoRejected) and poller.last_error.http_status == 503
        poller.wake()
        await asyncio.wait_for(poller.wait_for_cycle(3), 30)
        assert poller.last_error is None
        assert [key for key, _ in await rig.published()] == [first]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert task.done() and task.exception() is None


async def test_open_poller_wires_itself_from_the_settings(rig: Rig) -> None:
    settings = Settings.model_validate({
        "kafka": rig.settings.model_dump(),
        "klaviyo": {"base_url": rig.sim.base_url, "api_key": DEFAULT_API_KEY},
        "topic_prefix": rig.catalog.prefix,
    })
    rig.clock.tick()
    profile_id = rig.profile("wired@shop.test")
    async with open_poller(settings, start_at=T0, clock=rig.clock, interval_s=3600) as poller:
        result = await poller.run_once()
    assert result.published == 1
    assert [key for key, _ in await rig.published()] == [profile_id]


def test_change_record_names_created_and_updated_profiles() -> None:
    from consumer.klaviyo import Profile

    fresh = Profile.model_validate({"id": "01A", "attributes": {"email": "a@b.test", "created": T0, "updated": T0}})
    key, value, headers = change_record(fresh)
    document = orjson.loads(value)
    assert key == b"01A" and headers == [("content-type", b"application/json")]
    assert document["event_type"] == "klaviyo_profile/created"
    assert document["event_id"] == "01A@2026-03-01T12:00:00+00:00"
    changed = Profile.model_validate({"id": "01A", "attributes": {"created": T0, "updated": T0 + timedelta(days=1)}})
    assert orjson.loads(change_record(changed)[1])["event_type"] == "klaviyo_profile/updated"


async def test_run_exports_its_interval_and_the_time_of_its_last_successful_poll(rig: Rig) -> None:
    """What alert PollerNotPolling reads: the last poll moves on every successful poll (whether a profile changed
    or not, unlike the watermark) and stays put while polls fail."""
    poller = rig.poller(interval_s=3600, error_backoff=Backoff(base_s=0.0, cap_s=0.0))
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        await asyncio.wait_for(poller.wait_for_cycle(1), 30)
        assert POLLER_INTERVAL._value.get() == 3600
        assert POLLER_LAST_POLL._value.get() == T0.timestamp()
        watermark = POLLER_WATERMARK._value.get()
        rig.clock.tick(60)
        rig.sim.faults = Faults(fail_next=[503, 503, 503], operations=["get_profiles"])
        poller.wake()
        await asyncio.wait_for(poller.wait_for_cycle(2), 30)
        assert poller.last_error is not None
        assert POLLER_LAST_POLL._value.get() == T0.timestamp()  # failed: not a poll
        rig.clock.tick(60)
        poller.wake()
        await asyncio.wait_for(poller.wait_for_cycle(3), 30)
        assert poller.last_error is None
        assert POLLER_LAST_POLL._value.get() == (T0 + timedelta(seconds=120)).timestamp()
        assert POLLER_WATERMARK._value.get() == watermark  # no profile changed: the watermark stayed
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
