"""Which failures to look at: the selections of ``dlq list/show/replay`` and ``errors``, from command-line values.

``LetterFilter`` selects dead letters by flow, error code, key and a time range (of the last failure);
``ErrorLogFilter`` selects error-log records by flow, code, severity, transfer and a time range.
``dead_letter_topics`` resolves ``--topic`` (a logical source or dead-letter id, or a Kafka name; default: every
dead-letter topic of the catalog), and ``parse_ref`` a ``[topic:]partition:offset`` reference.
Times are read by ``consumer.timefmt.parse_time`` (ISO 8601, or relative like ``2h``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.structs import TopicPartition

from consumer.catalog import Flow
from consumer.failures.deadletters import DeadLetter, key_text
from consumer.failures.errorlog import LoggedError
from consumer.timefmt import format_time, parse_time
from consumer.topics import TopicCatalog


def _time(value: datetime | str | None, now: datetime) -> datetime | None:
    return parse_time(value, now) if isinstance(value, str) else value


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters: any of the flows (slug or catalog name), any of the codes, any of the keys (as text),
    last failure within [since, until]. An empty criterion matches everything."""

    flows: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def build(cls, *, flows: Iterable[str] = (), codes: Iterable[str] = (), keys: Iterable[str] = (),
              since: datetime | str | None = None, until: datetime | str | None = None,
              now: datetime | None = None) -> LetterFilter:
        """From command-line values (times may be ISO or relative, like ``2h``)."""
        now = now or datetime.now(UTC)
        return cls(
            flows=frozenset(Flow.slug_of(f) for f in flows), codes=frozenset(c.strip().upper() for c in codes),
            keys=frozenset(keys), since=_time(since, now), until=_time(until, now),
        )

    def matches(self, letter: DeadLetter) -> bool:
        if self.flows and letter.flow.lower() not in self.flows:
            return False
        if self.codes and letter.code.upper() not in self.codes:
            return False
        if self.keys and key_text(letter.key) not in self.keys:
            return False
        if self.since is not None or self.until is not None:
            last = letter.last_failure
            if last is None:
                return False
            if self.since is not None and last < self.since:
                return False
            if self.until is not None and last > self.until:
                return False
        return True

    def spec(self) -> dict[str, Any]:
        """The filter as JSON-ready values (what a replay run records, and derives its default id from)."""
        return {"flows": sorted(self.flows), "codes": sorted(self.codes), "keys": sorted(self.keys),
                "since": format_time(self.since) if self.since else None,
                "until": format_time(self.until) if self.until else None}


@dataclass(frozen=True)
class ErrorLogFilter:
    """Which error-log records: any of the flows (slug or catalog name), codes, severities and records (``kind:id``
    or a bare id), logged within [since, until]. An empty criterion matches everything."""

    flows: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    records: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def build(cls, *, flows: Iterable[str] = (), codes: Iterable[str] = (), severities: Iterable[str] = (),
              records: Iterable[str] = (), since: datetime | str | None = None, until: datetime | str | None = None,
              now: datetime | None = None) -> ErrorLogFilter:
        """From command-line values (times may be ISO or relative, like ``2h``)."""
        now = now or datetime.now(UTC)
        return cls(
            flows=frozenset(Flow.slug_of(f) for f in flows), codes=frozenset(c.strip().upper() for c in codes),
            severities=frozenset(s.strip().lower() for s in severities), records=frozenset(records),
            since=_time(since, now), until=_time(until, now),
        )

    def matches(self, entry: LoggedError) -> bool:
        record = entry.record
        if self.flows and str(record.get("flow", "")).lower() not in self.flows:
            return False
        if self.codes and str(record.get("code", "")).upper() not in self.codes:
            return False
        if self.severities and str(record.get("severity", "")).lower() not in self.severities:
            return False
        if self.records:
            transfer = record.get("transfer")
            transfer = transfer if isinstance(transfer, dict) else {}
            if not any(wanted == entry.transfer or wanted == entry.key or wanted == str(transfer.get("id"))
                       for wanted in self.records):
                return False
        if self.since is not None or self.until is not None:
            moment = entry.time
            if moment is None or (self.since is not None and moment < self.since) or (
                    self.until is not None and moment > self.until):
                return False
        return True


def dead_letter_topics(catalog: TopicCatalog, selectors: Sequence[str] = ()) -> list[str]:
    """Kafka names of the dead-letter topics: each selector is a logical id or a Kafka name, of a dead-letter topic
    or of a source topic (meaning its dead-letter topic). No selector: every dead-letter topic of the catalog."""
    if not selectors:
        return [catalog.name(logical) for logical, spec in catalog.topics.items() if spec.role == "dead_letter"]
    names: list[str] = []
    for selector in selectors:
        logical = selector if selector in catalog.topics else None
        if logical is None:
            found = catalog.spec_by_name(selector)
            logical = found[0] if found else None
        if logical is None:
            raise ValueError(f"{selector!r} is not a topic of the catalog")
        spec = catalog.topics[logical]
        if spec.role == "source" and spec.dead_letter_topic:
            names.append(catalog.name(spec.dead_letter_topic))
        elif spec.role == "dead_letter":
            names.append(catalog.name(logical))
        else:
            raise ValueError(f"{selector!r} is neither a dead-letter topic nor a source topic")
    return list(dict.fromkeys(names))


def parse_ref(text: str, topics: Sequence[str]) -> list[tuple[TopicPartition, int]]:
    """``[topic:]partition:offset`` → (partition, offset) pairs; without a topic, at each of ``topics``."""
    parts = text.rsplit(":", 2)
    try:
        if len(parts) == 3:
            return [(TopicPartition(parts[0], int(parts[1])), int(parts[2]))]
        if len(parts) == 2:
            return [(TopicPartition(topic, int(parts[0])), int(parts[1])) for topic in topics]
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not a dead letter reference ([topic:]partition:offset)")
