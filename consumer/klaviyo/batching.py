"""Klaviyo events batched across records: many handler calls submit their events, few requests carry them.

``EventBatcher.submit(events)`` returns once Klaviyo accepted (202) every one of that record's events, or raises
that record's failure. Events wait in one queue, first in first out, and leave by the endpoint whose quota is
free to take them, fewest requests first:

- single events (``POST /api/events``; 350/s burst, 3,500/min steady) when that quota can take every queued event
  now and either events arrive no faster than it sustains (a trickle: a request each, no job wasted on four
  events) or the job quota is what binds (its budget spent: the single-event quota carries what it can on top);
- bulk jobs (``POST /api/event-bulk-create-jobs``; 10/s, 150/min; at most 1,000 events and 5 MB a job)
  otherwise: one request for up to 1,000 events, where single events would cost a request (and CPU) each.

Nothing leaves before the oldest queued event has waited ``linger_s`` (unless a full job is waiting), so
concurrent records share requests; while the quota is what everyone waits for, the next job keeps filling. Each
endpoint's quota is spent evenly (a token bucket at the steady rate, as deep as the burst), not in bursts of
half-empty jobs that use up the minute's 150 in 15 seconds and then stall; the client's own limiter, which also
adapts to 429s and the quota headers, is consulted as well.

A rejected job never fails innocent records. The events Klaviyo's error pointers name
(``/data/attributes/events-bulk-create/data/<entry>/attributes/events/data/<event>/...``, or a whole entry for an
error about its profile) fail their records with an ``EventRejected``; the rest go back to the head of the queue.
A rejection that names no event is bisected (the job's records in two halves, each sent on its own) until it is
down to the one record it belongs to. (Single events are independent requests: when one of a record's is
refused, its others may have been accepted; the record fails all the same.) A destination outage (``outage``
set) reaches every waiting record unchanged (each gets its own copy), and the runtime parks them; any other
failure of a request (throttled past the retries, a bug) reaches the records that request carried. Sending an
event twice is a no-op in Klaviyo: the events the flows send carry a ``unique_id``.

``aclose()`` abandons whatever is still queued or in flight: those records never complete, so nothing is
committed for them and they are read again after a restart (not sent half and committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol, Self

from consumer import admission
from consumer.errors import IntegrationError, own_copy
from consumer.klaviyo.errors import ErrorBody, EventRejected, KlaviyoRejected, describe_response
from consumer.klaviyo.models import (
    BULK_JOB_OVERHEAD,
    MAX_BULK_EVENT_BYTES,
    MAX_BULK_EVENTS,
    DedupeKey,
    EncodedEvent,
    NewEvent,
    bulk_job_layout,
)
from consumer.klaviyo.pacing import Pace, Rate
from consumer.klaviyo.ratelimits import EndpointLimit

__all__ = ["DEFAULT_LINGER_S", "DirectEvents", "EventBatcher", "EventsApi"]

log = logging.getLogger("consumer.klaviyo.batching")

SINGLE = "create_event"
BULK = "bulk_create_events"
DEFAULT_LINGER_S = 0.05
_BULK_POINTER = re.compile(
    r"^/data/attributes/events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?(?:/attributes)?(?:/(.*))?$"
)
_SINGLE_POINTER = re.compile(r"^/data/attributes(?:/(.*))?$")


class EventsApi(Protocol):
    """What the batcher uses of the Klaviyo client: the two event endpoints and a view of their quota."""

    @property
    def rate_limited(self) -> bool: ...

    def endpoint_limit(self, endpoint_class: str) -> EndpointLimit: ...

    def admission_delay(self, endpoint_class: str) -> float: ...

    async def create_event(self, event: NewEvent) -> None: ...

    async def send_event_job(self, events: Sequence[EncodedEvent]) -> None: ...


@dataclass(eq=False, slots=True)
class _Record:
    """One ``submit`` call: the handler waits on ``future``; ``waiting`` events are not accepted yet."""

    future: asyncio.Future[None]
    waiting: int
    arrived: float
    slot: admission.Slot | None
    """The handler call's hold on its runtime worker: told when its events go into a request."""


@dataclass(eq=False, slots=True)
class _Queued:
    record: _Record
    index: int
    """The event's position in what its record submitted."""
    encoded: EncodedEvent
    size: int
    key: DedupeKey | None

    @property
    def live(self) -> bool:
        return not self.record.future.done()


def _sending(items: Sequence[_Queued]) -> None:
    for item in items:
        if item.record.slot is not None:
            item.record.slot.sending()


def _is_rejection(error: BaseException) -> bool:
    """Klaviyo refused the request's content: some record's fault, not Klaviyo's or the moment's."""
    return isinstance(error, KlaviyoRejected) and error.outage is None and not error.retryable


def _blames_destination(error: BaseException) -> bool:
    return isinstance(error, IntegrationError) and error.outage is not None


def _event_rejected(error: KlaviyoRejected, body: ErrorBody | None, index: int, field: str) -> EventRejected:
    one = replace(body, count=1) if body is not None else None
    detail = describe_response(error.http_status or 400, {}, b"", one) if one is not None else error.detail or ""
    return EventRejected(detail, index=index, field=field, http_status=error.http_status or 400,
                         error_code=one.code if one else error.error_code,
                         source=one.source if one else error.source, operation=error.operation)


def single_rejection(error: KlaviyoRejected, index: int) -> EventRejected:
    """A ``POST /api/events`` rejection as the failure of the record's event at ``index``."""
    for body in error.errors:
        pointer = body.source.get("pointer")
        match = _SINGLE_POINTER.match(pointer) if isinstance(pointer, str) else None
        if match:
            return _event_rejected(error, body, index, match.group(1) or "")
    return _event_rejected(error, error.errors[0] if error.errors else None, index, "")


def bulk_culprits(error: KlaviyoRejected, layout: Sequence[Sequence[int]]) -> dict[int, tuple[ErrorBody, str]]:
    """The positions (in the job's event list) of the events a job rejection points at, with the error and the
    field it names; empty when no error points at an event of the job."""
    found: dict[int, tuple[ErrorBody, str]] = {}
    for body in error.errors:
        pointer = body.source.get("pointer")
        match = _BULK_POINTER.match(pointer) if isinstance(pointer, str) else None
        if match is None or int(match.group(1)) >= len(layout):
            continue
        positions = layout[int(match.group(1))]
        if match.group(2) is not None:
            event = int(match.group(2))
            if event >= len(positions):
                continue
            positions = [positions[event]]
        for position in positions:
            found.setdefault(position, (body, match.group(3) or ""))
    return found


class EventBatcher:
    """Klaviyo's event endpoints shared by every record in flight; ``submit`` is what the flows call.

    ``linger_s``: how long the oldest queued event waits for company before anything is sent (unless a full job
    is waiting). ``max_events``/``max_bytes``: the caps of one job (Klaviyo's: 1,000 events, 5 MB).
    """

    def __init__(
        self,
        api: EventsApi,
        *,
        linger_s: float = DEFAULT_LINGER_S,
        max_events: int = MAX_BULK_EVENTS,
        max_bytes: int = MAX_BULK_EVENT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= max_events <= MAX_BULK_EVENTS:
            raise ValueError(f"max_events must be between 1 and {MAX_BULK_EVENTS}")
        self._api = api
        self._linger = linger_s
        self._max_events = max_events
        self._max_bytes = max_bytes - BULK_JOB_OVERHEAD  # what the events of one job may take
        self._clock = clock
        now = clock()
        self._pace = {name: Pace(api.endpoint_limit(name), paced=api.rate_limited, now=now) for name in (SINGLE, BULK)}
        self._arrivals = Rate(now)
        self._queue: deque[_Queued] = deque()
        self._queued_bytes = 0
        self._records: set[_Record] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def queued(self) -> int:
        """Events waiting to be sent (not yet in a request), of records still waiting."""
        return sum(1 for item in self._queue if item.live)

    async def submit(self, events: Sequence[NewEvent]) -> None:
        """Send a record's events; returns once Klaviyo accepted all of them, or raises the record's failure."""
        if self._closed:
            raise RuntimeError("the event batcher is closed")
        if not events:
            return
        loop = asyncio.get_running_loop()
        record = _Record(loop.create_future(), len(events), self._clock(), admission.current())
        queued: list[_Queued] = []
        keys: set[DedupeKey] = set()
        for index, event in enumerate(events):
            key = event.dedupe_key()
            if key is not None:
                if key in keys:
                    raise ValueError(f"unique_id {event.unique_id!r} repeats for one profile and metric "
                                     f"{event.metric!r}; Klaviyo would refuse the events")
                keys.add(key)
            encoded = EncodedEvent.of(event)
            queued.append(_Queued(record, index, encoded, encoded.size, key))
        was_empty = not self._queue
        self._arrivals.add(len(queued), record.arrived)
        self._queue.extend(queued)
        self._queued_bytes += sum(item.size for item in queued)
        self._records.add(record)
        record.future.add_done_callback(lambda _: self._records.discard(record))
        if self._runner is None:
            self._runner = loop.create_task(self._run(), name="klaviyo-event-batcher")
        if was_empty or self._full():
            self._wake.set()
        async with admission.waiting(record.slot):  # queued for a request: the worker takes other records meanwhile
            await record.future

    async def aclose(self) -> None:
        """Stop sending; records still queued or in flight are abandoned (their ``submit`` is cancelled)."""
        self._closed = True
        tasks = [*self._tasks, *([self._runner] if self._runner is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        abandoned = [record for record in self._records if not record.future.done()]
        for record in abandoned:
            record.future.cancel()
        self._queue.clear()
        self._queued_bytes = 0
        if abandoned:
            log.info("event batcher closed; records abandoned", extra={"records": len(abandoned)})

    # --- the loop --------------------------------------------------------------------------------------------
    def _full(self) -> bool:
        return len(self._queue) >= self._max_events or self._queued_bytes >= self._max_bytes

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._step()
            except Exception as exc:  # a bug here must not leave records waiting forever
                log.exception("event batcher failed; failing the queued records")
                self._fail_all(list(self._queue), exc)
                wait = 0.0
            if wait > 0:
                await asyncio.sleep(wait)

    async def _step(self) -> float:
        """Wait for events and their linger, then send some; returns the seconds to wait for quota (0: sent)."""
        while self._queue and not self._queue[0].live:
            self._queued_bytes -= self._queue.popleft().size
        if not self._queue:
            self._wake.clear()
            await self._wake.wait()
            return 0.0
        now = self._clock()
        linger = self._queue[0].record.arrived + self._linger - now
        if linger > 0 and not self._full():
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), linger)
            return 0.0
        return self._dispatch(now)

    def _dispatch(self, now: float) -> float:
        """Send the queue as single events, or one job from its head, or name the seconds until either may go.

        Single events when their quota takes the whole queue now and either arrivals are within what it sustains
        (its steady rate) or the job quota binds; else a job when its quota allows; else wait for the earlier."""
        live = [item for item in self._queue if item.live]
        if len(live) != len(self._queue):
            self._queue = deque(live)
            self._queued_bytes = sum(item.size for item in live)
        if not live:
            return 0.0
        count = len(live)
        for name, pace in self._pace.items():
            pace.retune(self._api.endpoint_limit(name), now)
        single, bulk = self._pace[SINGLE], self._pace[BULK]
        single_free = count <= single.tokens(now) and self._api.admission_delay(SINGLE) <= 0
        bulk_free = bulk.tokens(now) >= 1 and self._api.admission_delay(BULK) <= 0
        trickle = self._arrivals.per_second(now) <= single.rate
        if single_free and (trickle or not bulk_free):
            self._queue.clear()
            self._queued_bytes = 0
            single.spend(count, now)
            by_record: dict[_Record, list[_Queued]] = {}
            for item in live:
                by_record.setdefault(item.record, []).append(item)
            for items in by_record.values():
                self._spawn(self._send_singles(items))
            return 0.0
        if bulk_free:
            bulk.spend(1, now)
            self._spawn(self._send_job(self._take_job()))
            return 0.0
        wait = max(bulk.wait_for(1, now), self._api.admission_delay(BULK))
        if count <= single.capacity:
            wait = min(wait, max(single.wait_for(count, now), self._api.admission_delay(SINGLE)))
        return max(wait, 0.001)

    def _take_job(self) -> list[_Queued]:
        """Events from the head of the queue for one job: whole records while they fit (a record larger than a
        job is split), never two events with the same (profile, metric, unique_id)."""
        job: list[_Queued] = []
        size = 0
        keys: set[DedupeKey] = set()
        skipped: list[_Queued] = []
        queue = self._queue
        while queue and len(job) < self._max_events:
            record = queue[0].record
            run: list[_Queued] = []
            for item in queue:
                if item.record is not record:
                    break
                run.append(item)
            run_size = sum(item.size for item in run)
            run_keys = {item.key for item in run if item.key is not None}
            if not record.future.done() and run_keys & keys:
                skipped.extend(queue.popleft() for _ in run)  # goes in a later job
                continue
            fits = len(job) + len(run) <= self._max_events and size + run_size <= self._max_bytes
            if not fits and job:
                break
            if not fits:  # a record larger than one job: as much of it as fits
                run = run[: self._max_events]
                while len(run) > 1 and sum(item.size for item in run) > self._max_bytes:
                    run.pop()
                run_size = sum(item.size for item in run)
            for _ in run:
                queue.popleft()
            self._queued_bytes -= run_size
            if record.future.done():
                continue
            job.extend(run)
            size += run_size
            keys |= run_keys
        queue.extendleft(reversed(skipped))
        return job

    # --- sending ---------------------------------------------------------------------------------------------
    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_singles(self, items: list[_Queued]) -> None:
        """One record's events as single events, at once; its failure is that of its first event that failed."""
        _sending(items)
        results = await asyncio.gather(*(self._api.create_event(item.encoded.event) for item in items),
                                       return_exceptions=True)
        accepted = [item for item, result in zip(items, results, strict=True) if result is None]
        self._accepted(accepted)
        failed = [(item, result) for item, result in zip(items, results, strict=True) if result is not None]
        if not failed:
            return
        item, error = failed[0]
        if isinstance(error, asyncio.CancelledError):
            raise error
        outage = next((e for _, e in failed if _blames_destination(e)), None)
        if outage is not None:
            self._spread([item], outage)
        elif isinstance(error, KlaviyoRejected) and _is_rejection(error):
            self._fail(item.record, single_rejection(error, item.index))
        else:
            self._spread([item], error)

    async def _send_job(self, job: list[_Queued]) -> None:
        job = [item for item in job if item.live]
        if not job:
            return
        _sending(job)
        try:
            await self._api.send_event_job([item.encoded for item in job])
        except Exception as exc:
            if _is_rejection(exc):
                assert isinstance(exc, KlaviyoRejected)
                await self._rejected(job, exc)
            else:
                self._spread(job, exc)
        else:
            self._accepted(job)

    async def _rejected(self, job: list[_Queued], error: KlaviyoRejected) -> None:
        """Fail the records the rejection points at and queue the rest again; bisect when it points nowhere."""
        culprits = bulk_culprits(error, bulk_job_layout([item.encoded for item in job]))
        if culprits:
            isolate: list[_Record] = []
            for position, (body, field) in sorted(culprits.items()):  # a record's lowest event first
                item = job[position]
                if field == "unique_id" and self._repeated_across_records(item, job):
                    isolate.append(item.record)  # another record's event made it a duplicate: not this one's fault
                    continue
                self._fail(item.record, _event_rejected(error, body, item.index, field))
            alone = [[item for item in job if item.record is record and item.live] for record in dict.fromkeys(isolate)]
            self._requeue([item for item in job if item.live and item.record not in isolate])
            await asyncio.gather(*(self._send_own_job(part) for part in alone if part))
            return
        records = list(dict.fromkeys(item.record for item in job))
        if len(records) == 1:
            self._fail(records[0], error)
            return
        first = set(records[: len(records) // 2])
        halves = [[item for item in job if item.record in first], [item for item in job if item.record not in first]]
        log.info("bulk event job rejected without a pointer; bisecting",
                 extra={"records": len(records), "events": len(job), "status": error.http_status})
        await asyncio.gather(*(self._send_own_job(half) for half in halves))

    async def _send_own_job(self, job: list[_Queued]) -> None:
        """A job sent outside the queue (a bisected half, an isolated record): charged to the pace as well."""
        self._pace[BULK].spend(1, self._clock())
        await self._send_job(job)

    @staticmethod
    def _repeated_across_records(item: _Queued, job: list[_Queued]) -> bool:
        event = item.encoded.event
        return any(other.record is not item.record and other.encoded.event.metric == event.metric
                   and other.encoded.event.unique_id == event.unique_id for other in job)

    def _requeue(self, items: list[_Queued]) -> None:
        if not items:
            return
        self._queue.extendleft(reversed(items))
        self._queued_bytes += sum(item.size for item in items)
        self._wake.set()

    # --- outcomes --------------------------------------------------------------------------------------------
    @staticmethod
    def _accepted(items: list[_Queued]) -> None:
        for item in items:
            record = item.record
            record.waiting -= 1
            if record.waiting == 0 and not record.future.done():
                record.future.set_result(None)

    @staticmethod
    def _fail(record: _Record, error: BaseException) -> None:
        if not record.future.done():
            record.future.set_exception(own_copy(error))

    def _spread(self, items: list[_Queued], error: BaseException) -> None:
        """A failure of the request itself reaches its records; an outage reaches every record still queued."""
        if _blames_destination(error):
            items = [*items, *self._queue]
            self._queue.clear()
            self._queued_bytes = 0
        self._fail_all(items, error)

    def _fail_all(self, items: list[_Queued], error: BaseException) -> None:
        for record in dict.fromkeys(item.record for item in items):
            self._fail(record, error)


class DirectEvents:
    """Each record's events sent at once, in requests of their own: one ``POST /api/events`` for a single event,
    else bulk jobs of at most 1,000 (the service before batching; ``klaviyo.batch_events = false``)."""

    def __init__(self, api: EventsApi) -> None:
        self._api = api

    async def submit(self, events: Sequence[NewEvent]) -> None:
        """Send a record's events; returns once Klaviyo accepted all of them."""
        if len(events) == 1:
            try:
                await self._api.create_event(events[0])
            except KlaviyoRejected as exc:
                if not _is_rejection(exc):
                    raise
                raise single_rejection(exc, 0) from exc
            return
        for start in range(0, len(events), MAX_BULK_EVENTS):
            chunk = [EncodedEvent.of(event) for event in events[start : start + MAX_BULK_EVENTS]]
            try:
                await self._api.send_event_job(chunk)
            except KlaviyoRejected as exc:
                if not _is_rejection(exc):
                    raise
                culprits = bulk_culprits(exc, bulk_job_layout(chunk))
                if not culprits:
                    raise
                position = min(culprits)
                body, field = culprits[position]
                raise _event_rejected(exc, body, start + position, field) from exc
