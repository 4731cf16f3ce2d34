"""One retrying sender for the API clients: the layers every Klaviyo and iPaaS.com request goes through.

    typed client operation (KlaviyoClient / IpaasClient)
      → Sender.send(Call)       quota (limiters), total deadline, retries with backoff, Retry-After, metrics
        → httpx.AsyncClient     auth as an ``httpx.Auth`` flow (a 401 may refresh the credential once)
          → transport           LaneTransport / httpx pool

What comes back is decided here, the same way for both APIs, and told apart from the record's own failures:

- a success is only a status the operation documents, with a body that is the API's (``Call.accepts``; the
  clients accept JSON or nothing here and then check that it holds what the operation returns: an answer without
  it is the API's own failure, which the client words as the record's);
- 429 and transport failures are retried (transport only where resending is harmless), 5xx on idempotent
  calls; when the retries run out the error blames the destination (``Outage.DOWN``);
- a redirect, an HTML page or a foreign body, a route that doesn't exist (404 on a path without an id), 405,
  410 and 415: ``Outage.MISCONFIGURED``, never a record's fault;
- 401, and 403 that Klaviyo does not attribute to a field of the request: ``Outage.UNAUTHORIZED``;
- anything else (400, 409, 404 of a resource, a 403 naming a field): the record's failure, not retried.

A failure that blames the destination is logged here at DEBUG only: ``consumer.destinations`` logs each change
of the destination's state once (and a summary a minute while it lasts), so an outage is not a line per record.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from consumer import admission
from consumer.errors import IntegrationError, Outage
from consumer.http.backoff import Backoff
from consumer.http.content import summarize_non_json
from consumer.http.headers import parse_ratelimit_headers, parse_retry_after
from consumer.http.ratelimit import Sleep, SlidingWindowLimiter
from consumer.http.transport import describe_transport_error

SAFE_TO_RESEND = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport failures after which the request surely never reached the server."""

_MISCONFIGURED_STATUSES = frozenset({405, 410, 415})


def json_document(response: httpx.Response) -> Any:
    """The decoded JSON body, or ``None`` when it is empty or not JSON."""
    try:
        return orjson.loads(response.content) if response.content.strip() else None
    except orjson.JSONDecodeError:
        return None


def is_empty_or_json(response: httpx.Response) -> bool:
    """An empty body, or JSON (a 202 from Klaviyo has an empty body)."""
    return not response.content.strip() or json_document(response) is not None


@dataclass(frozen=True, slots=True)
class Call:
    """One request and what counts as its success."""

    operation: str
    method: str
    path: str
    route: str
    """The path template (``/api/profiles/{id}``): in logs and error details, never ids or values."""
    success: frozenset[int]
    accepts: Callable[[httpx.Response], bool] = is_empty_or_json
    """Whether a success status came with a body of the API's; else the answer is not the API's (a page)."""
    params: Mapping[str, Any] | None = None
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True
    limiters: Sequence[tuple[str, SlidingWindowLimiter]] = ()
    """(endpoint class, limiter) pairs the call must pass; every one is charged."""

    @property
    def has_path_parameters(self) -> bool:
        return "{" in self.route


class Dialect(Protocol):
    """How one API words its failures: the sender decides *what* failed, the dialect builds the exception."""

    destination: str

    def rejected(
        self, response: httpx.Response, call: Call, *, retryable: bool, outage: Outage | None,
        retry_after: float | None,
    ) -> IntegrationError: ...

    def unreachable(self, detail: str, call: Call) -> IntegrationError: ...

    def unexpected(self, response: httpx.Response, call: Call, detail: str) -> IntegrationError:
        """A status or body that isn't this API's (a redirect, an HTML page, a foreign body)."""
        ...

    def throttle_hint(self, response: httpx.Response) -> float | None:
        """Seconds a 429 asks to wait, read from headers or body."""
        ...

    def outage_of(self, response: httpx.Response, call: Call) -> Outage | None:
        """For a 4xx other than 429: the destination's failure, or None when it is the record's."""
        ...


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """The Prometheus children the sender records into (labels: operation, method, status)."""

    requests: Any
    seconds: Any
    throttled: Any = None
    limiter_waits: Any = None
    limiter_wait_seconds: Any = None


@dataclass(frozen=True, slots=True)
class RetryRules:
    max_retries: int = 4
    total_timeout_s: float = 60.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=30.0))
    retry_after_cap_s: float = 60.0
    adaptive_limits: bool = True
    """Adapt the limiters to ``RateLimit-*`` headers and 429s (else a 429 only blocks for its wait)."""


class Sender:
    """Sends ``Call``s through one ``httpx.AsyncClient`` with quota, retries, classification and metrics.

    ``sleep`` waits out the backoff between attempts (tests pass one that records the delays instead)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        dialect: Dialect,
        *,
        rules: RetryRules,
        metrics: RequestMetrics,
        scrub: Callable[[str], str],
        logger: logging.Logger,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http
        self._dialect = dialect
        self._rules = rules
        self._metrics = metrics
        self._scrub = scrub
        self._log = logger
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[str, Any] = {}
        """The metric children by label values: ``labels()`` costs more than the update itself."""

    async def send(self, call: Call, *, retries: int | None = None) -> httpx.Response:
        """The response of a documented success; raises the dialect's ``IntegrationError`` otherwise.

        ``retries`` overrides the rules' ``max_retries`` (a probe asks once)."""
        rules = self._rules
        max_retries = max(rules.max_retries if retries is None else retries, 0)
        attempt = 0
        while True:
            await self._admit(call)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(rules.total_timeout_s):
                    response = await self._http.request(
                        call.method, call.path, params=call.params, content=call.body, headers=call.headers)
            except (httpx.TransportError, TimeoutError) as exc:
                self._record(call, "error", started)
                detail = self._scrub(f"{describe_transport_error(exc)} on {call.method} {call.route}")
                if (call.idempotent or isinstance(exc, SAFE_TO_RESEND)) and attempt < max_retries:
                    await self._retry_later(call, None, attempt, rules.backoff.delay(attempt, self._rng), detail)
                    attempt += 1
                    continue
                detail = f"{detail}, after {attempt + 1} attempt{'s' if attempt else ''}"
                self._log.debug("%s unreachable", self._dialect.destination,
                                extra={"endpoint": call.operation, "method": call.method, "detail": detail})
                raise self._dialect.unreachable(detail, call) from None

            status = response.status_code
            self._record(call, str(status), started)
            if status != 429:
                self._observe(call, response)

            if status in call.success:
                if call.accepts(response):
                    if rules.adaptive_limits:
                        for _, limiter in call.limiters:
                            limiter.succeeded()
                    return response
                if call.idempotent and attempt < max_retries:  # a proxy's page may be a blip: ask again
                    await self._retry_later(call, status, attempt, rules.backoff.delay(attempt, self._rng),
                                            "unexpected body")
                    attempt += 1
                    continue
                raise self._unexpected(response, call, "unexpected response")
            if 300 <= status < 400 or 200 <= status < 300:
                where = response.headers.get("location")
                what = f"redirect to {self._scrub(where)}" if where else "unexpected status"
                raise self._unexpected(response, call, what)

            if status == 429:
                wait = self._throttle_wait(response, attempt)
                for endpoint_class, limiter in call.limiters:
                    if rules.adaptive_limits:
                        limiter.throttled(wait)
                    else:
                        limiter.block_for(wait)
                    if self._metrics.throttled is not None:
                        self._metrics.throttled.labels(endpoint_class).inc()
                if attempt < max_retries:
                    self._log_retry(call, status, attempt, wait, "throttled")
                    if not call.limiters:
                        async with admission.waiting():
                            await self._sleep(wait)
                    attempt += 1
                    continue
                raise self._rejected(response, call, retryable=True, retry_after=wait)

            if status >= 500:
                if call.idempotent and attempt < max_retries:
                    hinted = parse_retry_after(response.headers.get("retry-after"))
                    delay = rules.backoff.server_error_delay(attempt, self._rng, hinted, rules.retry_after_cap_s)
                    await self._retry_later(call, status, attempt, delay, "server error")
                    attempt += 1
                    continue
                raise self._rejected(response, call, retryable=True, outage=Outage.DOWN)

            outage = self._outage_of(response, call)
            raise self._rejected(response, call, retryable=outage is not None, outage=outage)

    def _outage_of(self, response: httpx.Response, call: Call) -> Outage | None:
        status = response.status_code
        if status in _MISCONFIGURED_STATUSES:
            return Outage.MISCONFIGURED
        if status == 404 and not call.has_path_parameters:
            return Outage.MISCONFIGURED  # a collection route can't be missing for one record: a wrong base URL
        if json_document(response) is None and response.content.strip():
            return Outage.MISCONFIGURED  # an HTML page (a WAF, a proxy) where the API's JSON was expected
        return self._dialect.outage_of(response, call)

    async def _admit(self, call: Call) -> None:
        for endpoint_class, limiter in call.limiters:
            if limiter.try_acquire():
                continue
            async with admission.waiting():  # holds no worker while it waits for the quota
                waited = await limiter.acquire()
            if waited > 0 and self._metrics.limiter_waits is not None:
                self._metrics.limiter_waits.labels(endpoint_class).inc()
                self._metrics.limiter_wait_seconds.labels(endpoint_class).inc(waited)

    def _observe(self, call: Call, response: httpx.Response) -> None:
        if not self._rules.adaptive_limits or not call.limiters:
            return
        info = parse_ratelimit_headers(response.headers)
        if not info.empty:
            call.limiters[0][1].observe(remaining=info.remaining, reset_s=info.reset_s, policies=info.policies)

    def _record(self, call: Call, status: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        key = (call.operation, call.method, status)
        counter = self._counted.get(key)
        if counter is None:
            counter = self._counted[key] = self._metrics.requests.labels(*key)
        counter.inc()
        timer = self._timed.get(call.operation)
        if timer is None:
            timer = self._timed[call.operation] = self._metrics.seconds.labels(call.operation)
        timer.observe(elapsed)

    def _throttle_wait(self, response: httpx.Response, attempt: int) -> float:
        hinted = parse_retry_after(response.headers.get("retry-after"))
        if hinted is None:
            hinted = self._dialect.throttle_hint(response)
        return self._rules.backoff.throttle_wait(attempt, self._rng, hinted, self._rules.retry_after_cap_s)

    def _unexpected(self, response: httpx.Response, call: Call, what: str) -> IntegrationError:
        summary = summarize_non_json(response.content, response.headers.get("content-type"))
        detail = self._scrub(f"{response.status_code} {what} on {call.method} {call.route}: {summary}")
        self._log.debug("%s answered unexpectedly", self._dialect.destination,
                        extra={"endpoint": call.operation, "status": response.status_code, "detail": detail})
        return self._dialect.unexpected(response, call, detail)

    def _rejected(
        self, response: httpx.Response, call: Call, *, retryable: bool = False, outage: Outage | None = None,
        retry_after: float | None = None,
    ) -> IntegrationError:
        error = self._dialect.rejected(response, call, retryable=retryable, outage=outage, retry_after=retry_after)
        status = response.status_code
        self._log.log(
            logging.DEBUG if outage is not None else logging.WARNING if status == 429 else logging.INFO,
            "%s rejected the request", self._dialect.destination,
            extra={"endpoint": call.operation, "method": call.method, "status": status,
                   "outage": outage.value if outage else None, "retryable": retryable},
        )
        return error

    async def _retry_later(self, call: Call, status: int | None, attempt: int, delay: float, reason: str) -> None:
        self._log_retry(call, status, attempt, delay, reason)
        # not a wait for quota: the call keeps its worker, so a failing destination meets no more calls at once
        await self._sleep(delay)

    def _log_retry(self, call: Call, status: int | None, attempt: int, delay: float, reason: str) -> None:
        self._log.info("retrying %s request", self._dialect.destination,
                       extra={"endpoint": call.operation, "method": call.method, "status": status,
                              "attempt": attempt + 1, "retry_in_s": round(delay, 3), "reason": reason})
