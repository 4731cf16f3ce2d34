"""The whole service, running in-process against the real broker and the simulators, for end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from consumer import topics
from consumer.app import Service
from consumer.routing import Source
from consumer.runtime import InboundMessage
from consumer.settings import Settings
from tests.support.kafka import create_catalog_topics, kafka_settings, produce, read_all, runtime_limits
from tests.support.topic_space import TopicSpace


@dataclass
class RunningService:
    """A started service plus helpers to feed it and read what it wrote."""

    service: Service
    settings: Settings
    catalog: topics.TopicCatalog
    finished: list[tuple[InboundMessage, str]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def topic(self, logical: str) -> str:
        return self.catalog.name(logical)

    async def send(self, logical: str, records: Sequence[tuple[Any, ...]]) -> list[tuple[int, int]]:
        """Produce (key, value[, headers]) records to a catalog topic; returns their (partition, offset)."""
        return await produce(self.settings.kafka.bootstrap_servers, self.topic(logical), records)

    def _on_finished(self, message: InboundMessage, outcome: str) -> None:
        self.finished.append((message, outcome))
        self._changed.set()

    async def wait_finished(self, count: int, timeout_s: float = 60.0) -> list[tuple[InboundMessage, str]]:
        """Wait until ``count`` records in total have finished (succeeded, skipped or dead-lettered)."""
        async with asyncio.timeout(timeout_s):
            while len(self.finished) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.finished

    async def dead_letters(self, logical_source: str, expected: int, timeout_s: float = 30.0) -> list[ConsumerRecord]:
        spec = self.catalog.topics[logical_source]
        assert spec.dead_letter_topic
        return await read_all(self.settings.kafka.bootstrap_servers, self.topic(spec.dead_letter_topic), expected,
                              timeout_s)

    async def error_log(self, expected: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        records = await read_all(self.settings.kafka.bootstrap_servers, self.topic("error-log"), expected, timeout_s)
        return [orjson.loads(record.value) for record in records]


def service_settings(space: TopicSpace | str, unique: str, **overrides: Any) -> Settings:
    """Settings of a service of its own: consumer group ``svc-<unique>``, topics under a fresh prefix of ``space``
    (the module's topic space, whose topics are deleted with the module), or of bootstrap servers (``t<unique>.``)."""
    runtime_overrides = overrides.pop("runtime", {})
    bootstrap = space if isinstance(space, str) else space.bootstrap
    prefix = f"t{unique}." if isinstance(space, str) else space.fresh_prefix()
    kafka = kafka_settings(bootstrap, group_id=f"svc-{unique}")
    return Settings.model_validate({
        "kafka": kafka.model_dump(),
        "runtime": runtime_limits(**runtime_overrides).model_dump(),
        "http": {"host": "127.0.0.1", "port": 0},
        "topic_prefix": prefix,
        **overrides,
    })


@asynccontextmanager
async def running_service(settings: Settings, *, routes: Sequence[Source] | None = None,
                          **service_args: Any) -> AsyncIterator[RunningService]:
    """Create the catalog's topics under the settings' prefix (those missing), start the service, stop it (drained)
    afterwards."""
    catalog = topics.TopicCatalog.load(settings.topics_file, settings.topic_prefix)
    # the retry topics only when the service uses them (fewer partitions for the broker to create)
    wanted = [logical for logical, spec in catalog.topics.items()
              if spec.role != "retry" or settings.runtime.retry_topic_delays_s]
    await create_catalog_topics(settings.kafka.bootstrap_servers, catalog, wanted)
    service = Service(settings, routes=routes, catalog=catalog, **service_args)
    running = RunningService(service=service, settings=settings, catalog=catalog)
    task = asyncio.create_task(service.run())
    await asyncio.wait({task, asyncio.create_task(service.started.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # start-up failed: raise its error
    assert service.runtime is not None
    service.runtime.on_finished(running._on_finished)
    try:
        yield running
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)
