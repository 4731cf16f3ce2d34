"""The Klaviyo profile change source: Klaviyo sends no profile-change notifications, so the service polls.

``ProfilePoller`` pages ``GET /api/profiles?filter=greater-than(updated,<from>)&sort=updated`` and publishes each
changed profile on the ``klaviyo-profile-changes`` topic, keyed by profile id (so one profile's changes stay in
order), as a plain-JSON wrapper the envelope decoder reads::

    {"event_type": "klaviyo_profile/created" | "klaviyo_profile/updated", "event_id": "<id>@<updated>",
     "occurred_at": "<updated>", "data": {"type": "profile", "id": ..., "attributes": {...}}}

(``created`` when the profile's ``created`` equals its ``updated``: a profile that never changed since it was
made; the TO-iPaaS.com flow decides add or update by the link, not by this.)

The watermark
    is durable in the compacted ``poller-state`` topic, keyed by the poller's name, as
    ``{"updated": <iso>, "ids_at_watermark": [...], "digests": {id: digest}}``: the ``updated`` time of the newest
    profile published, the ids published at exactly that time and a digest of the content published for each.
    On start the poller reads the topic to its end and takes the latest value, so a restart resumes where the
    last run stopped: no gap and no full rescan.

    Klaviyo's filter is a strict greater-than on ``updated`` (second precision), and more profiles may be updated
    in the watermark's second after a poll. So each poll queries from ``watermark - overlap`` (1 s) and skips the
    profiles already published: those updated before the watermark, and those at the watermark whose id is in
    ``ids_at_watermark`` with unchanged content (a profile changed again within that same second has a new
    digest, and is published again). Each page is published with the idempotent producer and acknowledged *before* the
    watermark advances past it (at-least-once: a crash between the two re-publishes at most that page; the
    TO-iPaaS.com flows are idempotent).

    A new poller with no stored watermark starts at ``start_at`` (default: now, stored at once, so a restart
    doesn't move it); history comes in with ``backfill(since)``, which publishes every profile updated after
    ``since`` and leaves the watermark alone. ``sync_profile(id)`` publishes one profile now.

Run one poller per Klaviyo account (the ``ipaas-klaviyo poll-profiles`` command, or inside the service): two
pollers of one name would publish each change twice (harmless, idempotent flows, but wasted work).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from consumer.catalog import CatalogError
from consumer.http.backoff import Backoff
from consumer.kafka import connection_options, reliable_producer
from consumer.klaviyo.models import Profile
from consumer.observability.metrics import POLLER_INTERVAL, POLLER_LAST_POLL, POLLER_PROFILES, POLLER_WATERMARK
from consumer.settings import KafkaSettings, Settings
from consumer.timefmt import format_time, to_utc
from consumer.topics import TopicCatalog

logger = logging.getLogger("consumer.poller")

POLLER_NAME = "klaviyo-profiles"
CHANGES_TOPIC = "klaviyo-profile-changes"
STATE_TOPIC = "poller-state"
DEFAULT_INTERVAL_S = 60.0
DEFAULT_PAGE_SIZE = 100
OVERLAP = timedelta(seconds=1)
STATE_VERSION = 1
ERROR_BACKOFF = Backoff(base_s=1.0, cap_s=300.0)
MAX_IDS_AT_WATERMARK = 5000
"""More profiles than this in the watermark's second (a bulk import) are not listed: see ``Watermark.bounded``."""

Clock = Callable[[], datetime]


def _iso(moment: datetime) -> str:
    """The watermark's (and the event id's) time format: UTC, ``+00:00``, as precise as needed."""
    return format_time(moment, timespec="auto", zulu=False)


# --- the watermark ------------------------------------------------------------------------------------------------
def profile_digest(profile: Profile) -> str:
    """A short digest of a profile's content (tells a re-update within the watermark's second apart)."""
    dumped = orjson.dumps(profile.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(dumped).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Watermark:
    """The newest ``updated`` time published, and the profiles published at exactly that time."""

    updated: datetime
    digests: Mapping[str, str | None] = field(default_factory=dict)
    """Profile id -> digest of the content published at ``updated`` (None when unknown)."""

    @property
    def ids_at_watermark(self) -> frozenset[str]:
        return frozenset(self.digests)

    def covers(self, updated: datetime, profile_id: str, digest: str | None = None) -> bool:
        """True when this profile version was already published: updated before the watermark, or at it with
        the same id (and, when both digests are known, the same content)."""
        updated = to_utc(updated)
        if updated != self.updated:
            return updated < self.updated
        if profile_id not in self.digests:
            return False
        known = self.digests[profile_id]
        return digest is None or known is None or known == digest

    def advance(self, updated: datetime, profile_id: str, digest: str | None = None) -> Watermark:
        """The watermark after publishing this profile version."""
        updated = to_utc(updated)
        if updated > self.updated:
            return Watermark(updated, {profile_id: digest})
        if updated == self.updated and (profile_id not in self.digests or self.digests[profile_id] != digest):
            return Watermark(updated, {**self.digests, profile_id: digest})
        return self

    def bounded(self, limit: int) -> Watermark:
        """This watermark, or, when more than ``limit`` profiles share its second, one just before that second
        with none listed: the state record stays small (under Kafka's message size), and the next poll
        publishes that second's profiles again (inside the overlap; the flows are idempotent) instead of
        missing any."""
        if len(self.digests) <= limit:
            return self
        return Watermark(self.updated - timedelta(microseconds=1))

    def to_json(self) -> bytes:
        return orjson.dumps({
            "updated": _iso(self.updated),
            "ids_at_watermark": sorted(self.digests),
            "digests": {key: self.digests[key] for key in sorted(self.digests)},
            "version": STATE_VERSION,
        })

    @classmethod
    def from_json(cls, raw: bytes) -> Watermark:
        document = orjson.loads(raw)
        if not isinstance(document, dict) or not isinstance(document.get("updated"), str):
            raise ValueError("a poller watermark is a JSON object with an 'updated' time")
        ids = document.get("ids_at_watermark") or []
        if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
            raise ValueError("ids_at_watermark must be a list of profile ids")
        digests = document.get("digests") or {}
        if not isinstance(digests, dict):
            raise ValueError("digests must map profile ids to digests")
        known = {key: (value if isinstance(value, str) else None) for key, value in digests.items()}
        return cls(to_utc(datetime.fromisoformat(document["updated"])), {key: known.get(key) for key in ids})


class WatermarkStore:
    """Watermarks in a compacted topic: the latest value of a poller's key is its watermark."""

    def __init__(self, kafka: KafkaSettings, producer: AIOKafkaProducer, topic: str, *, timeout_s: float = 60.0):
        self._kafka = kafka
        self._producer = producer
        self.topic = topic
        self._timeout_s = timeout_s

    async def load(self, name: str) -> Watermark | None:
        """Read the topic to its end; the last value under ``name`` (None when there is none, or a tombstone)."""
        key = name.encode()
        try:  # waits for the topic's metadata (a topic just created may take a moment to appear)
            partitions = await self._producer.partitions_for(self.topic)
        except KafkaError as exc:
            raise RuntimeError(
                f"the poller state topic {self.topic!r} is not available ({type(exc).__name__}); "
                "run `ipaas-klaviyo topics apply`"
            ) from None
        consumer = AIOKafkaConsumer(
            **connection_options(self._kafka), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
        )
        await consumer.start()
        latest: bytes | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                end = await consumer.end_offsets(tps)
                pending = {tp for tp in tps if end[tp] > 0}
                while pending:
                    batch = await consumer.getmany(*pending, timeout_ms=500)
                    for records in batch.values():
                        for record in records:
                            if record.key == key:
                                latest = record.value
                    for tp in list(pending):
                        if await consumer.position(tp) >= end[tp]:
                            pending.discard(tp)
        finally:
            await consumer.stop()
        if latest is None:
            return None
        return Watermark.from_json(latest)

    async def save(self, name: str, watermark: Watermark) -> None:
        """Write the watermark and wait for the broker's acknowledgement."""
        await self._producer.send_and_wait(self.topic, key=name.encode(), value=watermark.to_json())


# --- the poller -----------------------------------------------------------------------------------------------------
def change_record(profile: Profile) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The (key, value, headers) a changed profile is published as."""
    document = profile.model_dump(mode="json")
    attributes = profile.attributes
    updated = attributes.updated
    created = attributes.created
    never_changed = updated is not None and created is not None and to_utc(created) == to_utc(updated)
    action = "created" if never_changed else "updated"
    when = _iso(updated) if updated is not None else None
    value: dict[str, Any] = {
        "event_type": f"klaviyo_profile/{action}",
        "event_id": f"{profile.id}@{when}" if when else None,
        "occurred_at": when,
        "data": document,
    }
    return profile.id.encode(), orjson.dumps(value), [("content-type", b"application/json")]


@dataclass(slots=True)
class PollResult:
    """What one scan did."""

    published: int = 0
    skipped: int = 0
    pages: int = 0
    watermark: Watermark | None = None
    ids: list[str] = field(default_factory=list)


class ProfilePoller:
    """Polls Klaviyo for changed profiles and publishes them (see the module doc).

    ``klaviyo`` is a ``consumer.klaviyo.KlaviyoClient`` (any auth); ``producer`` a started producer (use
    ``consumer.kafka.reliable_producer``: idempotent, acks=all). ``start_at`` is where a poller without a stored
    watermark starts (default: now). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        klaviyo: Any,
        producer: AIOKafkaProducer,
        *,
        kafka: KafkaSettings,
        changes_topic: str,
        state_topic: str,
        name: str = POLLER_NAME,
        page_size: int = DEFAULT_PAGE_SIZE,
        interval_s: float = DEFAULT_INTERVAL_S,
        overlap: timedelta = OVERLAP,
        start_at: datetime | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        error_backoff: Backoff = ERROR_BACKOFF,
        max_ids_at_watermark: int = MAX_IDS_AT_WATERMARK,
    ) -> None:
        if not 1 <= page_size <= 100:
            raise ValueError("page_size must be between 1 and 100")
        self._klaviyo = klaviyo
        self._producer = producer
        self.changes_topic = changes_topic
        self.name = name
        self.store = WatermarkStore(kafka, producer, state_topic)
        self._page_size = page_size
        self.interval_s = interval_s
        self._overlap = overlap
        self._start_at = start_at
        self._clock = clock
        self._error_backoff = error_backoff
        self._max_ids = max_ids_at_watermark
        self._watermark: Watermark | None = None
        self._wake = asyncio.Event()
        self._cycle = asyncio.Condition()
        self.cycles = 0
        """Completed polls of ``run`` (successful or not); ``wait_for_cycle`` awaits them."""
        self.last_error: BaseException | None = None

    @classmethod
    def from_catalog(
        cls, klaviyo: Any, producer: AIOKafkaProducer, *, kafka: KafkaSettings, catalog: TopicCatalog, **options: Any
    ) -> ProfilePoller:
        """A poller writing to the catalog's ``klaviyo-profile-changes`` and ``poller-state`` topics."""
        return cls(klaviyo, producer, kafka=kafka, changes_topic=catalog.name(CHANGES_TOPIC),
                   state_topic=catalog.name(STATE_TOPIC), **options)

    # --- watermark -----------------------------------------------------------------------------------------------
    async def watermark(self) -> Watermark:
        """The current watermark: loaded from the state topic once, else the start point (stored at once)."""
        if self._watermark is None:
            loaded = await self.store.load(self.name)
            if loaded is None:
                loaded = Watermark(to_utc(self._start_at or self._clock()).replace(microsecond=0))
                await self.store.save(self.name, loaded)
                logger.info("Profile poller starts without a watermark",
                            extra={"poller": self.name, "watermark": _iso(loaded.updated)})
            self._watermark = loaded
            POLLER_WATERMARK.set(loaded.updated.timestamp())
        return self._watermark

    async def _save(self, watermark: Watermark) -> None:
        watermark = watermark.bounded(self._max_ids)
        await self.store.save(self.name, watermark)
        self._watermark = watermark
        POLLER_WATERMARK.set(watermark.updated.timestamp())

    # --- operations ----------------------------------------------------------------------------------------------
    async def run_once(self) -> PollResult:
        """One poll: publish every profile changed since the watermark, advancing it page by page."""
        watermark = await self.watermark()
        # whole seconds (Klaviyo's precision): flooring only widens the overlap, which the watermark de-duplicates
        since = (min(watermark.updated, to_utc(self._clock())) - self._overlap).replace(microsecond=0)
        result = await self._scan(since, watermark, advance=True)
        logger.info("Profile poll finished", extra={
            "poller": self.name, "published": result.published, "skipped": result.skipped, "pages": result.pages,
            "watermark": _iso(self._watermark.updated) if self._watermark else None})
        return result

    async def backfill(self, since: datetime) -> PollResult:
        """Publish every profile updated after ``since`` (oldest first); the watermark is left alone."""
        start = min(to_utc(since), to_utc(self._clock())).replace(microsecond=0)
        result = await self._scan(start, None, advance=False)
        logger.info("Profile backfill finished", extra={
            "poller": self.name, "since": _iso(start), "published": result.published, "pages": result.pages})
        return result

    async def sync_profile(self, profile_id: str) -> Profile:
        """Publish one profile now, whatever the watermark (``KlaviyoRejected`` 404 when it doesn't exist)."""
        profile: Profile = await self._klaviyo.get_profile(profile_id)
        await self._publish([profile])
        logger.info("Profile published on request", extra={"poller": self.name})
        return profile

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``interval_s`` (or at once after ``wake()``) until ``stop`` is set.

        A failed poll (Klaviyo or Kafka unavailable) is logged and retried with capped backoff; the watermark
        only ever moves past published profiles, so nothing is skipped.
        """
        failures = 0
        POLLER_INTERVAL.set(self.interval_s)
        POLLER_LAST_POLL.set(self._clock().timestamp())  # a poller that never succeeds grows stale from its start
        while not stop.is_set():
            delay = self.interval_s
            try:
                await self.run_once()
                POLLER_LAST_POLL.set(self._clock().timestamp())
                failures = 0
                self.last_error = None
            except (CatalogError, KafkaError, OSError, RuntimeError, ValueError) as exc:
                self.last_error = exc
                delay = min(self.interval_s, max(self._error_backoff.delay(failures), 0.05))
                failures += 1
                logger.warning("Profile poll failed; retrying", extra={
                    "poller": self.name, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": round(delay, 2)})
            async with self._cycle:
                self.cycles += 1
                self._cycle.notify_all()
            await self._sleep(stop, delay)

    def wake(self) -> None:
        """Poll now instead of at the end of the interval."""
        self._wake.set()

    async def wait_for_cycle(self, count: int) -> None:
        """Return once ``run`` has completed ``count`` polls in total."""
        async with self._cycle:
            await self._cycle.wait_for(lambda: self.cycles >= count)

    async def _sleep(self, stop: asyncio.Event, delay: float) -> None:
        if stop.is_set():
            return
        stopped = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stopped, woken}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopped, woken):
                task.cancel()
            self._wake.clear()

    # --- plumbing ------------------------------------------------------------------------------------------------
    async def _scan(self, since: datetime, skip: Watermark | None, *, advance: bool) -> PollResult:
        result = PollResult(watermark=skip)
        async for page in self._klaviyo.iter_profiles_updated_after(since, page_size=self._page_size):
            result.pages += 1
            fresh: list[Profile] = []
            moved = result.watermark
            for profile in page.profiles:
                updated = profile.attributes.updated
                digest = profile_digest(profile)
                if skip is not None and updated is not None and skip.covers(updated, profile.id, digest):
                    result.skipped += 1
                    continue
                fresh.append(profile)
                if moved is not None and updated is not None:
                    moved = moved.advance(updated, profile.id, digest)
            if fresh:
                await self._publish(fresh)
                result.published += len(fresh)
                result.ids.extend(profile.id for profile in fresh)
            if advance and moved is not None and moved != result.watermark:
                await self._save(moved)
            result.watermark = moved
        return result

    async def _publish(self, profiles: Sequence[Profile]) -> None:
        """Send every profile, then wait until the broker acknowledged them all."""
        futures = []
        for profile in profiles:
            key, value, headers = change_record(profile)
            futures.append(await self._producer.send(self.changes_topic, key=key, value=value, headers=headers))
        await asyncio.gather(*futures)
        POLLER_PROFILES.inc(len(profiles))


# --- wiring for the CLI and the service -----------------------------------------------------------------------------
def _klaviyo_from_settings(settings: Settings) -> Any:
    from consumer.klaviyo import ApiKeyAuth, KlaviyoClient

    return KlaviyoClient(settings.klaviyo, ApiKeyAuth.from_settings(settings.klaviyo))


@asynccontextmanager
async def open_poller(
    settings: Settings,
    *,
    klaviyo: Any = None,
    catalog: TopicCatalog | None = None,
    producer: AIOKafkaProducer | None = None,
    **options: Any,
) -> AsyncIterator[ProfilePoller]:
    """A ready ``ProfilePoller`` from the settings; opens (and afterwards closes) what the caller didn't pass.

    ``klaviyo``: a ``KlaviyoClient`` with the auth the app uses (default: the API key of the settings).
    ``options``: ``ProfilePoller`` options (``name``, ``interval_s``, ``page_size``, ``start_at``, ...).
    """
    catalog = catalog or TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    own_klaviyo = klaviyo is None
    client = _klaviyo_from_settings(settings) if own_klaviyo else klaviyo
    own_producer = producer is None
    kafka_producer = producer or reliable_producer(settings.kafka)
    try:
        if own_producer:
            await kafka_producer.start()
        yield ProfilePoller.from_catalog(client, kafka_producer, kafka=settings.kafka, catalog=catalog, **options)
    finally:
        if own_producer:
            await kafka_producer.stop()
        if own_klaviyo:
            await client.aclose()


__all__ = [
    "CHANGES_TOPIC",
    "POLLER_NAME",
    "STATE_TOPIC",
    "PollResult",
    "ProfilePoller",
    "Watermark",
    "WatermarkStore",
    "change_record",
    "open_poller",
    "profile_digest",
]
