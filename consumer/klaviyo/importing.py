"""Klaviyo profiles imported in bulk across records: under a backlog, many handler calls' profiles go in few
bulk import jobs; a trickle keeps the per-record path.

``async with ProfileImporter.submit(change) as imported`` waits for the record's turn: ``imported`` is the
``Imported`` row once Klaviyo's job imported the record's profile (the job complete, no import error for it), or
None when the record takes the per-record path, which the caller then runs inside the block. A record's own
failure (an import error for its row, or what its ``resolve`` raised) is raised from ``submit``.

Records wait in one queue, first in first out. When the oldest has waited ``linger_s`` (or a job is full):

- a **trickle** (records arriving no faster than ``create_profile``'s steady quota, 750/min, and that quota able
  to take every queued record now) is handed back: each record runs the per-record path (``POST /api/profiles``
  and its 409 handling), no job wasted on three profiles;
- otherwise, when the job quota (``POST /api/profile-bulk-import-jobs``, 10/s, 150/min; at most 10,000 profiles
  and 5 MB a job, 100 KB a profile) has a token, one **job** is formed from the head of the queue: the
  identifiers of its records are looked up (``GET /api/profiles?filter=any(email,[...])``, one request per 100
  values of each identifier) and each record ``resolve``s its row from the profiles that hold them: a profile to
  create, a profile to update by id, or the per-record path when the bulk import could not keep its rules (an
  identifier conflict, a profile linked to another customer, a field to clear: the import never clears one).
  The job is posted, followed (``GET .../{id}``, paced on its own quota, first after the time recent jobs took)
  until complete, and its import errors (``GET .../{id}/import-errors``) come back to their records.
  At most ``MAX_OPEN_JOBS`` jobs are open at once: the next job fills while they finish.

Each quota is spent evenly (a token bucket at the steady rate, as deep as the burst), and the client's own limiter
is consulted as well. Two records sharing an identifier value are never in flight together (a job, or the
per-record path of a declined record, holds its records' identifiers until they finish): Klaviyo would match the
second row to the profile the first creates, where the per-record path would have seen a conflict.

An import error for a row fails that record alone (``ImportRejected``, naming the field); an error that says the
account changed since the lookup (``duplicate_profile``, ``not_found``) sends the record to the per-record path;
errors that cannot be told apart send every row they could belong to there (a redo is harmless: the per-record
path links what the job imported). A job refused as a whole fails only the record its error points at (the rest
go again) and is bisected when it points nowhere. A destination outage (``outage`` set) reaches every waiting
record unchanged; any other failure of a request reaches the records of that job. Importing a profile twice is
harmless: the second lookup finds it and updates it.

``aclose()`` abandons whatever is queued or in flight: those records never complete, so nothing is committed for
them and they are read again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

from consumer import admission
from consumer.errors import IntegrationError, own_copy
from consumer.klaviyo.errors import KlaviyoRejected
from consumer.klaviyo.models import (
    IMPORT_JOB_OVERHEAD,
    MAX_BULK_IMPORT_BYTES,
    MAX_BULK_PROFILES,
    MAX_IMPORT_PROFILE_BYTES,
    BulkImportError,
    BulkImportJob,
    ImportRow,
    Profile,
    ProfileAttributes,
)
from consumer.klaviyo.pacing import Pace, Rate
from consumer.klaviyo.ratelimits import EndpointLimit

__all__ = [
    "DEFAULT_LINGER_S",
    "Identifier",
    "ImportRejected",
    "Imported",
    "ImportsApi",
    "ProfileChange",
    "ProfileImporter",
    "normal_identifier",
]

log = logging.getLogger("consumer.klaviyo.importing")

SINGLE = "create_profile"
JOBS = "bulk_import_profiles"
MAX_OPEN_JOBS = 3
"""Jobs open at once. Each job is read until it completes, on a quota (150/min) no larger than the posting one's:
more jobs open at once would only wait longer for their reads, while fewer, fuller jobs finish sooner."""
POLL = "get_bulk_import_profiles_job"
ERRORS = "get_errors_for_bulk_import_profiles_job"
LOOKUP = "get_profiles"
DEFAULT_LINGER_S = 0.05
LOOKUP_FIELDS = ("email", "phone_number", "external_id")
STALE_CODES = frozenset({"duplicate_profile", "not_found", "conflict"})
"""Import errors that say the account changed since the lookup, not that the row is wrong."""
BULK_RETRY_S = 600.0
"""After Klaviyo refused the bulk endpoints to the credential (403: a scope missing), how long every record takes
the per-record path before a job is tried again."""
FIRST_POLL_S = 0.5
MIN_POLL_S = 0.1
MAX_POLL_S = 10.0
_ROW_POINTER = re.compile(r"^/data/(?:attributes/profiles/data/)?(\d+)(?:/attributes)?(?:/(.*))?$")

Identifier = tuple[str, str]
"""An identifier as Klaviyo matches it: (``email``/``phone_number``/``external_id``, its value)."""


def normal_identifier(name: str, value: str) -> Identifier:
    """The identifier as Klaviyo matches it (emails trimmed and lower-cased)."""
    return (name, value.strip().lower() if name == "email" else value)


class ProfileChange(Protocol):
    """What a record asks of the importer: its identifiers, and how its row follows from who holds them."""

    @property
    def identifiers(self) -> frozenset[Identifier]:
        """Looked up before the row is decided; no other record holding one is in flight with this one."""
        ...

    @property
    def eligible(self) -> bool:
        """False: the per-record path, without a lookup."""
        ...

    @property
    def size(self) -> int:
        """At most the bytes its row adds to a job."""
        ...

    def resolve(self, holders: Mapping[Identifier, Profile]) -> Imported | None:
        """The row to import given the profiles holding the identifiers (of every record of the job), or None for
        the per-record path; raising fails the record."""
        ...


@dataclass(frozen=True, slots=True)
class Imported:
    """A record's row: the attributes it writes and the profile it updates (None: one it creates)."""

    attributes: ProfileAttributes
    profile_id: str | None = None


class ImportRejected(KlaviyoRejected):
    """Klaviyo's bulk import refused a record's profile (an import error, or a job refused for that row).

    ``field`` is the attribute it pointed at (``email``, ``location/zip``; empty when it named the profile only),
    ``code`` Klaviyo's error code.
    """

    def __init__(self, detail: str, *, field: str, code: str | None, http_status: int = 400,
                 operation: str | None = None) -> None:
        super().__init__(detail, http_status=http_status, error_code=code, operation=operation)
        self.field = field


class ImportsApi(Protocol):
    """What the importer uses of the Klaviyo client."""

    @property
    def rate_limited(self) -> bool: ...

    def endpoint_limit(self, endpoint_class: str) -> EndpointLimit: ...

    def admission_delay(self, endpoint_class: str) -> float: ...

    async def find_profiles(self, field: str, values: Sequence[str]) -> list[Profile]: ...

    async def send_import_job(self, rows: Sequence[ImportRow]) -> BulkImportJob: ...

    async def get_bulk_import_job(self, job_id: str) -> BulkImportJob: ...

    async def get_bulk_import_errors(self, job_id: str) -> list[BulkImportError]: ...


@dataclass(eq=False, slots=True)
class _Record:
    future: asyncio.Future[Imported | None]
    change: ProfileChange
    arrived: float
    claims: frozenset[Identifier] = frozenset()
    """Identifiers this record holds (from when it is taken until its ``submit`` block ends)."""
    slot: admission.Slot | None = None
    """The handler call's hold on its runtime worker: told when the record's row goes into a job."""

    @property
    def live(self) -> bool:
        return not self.future.done()


@dataclass(eq=False, slots=True)
class _Member:
    record: _Record
    row: Imported
    encoded: ImportRow


@dataclass(slots=True)
class _Follow:
    """When to read a job again: first after ``first_s``, then at growing intervals."""

    started: float
    first_s: float
    reads: int = 0
    next_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.next_s = self.first_s

    def due(self) -> float:
        return self.started + self.next_s

    def read(self) -> None:
        self.reads += 1
        self.next_s += min(MAX_POLL_S, max(MIN_POLL_S, self.first_s * 0.5 * 1.5 ** (self.reads - 1)))


def _is_rejection(error: BaseException) -> bool:
    return isinstance(error, KlaviyoRejected) and error.outage is None and not error.retryable


def _blames_destination(error: BaseException) -> bool:
    return isinstance(error, IntegrationError) and error.outage is not None


def row_of(pointer: object) -> tuple[int, str] | None:
    """(row, field) a pointer into an import job names (``/data/attributes/profiles/data/3/attributes/email``)."""
    match = _ROW_POINTER.match(pointer) if isinstance(pointer, str) else None
    return (int(match.group(1)), match.group(2) or "") if match else None


def _rejected(code: str | None, title: str | None, detail: str | None, field: str, operation: str) -> ImportRejected:
    text = detail or title or "refused"
    where = f"field '{field}': " if field else ""
    return ImportRejected(f"{where}{code or 'invalid'}: {text}", field=field, code=code, operation=operation)


class ProfileImporter:
    """Klaviyo's profile writes shared by every record in flight; ``submit`` is what the profile flow calls.

    ``linger_s``: how long the oldest queued record waits for company (unless a job is full).
    ``max_profiles``/``max_bytes``: the caps of one job (Klaviyo's: 10,000 profiles, 5 MB).
    """

    def __init__(
        self,
        api: ImportsApi,
        *,
        linger_s: float = DEFAULT_LINGER_S,
        max_profiles: int = MAX_BULK_PROFILES,
        max_bytes: int = MAX_BULK_IMPORT_BYTES,
        first_poll_s: float = FIRST_POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= max_profiles <= MAX_BULK_PROFILES:
            raise ValueError(f"max_profiles must be between 1 and {MAX_BULK_PROFILES}")
        self._api = api
        self._linger = linger_s
        self._max_profiles = max_profiles
        self._max_bytes = max_bytes - IMPORT_JOB_OVERHEAD
        self._expected_s = first_poll_s
        self._clock = clock
        now = clock()
        self._pace = {name: Pace(api.endpoint_limit(name), paced=api.rate_limited, now=now)
                      for name in (SINGLE, JOBS, POLL, ERRORS)}
        self._arrivals = Rate(now)
        self._queue: deque[_Record] = deque()
        self._queued_bytes = 0
        self._records: set[_Record] = set()
        self._claimed: Counter[Identifier] = Counter()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._bulk_refused_until: float | None = None
        self.jobs = 0
        """Jobs posted so far (for benchmarks and tests)."""
        self._open_jobs = 0
        """Jobs taken and not yet settled (looked up, posted, followed to their outcome)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def queued(self) -> int:
        """Records waiting for their turn (not yet in a job or handed back)."""
        return sum(1 for record in self._queue if record.live)

    @contextlib.asynccontextmanager
    async def submit(self, change: ProfileChange) -> AsyncIterator[Imported | None]:
        """Wait for the record's turn: its ``Imported`` row once imported, or None for the per-record path (run it
        inside the block: the record's identifiers stay held until the block ends)."""
        if self._closed:
            raise RuntimeError("the profile importer is closed")
        loop = asyncio.get_running_loop()
        record = _Record(loop.create_future(), change, self._clock(), slot=admission.current())
        self._arrivals.add(1, record.arrived)
        self._queue.append(record)
        self._queued_bytes += change.size
        self._records.add(record)
        record.future.add_done_callback(lambda _: self._records.discard(record))
        if self._runner is None:
            self._runner = loop.create_task(self._run(), name="klaviyo-profile-importer")
        self._wake.set()
        try:
            async with admission.waiting(record.slot):  # waiting for its job: the worker takes other records meanwhile
                outcome = await record.future
            yield outcome
        finally:
            self._release(record)

    async def aclose(self) -> None:
        """Stop; records still queued or in flight are abandoned (their ``submit`` is cancelled)."""
        self._closed = True
        tasks = [*self._tasks, *([self._runner] if self._runner is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        abandoned = [record for record in self._records if record.live]
        for record in abandoned:
            record.future.cancel()
        self._set_queue(())
        if abandoned:
            log.info("profile importer closed; records abandoned", extra={"records": len(abandoned)})

    # --- claims ------------------------------------------------------------------------------------------------
    def _free(self, record: _Record, taken: set[Identifier] | None = None) -> bool:
        identifiers = record.change.identifiers
        return not any(self._claimed[i] for i in identifiers) and not (taken and identifiers & taken)

    def _claim(self, record: _Record) -> None:
        record.claims = record.change.identifiers
        self._claimed.update(record.claims)

    def _release(self, record: _Record) -> None:
        if record.claims:
            self._claimed.subtract(record.claims)
            for identifier in record.claims:
                if self._claimed[identifier] <= 0:
                    del self._claimed[identifier]
            record.claims = frozenset()
            self._wake.set()

    # --- the loop ----------------------------------------------------------------------------------------------
    def _set_queue(self, records: Iterable[_Record]) -> None:
        self._queue = deque(records)
        self._queued_bytes = sum(record.change.size for record in self._queue)

    def _full(self) -> bool:
        return len(self._queue) >= self._max_profiles or self._queued_bytes >= self._max_bytes

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._step()
            except Exception as exc:  # a bug here must not leave records waiting forever
                log.exception("profile importer failed; failing the queued records")
                self._fail_all(list(self._queue), exc)
                self._set_queue(())
                wait = 0.0
            if wait > 0:
                await asyncio.sleep(wait)

    async def _step(self) -> float:
        """Wait for records and their linger, then hand some back or start a job; returns the seconds to wait for
        quota (0: done something, or waited for news)."""
        while self._queue and not self._queue[0].live:
            self._queued_bytes -= self._queue.popleft().change.size
        if not self._queue:
            self._wake.clear()
            await self._wake.wait()
            return 0.0
        now = self._clock()
        linger = self._queue[0].arrived + self._linger - now
        if linger > 0 and not self._full():
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), linger)
            return 0.0
        self._wake.clear()
        wait = self._dispatch(now)
        if wait is None:  # everything queued waits for identifiers in flight
            await self._wake.wait()
            return 0.0
        return wait

    def _dispatch(self, now: float) -> float | None:
        """Hand the queue back (a trickle, or records the bulk path cannot take), or start one job from its head;
        the seconds until either may happen, or None when every queued record waits for a claim."""
        live = [record for record in self._queue if record.live]
        self._set_queue(live)
        if not live:
            return 0.0
        for name, pace in self._pace.items():
            pace.retune(self._api.endpoint_limit(name), now)
        single, jobs = self._pace[SINGLE], self._pace[JOBS]
        free = [record for record in live if self._free(record)]
        if not free:
            return None
        single_free = len(live) <= single.tokens(now) and self._api.admission_delay(SINGLE) <= 0
        trickle = self._arrivals.per_second(now) <= single.rate
        refused = self._bulk_refused_until is not None and now < self._bulk_refused_until
        alone = free if (single_free and trickle) or refused else [record for record in free if not self._fits(record)]
        if alone:
            self._hand_back(alone, now)
            return 0.0
        if self._open_jobs >= MAX_OPEN_JOBS:
            return None  # the next job fills meanwhile; a job's end wakes the loop
        if jobs.tokens(now) >= 1 and self._api.admission_delay(JOBS) <= 0:
            batch = self._take()
            if not batch:
                return None
            jobs.spend(1, now)
            self._open_jobs += 1
            self._spawn(self._job(batch))
            return 0.0
        return max(jobs.wait_for(1, now), self._api.admission_delay(JOBS), 0.001)

    @staticmethod
    def _fits(record: _Record) -> bool:
        """Whether the bulk path may take the record (it asks for it, and its profile is within Klaviyo's cap)."""
        return record.change.eligible and record.change.size <= MAX_IMPORT_PROFILE_BYTES

    def _hand_back(self, records: list[_Record], now: float) -> None:
        """These records take the per-record path (holding their identifiers while it runs)."""
        chosen = set(records)
        kept = [record for record in self._queue if record not in chosen]
        taken: set[Identifier] = set()
        handed = 0
        for record in records:
            if not self._free(record, taken):  # shares an identifier with one handed back just now: next round
                kept.append(record)
                continue
            taken |= record.change.identifiers
            self._claim(record)
            record.future.set_result(None)
            handed += 1
        self._set_queue(kept)
        self._pace[SINGLE].spend(handed, now)

    def _take(self) -> list[_Record]:
        """Records from the head of the queue for one job: while they fit, none sharing an identifier with another
        of the job or with a record in flight (those wait for a later job)."""
        batch: list[_Record] = []
        size = 0
        taken: set[Identifier] = set()
        kept: deque[_Record] = deque()
        while self._queue:
            record = self._queue.popleft()
            if not record.live:
                continue
            if len(batch) >= self._max_profiles or size + record.change.size > self._max_bytes:
                kept.append(record)
                kept.extend(self._queue)
                self._queue.clear()
                break
            if not self._free(record, taken):
                kept.append(record)
                continue
            taken |= record.change.identifiers
            size += record.change.size
            self._claim(record)
            batch.append(record)
        self._set_queue(kept)
        return batch

    # --- a job ---------------------------------------------------------------------------------------------------
    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _job(self, batch: list[_Record]) -> None:
        """Look the batch's identifiers up, resolve each record's row, and import the rows."""
        try:
            await self._import(batch)
        finally:
            self._open_jobs -= 1
            self._wake.set()

    async def _import(self, batch: list[_Record]) -> None:
        eligible = [record for record in batch if record.live]
        try:
            holders = await self._lookup(eligible)
        except Exception as exc:
            self._spread(eligible, exc)
            return
        members: list[_Member] = []
        for record in eligible:
            if not record.live:
                continue
            try:
                row = record.change.resolve(holders)
            except Exception as exc:
                self._fail(record, exc)
                continue
            if row is None:
                record.future.set_result(None)  # the per-record path, still holding its identifiers
                continue
            members.append(_Member(record, row, ImportRow.of(row.attributes, row.profile_id)))
        if members:
            await self._send(members)

    async def _lookup(self, records: Iterable[_Record]) -> dict[Identifier, Profile]:
        """The profiles holding any identifier of ``records``: one ``any(...)`` lookup per 100 values of each."""
        wanted: dict[str, list[str]] = {name: [] for name in LOOKUP_FIELDS}
        for record in records:
            for name, value in record.change.identifiers:
                wanted[name].append(value)
        found = await asyncio.gather(*(self._api.find_profiles(name, sorted(set(values)))
                                       for name, values in wanted.items() if values))
        holders: dict[Identifier, Profile] = {}
        for profile in (profile for profiles in found for profile in profiles):
            for name in LOOKUP_FIELDS:
                value = getattr(profile.attributes, name)
                if isinstance(value, str) and value:
                    holders[normal_identifier(name, value)] = profile
        return holders

    async def _send(self, members: list[_Member]) -> None:
        for member in members:
            if member.record.slot is not None:
                member.record.slot.sending()
        members = [member for member in members if member.record.live]
        if not members:
            return
        self.jobs += 1
        try:
            job = await self._api.send_import_job([member.encoded for member in members])
        except Exception as exc:
            if self._bulk_refused(exc, members):
                return
            if _is_rejection(exc):
                assert isinstance(exc, KlaviyoRejected)
                await self._refused(members, exc)
            else:
                self._spread(members, exc)
            return
        await self._follow(job, members)

    async def _refused(self, members: list[_Member], error: KlaviyoRejected) -> None:
        """A job refused as a whole: fail the rows it points at, send the rest again; bisect when it points nowhere."""
        culprits: dict[int, tuple[str | None, str | None, str | None, str]] = {}
        for body in error.errors:
            found = row_of(body.source.get("pointer"))
            if found is not None and found[0] < len(members):
                culprits.setdefault(found[0], (body.code, body.title, body.detail, found[1]))
        if culprits:
            for index, (code, title, detail, field_name) in culprits.items():
                self._fail(members[index].record, _rejected(code, title, detail, field_name, JOBS))
            rest = [member for index, member in enumerate(members) if index not in culprits and member.record.live]
            if rest:
                await self._send_own(rest)
            return
        if len(members) == 1:
            self._fail(members[0].record, error)
            return
        half = len(members) // 2
        log.info("bulk import job refused without a pointer; bisecting",
                 extra={"records": len(members), "status": error.http_status})
        await asyncio.gather(self._send_own(members[:half]), self._send_own(members[half:]))

    async def _send_own(self, members: list[_Member]) -> None:
        """A job sent outside the queue (the rest of a refused job, a bisected half): charged to the pace too."""
        pace = self._pace[JOBS]
        wait = pace.wait_for(1, self._clock())
        if wait > 0:
            await asyncio.sleep(wait)
        pace.spend(1, self._clock())
        await self._send(members)

    async def _follow(self, job: BulkImportJob, members: list[_Member]) -> None:
        """Read the job until it is complete, then give each record its outcome."""
        follow = _Follow(self._clock(), self._expected_s)
        pace = self._pace[POLL]
        while not job.done:
            now = self._clock()
            wait = max(follow.due() - now, pace.wait_for(1, now), self._api.admission_delay(POLL))
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if not any(member.record.live for member in members):
                return  # every record abandoned: the job runs on at Klaviyo, nobody waits for it
            pace.spend(1, now)
            follow.read()
            try:
                job = await self._api.get_bulk_import_job(job.id)
            except Exception as exc:
                if not self._bulk_refused(exc, members):
                    self._spread(members, exc)
                return
        self._learn(follow)
        if job.attributes.status != "complete":  # cancelled at Klaviyo: the records go again
            log.warning("bulk import job cancelled; its records go again", extra={"records": len(members)})
            for member in members:
                self._release(member.record)
            self._requeue([member.record for member in members if member.record.live])
            return
        errors: list[BulkImportError] = []
        if job.attributes.failed_count:
            pace = self._pace[ERRORS]
            wait = max(pace.wait_for(1, self._clock()), self._api.admission_delay(ERRORS))
            if wait > 0:
                await asyncio.sleep(wait)
            pace.spend(1, self._clock())
            try:
                errors = await self._api.get_bulk_import_errors(job.id)
            except Exception as exc:
                if not self._bulk_refused(exc, members):
                    self._spread(members, exc)
                return
        self._settle(members, errors, job.attributes.failed_count or 0)

    def _learn(self, follow: _Follow) -> None:
        """Aim the first read of the next jobs at when this one was seen complete: a little sooner when it was
        complete at the first read, later when it was not (so about one job in five needs a second read: the reads
        have a quota of their own, as small as the posts')."""
        if follow.reads <= 1:
            self._expected_s = max(MIN_POLL_S, self._expected_s * 0.95)
        else:
            self._expected_s = min(MAX_POLL_S, max(self._expected_s * 1.25, follow.next_s * 0.5))

    def _settle(self, members: list[_Member], errors: list[BulkImportError], failed: int) -> None:
        """Each row's outcome: imported, refused (its import error), or the per-record path."""
        by_row: dict[int, BulkImportError] = {}
        unplaced = 0
        for error in errors:
            index = self._row_of_error(error, members)
            if index is None or index in by_row:
                unplaced += 1
            else:
                by_row[index] = error
        unsure = unplaced > 0 or failed > len(by_row)
        if unsure:
            log.warning("bulk import errors that name no row; their job's other records take the per-record path",
                        extra={"errors": len(errors), "failed": failed, "placed": len(by_row)})
        for index, member in enumerate(members):
            record = member.record
            if not record.live:
                continue
            refusal = by_row.get(index)
            if refusal is None:
                record.future.set_result(None if unsure else member.row)
                continue
            attributes = refusal.attributes
            if attributes.code in STALE_CODES:
                record.future.set_result(None)  # the account changed since the lookup: the per-record path decides
                continue
            found = row_of((attributes.source or {}).get("pointer"))
            self._fail(record, _rejected(attributes.code, attributes.title, attributes.detail,
                                         found[1] if found else "", ERRORS))

    @staticmethod
    def _row_of_error(error: BulkImportError, members: list[_Member]) -> int | None:
        """The row an import error is about: its pointer, else the row its original payload is (by identifiers)."""
        found = row_of((error.attributes.source or {}).get("pointer"))
        if found is not None and found[0] < len(members):
            return found[0]
        payload = error.attributes.original_payload or {}
        attrs = payload.get("attributes") if isinstance(payload.get("attributes"), dict) else payload
        if not isinstance(attrs, dict):
            return None
        keys = {(name, attrs[name]) for name in LOOKUP_FIELDS if isinstance(attrs.get(name), str)}
        if not keys:
            return None
        matches = [index for index, member in enumerate(members)
                   if keys <= {(name, getattr(member.row.attributes, name)) for name in LOOKUP_FIELDS}]
        return matches[0] if len(matches) == 1 else None

    def _bulk_refused(self, error: BaseException, members: list[_Member]) -> bool:
        """A 403 from a bulk endpoint: the credential lacks its scopes (``lists:write``/``lists:read`` besides the
        profiles'), not Klaviyo's fault nor the records'. Hand the job's records back and take the per-record path
        for a while; True when that is what ``error`` was."""
        if not (isinstance(error, KlaviyoRejected) and error.http_status == 403
                and error.operation in (JOBS, POLL, ERRORS)):
            return False
        if self._bulk_refused_until is None:
            log.warning("Klaviyo refuses bulk profile imports to this credential (a missing scope: lists:read and "
                        "lists:write are needed besides profiles:read and profiles:write); profiles go one by one",
                        extra={"operation": error.operation, "retry_in_s": BULK_RETRY_S})
        self._bulk_refused_until = self._clock() + BULK_RETRY_S
        for member in members:
            if member.record.live:
                member.record.future.set_result(None)
        return True

    # --- outcomes ----------------------------------------------------------------------------------------------
    def _requeue(self, records: list[_Record]) -> None:
        if records:
            self._set_queue([*records, *self._queue])
            self._wake.set()

    @staticmethod
    def _fail(record: _Record, error: BaseException) -> None:
        if record.live:
            record.future.set_exception(own_copy(error))

    def _spread(self, items: Sequence[_Record | _Member], error: BaseException) -> None:
        """A failure of a request reaches its records; an outage reaches every record still queued as well."""
        records = [item.record if isinstance(item, _Member) else item for item in items]
        if _blames_destination(error):
            records += list(self._queue)
            self._set_queue(())
        self._fail_all(records, error)

    def _fail_all(self, records: Iterable[_Record], error: BaseException) -> None:
        for record in dict.fromkeys(records):
            self._fail(record, error)


def holders_of(identifiers: Iterable[Identifier], holders: Mapping[Identifier, Profile]) -> dict[str, Profile]:
    """The distinct profiles holding any of ``identifiers``, by id."""
    return {profile.id: profile for identifier in identifiers if (profile := holders.get(identifier)) is not None}
