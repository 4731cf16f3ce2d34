"""The integration as Kafka sees it: the consumer group's lag, the dead-letter backlog and the poller's watermark.

Kept up to date by a background task (``running()``) every ``interval_s`` and published as metrics, so a scrape
only reads gauges as last set (nothing is computed in the scrape path). It is what the service's ``/metrics`` and
``/status`` show of Kafka, and all that ``ipaas-klaviyo exporter`` serves when the service is down:

* lag and time lag per source partition (``consumer.observability.lag``): ``ipaas_klaviyo_consumer_lag`` and
  ``ipaas_klaviyo_consumer_lag_seconds``;
* dead letters waiting and replayed per source topic, flow and code (``consumer.failures.backlog``), from the
  dead-letter topics and the ``replay-state`` topic read incrementally: ``ipaas_klaviyo_dead_letter_records``;
* the poller's durable watermark, from the ``poller-state`` topic (for ``status``; no metric: the poller process
  exports its own);
* ``ipaas_klaviyo_kafka_view_updated_timestamp_seconds{view}``: when each part was last read successfully.

Each part is refreshed on its own: one that fails (a missing topic, no ACL to describe the group) keeps its
last reading, is logged once, and shows in ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.failures.backlog import BacklogCount, DeadLetterBacklog, Group
from consumer.failures.scan import TopicTail
from consumer.kafka import connection_options
from consumer.observability import metrics
from consumer.observability.lag import GroupLag, Held, PartitionLag
from consumer.settings import KafkaSettings
from consumer.topics import TopicCatalog

if TYPE_CHECKING:
    from consumer.settings import Settings

log = logging.getLogger("consumer.observability")

REFRESH_INTERVAL_S = 5.0
PART_TIMEOUT_S = 30.0
VIEWS = ("lag", "dead_letters")


@dataclass(frozen=True)
class ViewSnapshot:
    """One consistent reading of every part (None: not read successfully yet); times are ``time.time()``."""

    group_id: str
    lag: tuple[PartitionLag, ...] | None = None
    lag_at: float | None = None
    dead_letters: Mapping[Group, BacklogCount] | None = None
    dead_letters_at: float | None = None
    poller_name: str = ""
    poller_watermark: datetime | None = None
    """The poller's watermark in the poller-state topic (None: none stored, or not read)."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """Per part (lag, dead_letters): why its last refresh failed."""


class KafkaView:
    """Reads the group's lag, the dead-letter backlog and the poller watermark from Kafka; see the module doc.

    ``topics`` are the source topics whose lag counts; ``held`` gives the runtime's oldest unfinished record per
    partition (``StreamRuntime.oldest_unfinished``), called on the event loop at each refresh.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        catalog: TopicCatalog,
        *,
        group_id: str,
        topics: Sequence[str],
        poller_name: str,
        held: Callable[[], Held] | None = None,
        interval_s: float = REFRESH_INTERVAL_S,
        publish: bool = True,
    ) -> None:
        """``publish``: set the metrics and log failures (False: a one-off reading, failures in ``errors`` only)."""
        self._kafka = kafka
        self._catalog = catalog
        self._held = held
        self.interval_s = interval_s
        self._publish_metrics = publish
        self._admin: AIOKafkaAdminClient | None = None
        self._lag = GroupLag(kafka, group_id, topics, auto_offset_reset=kafka.auto_offset_reset)
        self._backlog = DeadLetterBacklog(catalog)
        self._tail: TopicTail | None = None
        self._poller_topic = catalog.name("poller-state")
        self._poller_key = poller_name.encode()
        self._lock = asyncio.Lock()
        self._published: dict[str, set[tuple[str, ...]]] = {"lag": set(), "lag_seconds": set()}
        self.snapshot = ViewSnapshot(group_id=group_id, poller_name=poller_name)
        self.refreshes = 0

    @classmethod
    def for_settings(cls, settings: Settings, catalog: TopicCatalog, *, topics: Sequence[str] | None = None,
                     held: Callable[[], Held] | None = None, interval_s: float = REFRESH_INTERVAL_S,
                     publish: bool = True) -> KafkaView:
        """The view of the settings' group over ``topics`` (default: every source topic of the catalog)."""
        names = list(topics) if topics is not None else [catalog.name(logical) for logical in catalog.sources()]
        return cls(settings.kafka, catalog, group_id=settings.kafka.group_id, topics=names,
                   poller_name=settings.poller.name, held=held, interval_s=interval_s, publish=publish)

    @property
    def backlog(self) -> DeadLetterBacklog:
        return self._backlog

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(**connection_options(self._kafka))
        await self._admin.start()
        self._lag = GroupLag(self._kafka, self._lag.group_id, self._lag.topics,
                             auto_offset_reset=self._kafka.auto_offset_reset, admin=self._admin)
        await self._lag.start()

    async def close(self) -> None:
        await self._lag.close()
        if self._tail is not None:
            tail, self._tail = self._tail, None
            await tail.close()
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[KafkaView]:
        """Started, refreshing in the background until the block ends."""
        await self.start()
        task = asyncio.create_task(self._loop(), name="kafka-view")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.close()

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> ViewSnapshot:
        """Read every part now (one refresh at a time), publish the metrics, and return the new snapshot (each
        part's reading shows in ``snapshot`` as soon as its metrics do)."""
        async with self._lock:
            errors = dict(self.snapshot.errors)
            try:
                async with asyncio.timeout(PART_TIMEOUT_S):
                    lag = tuple(await self._lag.read(self._held() if self._held else None))
                now = time.time()
                self.snapshot = replace(self.snapshot, lag=lag, lag_at=now)
                self._published_lag(lag, now)
                if self._lag.missing:
                    self._failed(errors, "lag", _missing(self._lag.missing))
                else:
                    self._recovered(errors, "lag")
            except Exception as exc:  # any failure: keep the last reading, say why, go on
                self._failed(errors, "lag", exc)
            try:
                async with asyncio.timeout(PART_TIMEOUT_S):
                    watermark, missing = await self._read_topics(self.snapshot.poller_watermark)
                counts = self._backlog.counts()
                self.snapshot = replace(self.snapshot, dead_letters=counts, dead_letters_at=time.time(),
                                        poller_watermark=watermark)
                self._published_dead_letters(counts)
                if missing:
                    self._failed(errors, "dead_letters", _missing(missing))
                else:
                    self._recovered(errors, "dead_letters")
            except Exception as exc:
                self._failed(errors, "dead_letters", exc)
            self.snapshot = replace(self.snapshot, errors=errors)
            self.refreshes += 1
            return self.snapshot

    # --- the parts ----------------------------------------------------------------------------------------------
    async def _read_topics(self, watermark: datetime | None) -> tuple[datetime | None, list[str]]:
        """Read what arrived in the dead-letter, replay-state and poller-state topics: the poller's watermark, and
        the topics that do not exist."""
        from consumer.poller import Watermark

        assert self._admin is not None, "start() first"
        names = [*self._backlog.dead_letter_topics, self._backlog.state_topic, self._poller_topic]
        described = await self._admin.describe_topics(names)
        tps = [TopicPartition(topic["topic"], p["partition"]) for topic in described if topic["error_code"] == 0
               for p in topic["partitions"]]
        missing = sorted(set(names) - {tp.topic for tp in tps})
        if self._tail is None:
            self._tail = TopicTail(self._kafka, tps)
            await self._tail.start()
        else:
            self._tail.track(tps)
        records = await self._tail.read()
        letters: list[ConsumerRecord[bytes, bytes]] = []
        states: list[ConsumerRecord[bytes, bytes]] = []
        for record in records:
            if record.topic == self._poller_topic:
                if record.key == self._poller_key:
                    try:
                        watermark = Watermark.from_json(record.value).updated if record.value else None
                    except ValueError:
                        log.warning("unreadable poller watermark ignored", extra={"topic": record.topic})
            elif record.topic == self._backlog.state_topic:
                states.append(record)
            else:
                letters.append(record)
        dead_letter_tps = {tp for tp in self._tail.partitions if tp.topic in self._backlog.dead_letter_topics}
        self._backlog.update(letters, states,
                             read_up_to={tp: self._tail.next[tp] for tp in dead_letter_tps},
                             log_start={tp: self._tail.log_start[tp] for tp in dead_letter_tps})
        return watermark, missing

    # --- metrics and logs ---------------------------------------------------------------------------------------
    def _published_lag(self, rows: Sequence[PartitionLag], now: float) -> None:
        if not self._publish_metrics:
            return
        lag: set[tuple[str, ...]] = set()
        ages: set[tuple[str, ...]] = set()
        for row in rows:
            labels = (row.topic, str(row.partition))
            metrics.CONSUMER_LAG.labels(*labels).set(row.lag)
            lag.add(labels)
            age = row.age_s(now)
            if age is not None:
                metrics.CONSUMER_LAG_SECONDS.labels(*labels).set(age)
                ages.add(labels)
        for gauge, key, current in ((metrics.CONSUMER_LAG, "lag", lag),
                                    (metrics.CONSUMER_LAG_SECONDS, "lag_seconds", ages)):
            for gone in self._published[key] - current:
                with contextlib.suppress(KeyError):
                    gauge.remove(*gone)
            self._published[key] = current
        metrics.KAFKA_VIEW_UPDATED.labels("lag").set(now)

    def _published_dead_letters(self, counts: Mapping[Group, BacklogCount]) -> None:
        if not self._publish_metrics:
            return
        for (topic, flow, code), count in counts.items():
            metrics.DEAD_LETTER_RECORDS.labels(topic, flow, code, "waiting").set(count.waiting)
            metrics.DEAD_LETTER_RECORDS.labels(topic, flow, code, "replayed").set(count.replayed)
        metrics.KAFKA_VIEW_UPDATED.labels("dead_letters").set(time.time())

    def _failed(self, errors: dict[str, str], part: str, exc: BaseException) -> None:
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if errors.get(part) != problem and self._publish_metrics:  # a one-off reading shows it in `errors` only
            log.warning("reading the Kafka view failed; the last reading stays", extra={"view": part,
                                                                                        "error": problem})
        errors[part] = problem

    def _recovered(self, errors: dict[str, str], part: str) -> None:
        if errors.pop(part, None) is not None and self._publish_metrics:
            log.info("reading the Kafka view works again", extra={"view": part})


def _missing(topics: Sequence[str]) -> LookupError:
    return LookupError(f"topics not available: {', '.join(topics)} (run `ipaas-klaviyo topics apply`)")
