"""The dead-letter backlog, from the topics themselves: per source topic, flow and error code, how many dead
letters wait and how many were replayed. Right across restarts of the service and of ``dlq replay``, since
nothing is counted in a process: both inputs are Kafka topics, each read incrementally (a refresh reads only
what arrived since the last one).

* The dead-letter topics: a letter's source topic (``kafka_dlt-original-topic``, else the one source of its
  dead-letter topic in the catalog), flow and error code come from its headers.
* The replay progress ``dlq replay`` keeps in the ``replay-state`` topic (``consumer.failures.replay``): per
  run, its filter and, per dead-letter partition, the next offset to look at. A letter is **replayed** once a
  run's progress has passed it, the run's filter selected it, and it has a source topic to go back to (what a
  replay sends). Every other letter is **waiting**. A replayed record that fails again is a new letter: waiting.

A run's progress is applied to the letters with the filter of the progress record that moved it (a resumed run
may record a new ``--since``). Letters deleted by retention leave both counts. Memory holds the waiting letters
(offset, key, flow, code, last failure time: what later runs' filters read) and the offsets of replayed ones.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer.failures import headers as h
from consumer.failures.deadletters import DeadLetter
from consumer.failures.filters import LetterFilter
from consumer.failures.replay import ReplayState
from consumer.timefmt import parse_iso
from consumer.topics import TopicCatalog

log = logging.getLogger("consumer.dlq")

Group = tuple[str, str, str]
"""(source topic, flow, error code)."""

UNKNOWN_SOURCE = "unknown"
_KEPT_HEADERS = frozenset({h.ERROR_CODE, h.FLOW, h.LAST_FAILURE, h.ORIGINAL_TOPIC})


@dataclass(frozen=True, slots=True)
class BacklogCount:
    """Dead letters of one (source topic, flow, code) in the dead-letter topics."""

    waiting: int
    replayed: int


@dataclass(slots=True)
class _Run:
    """A replay run's progress: how far its letters were looked at, and how far that was applied here."""

    selection: LetterFilter
    positions: dict[TopicPartition, int]
    applied: dict[TopicPartition, int] = field(default_factory=dict)


def _selection(spec: dict[str, object]) -> LetterFilter:
    """A run's recorded filter (``LetterFilter.spec()``) back as a filter."""

    def names(key: str) -> frozenset[str]:
        value = spec.get(key)
        return frozenset(str(item) for item in value) if isinstance(value, list) else frozenset()

    since, until = spec.get("since"), spec.get("until")
    return LetterFilter(flows=names("flows"), codes=names("codes"), keys=names("keys"),
                        since=parse_iso(since) if isinstance(since, str) else None,
                        until=parse_iso(until) if isinstance(until, str) else None)


def _slim(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    """The letter with what the filters and the counts read: no value, a few headers."""
    kept = tuple((name, value or b"") for name, value in record.headers if name in _KEPT_HEADERS)
    return DeadLetter(record.topic, record.partition, record.offset, record.timestamp, record.key, None, kept)


class DeadLetterBacklog:
    """Counts the dead letters waiting and replayed, per (source topic, flow, code), from the records of the
    dead-letter topics and of the replay-state topic that ``update()`` is given, in order (no I/O here: the caller
    reads the topics, incrementally, e.g. with ``consumer.failures.scan.TopicTail``)."""

    def __init__(self, catalog: TopicCatalog) -> None:
        self.dead_letter_topics = [catalog.name(logical) for logical, spec in catalog.topics.items()
                                   if spec.role == "dead_letter"]
        self.state_topic = catalog.name("replay-state")
        by_dlt: dict[str, list[str]] = {}
        for logical, spec in catalog.sources().items():
            if spec.dead_letter_topic:
                by_dlt.setdefault(catalog.name(spec.dead_letter_topic), []).append(catalog.name(logical))
        self._source_of = {dlt: sources[0] for dlt, sources in by_dlt.items() if len(sources) == 1}
        self._read_up_to: dict[TopicPartition, int] = {}
        self._waiting: dict[TopicPartition, list[DeadLetter]] = {}
        self._waiting_offsets: dict[TopicPartition, list[int]] = {}
        self._replayed: dict[TopicPartition, list[tuple[int, Group]]] = {}
        self._runs: dict[str, _Run] = {}
        self._waiting_count: Counter[Group] = Counter()
        self._replayed_count: Counter[Group] = Counter()
        self.records_read = 0
        """Dead-letter records given so far."""

    def update(
        self,
        letters: Iterable[ConsumerRecord[bytes, bytes]],
        states: Iterable[ConsumerRecord[bytes, bytes]],
        *,
        read_up_to: Mapping[TopicPartition, int],
        log_start: Mapping[TopicPartition, int],
    ) -> None:
        """Take the dead letters and the replay progress records read since the last update.

        ``read_up_to``: per dead-letter partition, the offset up to which its letters have now been given;
        ``log_start``: per dead-letter partition, its first offset still in the log (earlier letters are gone).
        """
        for record in letters:
            self._add(_slim(record))
        self._read_up_to.update(read_up_to)
        self._expire(log_start)
        for record in states:
            run_id = record.key.decode("utf-8", "replace") if record.key else ""
            if record.value is None:  # a tombstone: the run starts over; letters it replayed stay replayed
                self._runs.pop(run_id, None)
                continue
            try:
                state = ReplayState.from_json(record.value)
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable replay progress ignored", extra={"run_id": run_id})
                continue
            run = self._runs.setdefault(run_id, _Run(_selection(state.selection), {}))
            run.selection, run.positions = _selection(state.selection), dict(state.positions)
            self._apply(run)
        for run in self._runs.values():  # letters given just now may be behind a run's earlier progress
            self._apply(run)

    def group_of(self, letter: DeadLetter) -> Group:
        source = letter.original_topic or self._source_of.get(letter.topic) or UNKNOWN_SOURCE
        return source, letter.flow, letter.code

    def counts(self) -> dict[Group, BacklogCount]:
        """Per (source topic, flow, code) ever seen: letters waiting and replayed, in the topics now."""
        groups = sorted({*self._waiting_count, *self._replayed_count})
        return {group: BacklogCount(self._waiting_count[group], self._replayed_count[group]) for group in groups}

    def waiting_letters(self) -> list[DeadLetter]:
        """The waiting letters (slim: no value), by dead-letter partition and offset."""
        return [letter for tp in sorted(self._waiting) for letter in self._waiting[tp]]

    # --- bookkeeping ------------------------------------------------------------------------------------------
    def _add(self, letter: DeadLetter) -> None:
        tp = TopicPartition(letter.topic, letter.partition)
        self.records_read += 1
        self._waiting_count[self.group_of(letter)] += 1
        self._waiting.setdefault(tp, []).append(letter)
        self._waiting_offsets.setdefault(tp, []).append(letter.offset)

    def _expire(self, log_start: Mapping[TopicPartition, int]) -> None:
        """Forget letters deleted by retention."""
        for tp, start in log_start.items():
            offsets = self._waiting_offsets.get(tp)
            if offsets and offsets[0] < start:
                cut = bisect.bisect_left(offsets, start)
                for letter in self._waiting[tp][:cut]:
                    self._waiting_count[self.group_of(letter)] -= 1
                del offsets[:cut]
                del self._waiting[tp][:cut]
            done = self._replayed.get(tp)
            if done and any(offset < start for offset, _ in done):
                for offset, group in done:
                    if offset < start:
                        self._replayed_count[group] -= 1
                self._replayed[tp] = [(offset, group) for offset, group in done if offset >= start]

    def _apply(self, run: _Run) -> None:
        """Mark the waiting letters a run has passed, and selected, as replayed."""
        read_up_to = self._read_up_to
        for tp, position in run.positions.items():
            start = run.applied.get(tp, 0)
            stop = min(position, read_up_to.get(tp, 0))
            if stop <= start:
                continue
            run.applied[tp] = stop
            offsets = self._waiting_offsets.get(tp)
            if not offsets:
                continue
            letters = self._waiting[tp]
            low, high = bisect.bisect_left(offsets, start), bisect.bisect_left(offsets, stop)
            kept_letters, kept_offsets = letters[:low], offsets[:low]
            for letter in letters[low:high]:
                replayable = letter.original_topic or self._source_of.get(letter.topic)
                if replayable and run.selection.matches(letter):
                    group = self.group_of(letter)
                    self._replayed.setdefault(tp, []).append((letter.offset, group))
                    self._waiting_count[group] -= 1
                    self._replayed_count[group] += 1
                else:
                    kept_letters.append(letter)
                    kept_offsets.append(letter.offset)
            self._waiting[tp] = kept_letters + letters[high:]
            self._waiting_offsets[tp] = kept_offsets + offsets[high:]
