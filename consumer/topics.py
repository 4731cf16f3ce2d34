"""The topic catalog (``topics/topics.yaml``): load it, create/update the topics, report drift."""

from __future__ import annotations

import asyncio
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from consumer.kafka import connection_options
from consumer.settings import KafkaSettings

# topics/topics.yaml, shipped as package data of the ``topics`` package: found in a checkout, a wheel and the image
DEFAULT_CATALOG = Path(str(importlib.resources.files("topics").joinpath("topics.yaml")))

Role = Literal["source", "retry", "dead_letter", "error_log", "state"]
RecordKind = Literal["customer", "transaction", "klaviyo_profile"]


class TopicSpec(BaseModel):
    """One topic of the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role
    partitions: int = Field(ge=1)
    replication_factor: int = Field(1, ge=1)
    retention_ms: int | None = None
    cleanup_policy: Literal["delete", "compact"] = "delete"
    record_kind: RecordKind | None = None
    dead_letter_topic: str | None = None
    retry_topics: int = Field(0, ge=0)
    """A source's retry topics (Spring Kafka's naming: ``<name>-retry-0`` ...), added as role ``retry``."""
    retry_of: str | None = None
    """A retry topic's source (logical id)."""
    key: str
    value: str

    def configs(self) -> dict[str, str]:
        """The topic-level configs the catalog pins."""
        configs: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


class TopicCatalog(BaseModel):
    """Every topic the service reads or writes, by logical id (e.g. ``customer-changes``)."""

    model_config = ConfigDict(extra="forbid")

    topics: dict[str, TopicSpec]
    prefix: str = ""

    @model_validator(mode="after")
    def _check_references(self) -> TopicCatalog:
        for logical, spec in list(self.topics.items()):
            for index in range(spec.retry_topics if spec.role == "source" else 0):
                self.topics.setdefault(retry_topic_id(logical, index), TopicSpec(
                    name=f"{spec.name}-retry-{index}", role="retry", partitions=spec.partitions,
                    replication_factor=spec.replication_factor, retention_ms=spec.retention_ms,
                    record_kind=spec.record_kind, dead_letter_topic=spec.dead_letter_topic, retry_of=logical,
                    key=spec.key, value=f"a record of {logical} waiting for its retry {index + 1}, as it was, with "
                                        "retry_topic-* and failure context headers"))
        for logical, spec in self.topics.items():
            if spec.role == "source":
                if spec.record_kind is None or spec.dead_letter_topic is None:
                    raise ValueError(f"source topic {logical!r} needs record_kind and dead_letter_topic")
                dlt = self.topics.get(spec.dead_letter_topic)
                if dlt is None or dlt.role != "dead_letter":
                    raise ValueError(f"{logical!r}: dead_letter_topic {spec.dead_letter_topic!r} is not one")
                if dlt.partitions < spec.partitions:
                    raise ValueError(f"{spec.dead_letter_topic!r} needs at least {spec.partitions} partitions")
        return self

    @classmethod
    def load(cls, path: Path | None = None, prefix: str = "") -> TopicCatalog:
        path = path or DEFAULT_CATALOG
        try:
            raw = yaml.safe_load(path.read_text())
            return cls.model_validate({**raw, "prefix": prefix})
        except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
            raise ValueError(f"topic catalog {path} is not valid: {exc}") from exc

    def name(self, logical: str) -> str:
        """The Kafka topic name of a logical topic id."""
        return self.prefix + self.topics[logical].name

    def spec_by_name(self, name: str) -> tuple[str, TopicSpec] | None:
        for logical, spec in self.topics.items():
            if self.prefix + spec.name == name:
                return logical, spec
        return None

    def dead_letter_name(self, source_name: str) -> str:
        """The dead-letter topic of a source topic (by Kafka name); unknown topics get ``<name>-dlt``."""
        found = self.spec_by_name(source_name)
        if found and found[1].dead_letter_topic:
            return self.name(found[1].dead_letter_topic)
        return f"{source_name}-dlt"

    def retry_topics(self, source: str, count: int) -> tuple[str, ...]:
        """The Kafka names of the first ``count`` retry topics of a source (by logical id); a ValueError when the
        catalog declares fewer."""
        declared = self.topics[source].retry_topics
        if declared < count:
            raise ValueError(f"source {source!r} has {declared} retry topics in the topic catalog; "
                             f"runtime.retry_topic_delays_s needs {count}")
        return tuple(self.name(retry_topic_id(source, index)) for index in range(count))

    def sources(self) -> dict[str, TopicSpec]:
        return {logical: spec for logical, spec in self.topics.items() if spec.role == "source"}


def retry_topic_id(source: str, index: int) -> str:
    """The logical id of a source's retry topic number ``index`` (0-based)."""
    return f"{source}-retry-{index}"


@dataclass(frozen=True)
class Drift:
    topic: str
    problem: str


async def apply(catalog: TopicCatalog, kafka: KafkaSettings) -> list[str]:
    """Create missing topics, add partitions and set configs where they differ. Returns what changed."""
    changes: list[str] = []
    created: set[str] = set()
    admin = AIOKafkaAdminClient(**connection_options(kafka))
    await admin.start()
    try:
        existing = await _describe(admin, catalog)
        for logical, spec in catalog.topics.items():
            name = catalog.name(logical)
            current = existing.get(name)
            if current is None:
                response = await admin.create_topics([NewTopic(
                    name, spec.partitions, spec.replication_factor, topic_configs=spec.configs())])
                for topic, code, message in response.topic_errors:
                    if code not in (0, TopicAlreadyExistsError.errno):  # it exists: another apply won the race
                        raise for_code(code)(f"creating {topic}: {message or ''}")
                    if code == 0:
                        created.add(name)
                        changes.append(f"created {name} ({spec.partitions} partitions)")
                continue
            if current["partitions"] < spec.partitions:
                await admin.create_partitions({name: NewPartitions(spec.partitions)})
                changes.append(f"{name}: partitions {current['partitions']} -> {spec.partitions}")
            differing = {k: v for k, v in spec.configs().items() if current["configs"].get(k) != v}
            if differing:
                # AlterConfigs (not incremental) resets what it is not given: send every pinned config
                await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=spec.configs())])
                changes.append(f"{name}: set {differing}")
        await _visible(admin, catalog, created)
    finally:
        await admin.close()
    return changes


async def _visible(admin: AIOKafkaAdminClient, catalog: TopicCatalog, names: set[str], timeout_s: float = 30.0) -> None:
    """Wait until new topics show in the brokers' metadata (it follows the controller), so what runs next finds them."""
    async with asyncio.timeout(timeout_s):
        while names - set(await _describe(admin, catalog)):  # noqa: ASYNC110 - the broker has no event to await
            await asyncio.sleep(0.1)


async def check(catalog: TopicCatalog, kafka: KafkaSettings) -> list[Drift]:
    """Differences between the catalog and the cluster (missing topics, partitions, configs)."""
    drift: list[Drift] = []
    admin = AIOKafkaAdminClient(**connection_options(kafka))
    await admin.start()
    try:
        existing = await _describe(admin, catalog)
    finally:
        await admin.close()
    for logical, spec in catalog.topics.items():
        name = catalog.name(logical)
        current = existing.get(name)
        if current is None:
            drift.append(Drift(name, "missing"))
            continue
        if current["partitions"] != spec.partitions:
            drift.append(Drift(name, f"partitions {current['partitions']}, catalog says {spec.partitions}"))
        for key, want in spec.configs().items():
            have = current["configs"].get(key)
            if have != want:
                drift.append(Drift(name, f"{key}={have}, catalog says {want}"))
    return drift


async def _describe(admin: AIOKafkaAdminClient, catalog: TopicCatalog) -> dict[str, dict[str, Any]]:
    """Partitions and configs of the catalog's topics that exist (asked of the broker, not a metadata cache)."""
    names = sorted(catalog.name(logical) for logical in catalog.topics)
    described: dict[str, dict[str, Any]] = {}
    for topic in await admin.describe_topics(names):
        if topic["error_code"] == UnknownTopicOrPartitionError.errno:
            continue
        if topic["error_code"]:
            raise for_code(topic["error_code"])(f"describing {topic['topic']}")
        described[topic["topic"]] = {"partitions": len(topic["partitions"]), "configs": {}}
    present = sorted(described)
    if not present:
        return {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in present]
    )
    for response in responses:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            described[name]["configs"] = {entry[0]: entry[1] for entry in entries}
    return described
