"""The service: settings in, every part wired together, run until SIGTERM/SIGINT (then drain, commit, exit 0).

Kafka topics → ``StreamRuntime`` → ``Dispatcher`` (decode, route) → flow handlers → Klaviyo / iPaaS.com.
A retryable failure that used its in-process attempts waits in its source's retry topics, one per delay of
``runtime.retry_topic_delays_s`` (``consumer.failures.retrytopics``); a record that fails for good is written to the
error log, then dead-lettered (a later change of its key that succeeds is applied, with a warning in the error log:
``consumer.failures.waiting``); ``/metrics``, ``/healthz``,
``/readyz`` and ``/status`` are served on ``settings.http``, with the lag and the dead-letter backlog read from Kafka
(``consumer.kafka_view``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer

from consumer.catalog import CatalogError
from consumer.destinations import Destinations
from consumer.failures.deadletters import DeadLetterPublisher
from consumer.failures.errorlog import ErrorLog
from consumer.failures.outages import report_outages
from consumer.failures.retrytopics import (
    RETRY_SCHEDULED,
    RetryingKeys,
    RetryTopics,
    due_at,
    original_position,
    skip_superseded_retries,
)
from consumer.failures.waiting import WaitingLetters, warn_of_waiting_letters
from consumer.flows.context import FlowContext
from consumer.flows.marketing import MarketingState
from consumer.flows.ports import EventSink
from consumer.ipaas.errors import DESTINATION as IPAAS
from consumer.kafka import reliable_producer
from consumer.kafka_view import KafkaView
from consumer.klaviyo import ApiKeyAuth, Auth, KlaviyoClient
from consumer.klaviyo.batching import DirectEvents, EventBatcher
from consumer.klaviyo.errors import DESTINATION as KLAVIYO
from consumer.klaviyo.importing import ProfileImporter
from consumer.mapping import load_collections
from consumer.oauth import bind_runtime, oauth_auth
from consumer.observability import metrics
from consumer.observability.http import OpsServer
from consumer.routing import Dispatcher, RoutingTable, Source, default_sources
from consumer.runtime import Failure, FailureSink, InboundMessage, RetryPolicy, StreamRuntime
from consumer.settings import Settings
from consumer.topics import TopicCatalog

log = logging.getLogger("consumer.app")

_REPORT_TIMEOUT_S = 15.0


class ConfigurationError(RuntimeError):
    """The settings do not allow the service to start; the message says which setting to fix.

    ``error`` is the catalog error behind it, when the catalog has one (Client ID / Client Secret Not Configured):
    the service writes it to the error log as well."""

    def __init__(self, message: str, *, error: CatalogError | None = None) -> None:
        super().__init__(message)
        self.error = error


def klaviyo_auth(settings: Settings) -> Auth:
    """The Klaviyo credential from settings: the private API key, else the OAuth tokens of the token file."""
    if settings.klaviyo.api_key is not None:
        return ApiKeyAuth(settings.klaviyo.api_key)
    try:
        auth = oauth_auth(settings)
    except CatalogError as error:
        raise ConfigurationError(f"{error.message} ({error.detail})", error=error) from None
    if auth is not None:
        return auth
    raise ConfigurationError(
        "No Klaviyo credential: set IPAAS_KLAVIYO_KLAVIYO__API_KEY (or klaviyo.api_key in the settings file), "
        "or connect with OAuth: `ipaas-klaviyo authorize`"
    )


def ipaas_client(settings: Settings) -> Any:
    """The iPaaS.com client, when a token is configured (the TO-iPaaS.com flows and hook notifications need it)."""
    if settings.ipaas.api_token is None:
        return None
    from consumer.ipaas import IpaasClient

    return IpaasClient(settings.ipaas)


async def report_at_start(error_log: ErrorLog, error: CatalogError) -> None:
    """Write a start-up error to the error log (at connection time: no transfer); a failure to write it is logged,
    the error itself is the caller's to raise."""
    try:
        async with asyncio.timeout(_REPORT_TIMEOUT_S):
            await error_log.report(error, None)
    except Exception as exc:
        log.warning("could not write the start-up error to the error log",
                    extra={"code": error.code, "reason": type(exc).__name__})


class Wiring(NamedTuple):
    """What ``build_dispatcher`` puts together."""

    dispatcher: Dispatcher
    table: RoutingTable
    failed_for_good: FailureSink
    klaviyo: KlaviyoClient


async def build_dispatcher(
    settings: Settings,
    stack: AsyncExitStack,
    producer: AIOKafkaProducer,
    catalog: TopicCatalog,
    *,
    auth: Auth | None = None,
    routes: Sequence[Source] | None = None,
    destinations: Destinations | None = None,
) -> Wiring:
    """The flows behind their dispatcher, the routing table, and the failure path (error log, then dead letter).

    What the service runs under its consumer, and what ``ipaas-klaviyo dlq replay --direct`` runs without one.
    The API clients, Klaviyo's event batcher and its profile importer are entered on ``stack``; ``producer``
    (started) writes the error log and the dead letters.
    Each client's probe is registered on ``destinations``, which brings a destination back after an outage.
    """
    mappings = load_collections(settings.mapping_dir)
    table = RoutingTable(routes if routes is not None else default_sources(), catalog,
                         settings.runtime.retry_topic_delays_s)
    error_log = ErrorLog(producer, catalog.name("error-log"))
    dead_letters = DeadLetterPublisher(producer, settings.kafka.group_id, catalog.dead_letter_name)

    auth = auth or klaviyo_auth(settings)
    klaviyo = await stack.enter_async_context(KlaviyoClient(settings.klaviyo, auth))
    # the batcher and the importer are closed before the client: whatever is still queued then is abandoned, its
    # records never complete
    events: EventSink = (
        await stack.enter_async_context(EventBatcher(klaviyo, linger_s=settings.klaviyo.event_linger_ms / 1000))
        if settings.klaviyo.batch_events else DirectEvents(klaviyo))
    imports = (
        await stack.enter_async_context(
            ProfileImporter(klaviyo, linger_s=settings.klaviyo.profile_linger_ms / 1000))
        if settings.klaviyo.bulk_profiles else None)
    if isinstance(auth, ApiKeyAuth):
        metrics.set_authorization_state("connected")
    ipaas = ipaas_client(settings)
    if ipaas is not None:
        await stack.enter_async_context(ipaas)
    if destinations is not None:
        destinations.add_probe(KLAVIYO, klaviyo.probe)
        if ipaas is not None:
            destinations.add_probe(IPAAS, ipaas.probe)
    if settings.klaviyo.consent_list_id is None:
        log.warning("klaviyo.consent_list_id is not set: SubscribeProfile marketing consent is not sent to Klaviyo")
    context = FlowContext(
        klaviyo=klaviyo, ipaas=ipaas, events=events, profile_imports=imports, mappings=mappings, warn=error_log.report,
        generate_events=settings.klaviyo.generate_events,
        marketing=MarketingState(consent_list_id=settings.klaviyo.consent_list_id,
                                 list_ids=dict(settings.klaviyo.list_ids)),
    )

    async def failed_for_good(message: InboundMessage, failure: Failure) -> None:
        # error log first: a retried dead letter may then log twice, but never dead-letter twice
        await error_log.failed(message, failure)
        await dead_letters.publish(message, failure)
        return None

    dispatcher = Dispatcher(table, context, max_value_bytes=settings.runtime.max_value_bytes)
    return Wiring(dispatcher, table, failed_for_good, klaviyo)


class Service:
    """One running instance of the integration."""

    def __init__(
        self,
        settings: Settings,
        *,
        auth: Auth | None = None,
        routes: Sequence[Source] | None = None,
        catalog: TopicCatalog | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog or TopicCatalog.load(settings.topics_file, settings.topic_prefix)
        self._auth = auth
        self._routes = routes
        self._stop = asyncio.Event()
        self.runtime: StreamRuntime | None = None
        self.ops: OpsServer | None = None
        self.view: KafkaView | None = None
        self.started = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        if self.runtime is not None:
            self.runtime.stop()

    async def _start_poller(self, stack: AsyncExitStack, klaviyo: KlaviyoClient, producer: AIOKafkaProducer) -> None:
        """The Klaviyo profile poller as a task of the service, stopped with it."""
        from consumer.poller import open_poller

        options = self.settings.poller
        poller = await stack.enter_async_context(open_poller(
            self.settings, klaviyo=klaviyo, catalog=self.catalog, producer=producer, name=options.name,
            interval_s=options.interval_s, page_size=options.page_size))
        task = asyncio.create_task(poller.run(self._stop))

        async def stopped() -> None:
            self._stop.set()
            await task

        stack.push_async_callback(stopped)

    def _status_of(self, view: KafkaView, table: RoutingTable, destinations: Destinations) -> Callable[[], Any]:
        """``/status``: the Kafka view's last reading with what only the running service knows."""
        from consumer.status import ServiceState, build_status

        assert self.runtime is not None
        state = ServiceState(
            health=self.runtime.health, needs=table.needs_of, destinations=[d.name for d in destinations],
            authorization=metrics.authorization_state, poller_in_service=self.settings.poller.in_service,
            poller_last_poll=metrics.poller_last_poll,
        )
        return lambda: build_status(view.snapshot, self.catalog, source="service", service=state)

    async def _credential(self, producer: AIOKafkaProducer) -> Auth:
        """``klaviyo_auth``; a catalog error it raises (the OAuth app not configured) goes to the error log too."""
        try:
            return klaviyo_auth(self.settings)
        except ConfigurationError as exc:
            if exc.error is not None:
                await report_at_start(ErrorLog(producer, self.catalog.name("error-log")), exc.error)
            raise

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        settings = self.settings
        metrics.initialize()
        default_policy = RetryPolicy.from_settings(settings.runtime)
        async with AsyncExitStack() as stack:
            producer = reliable_producer(settings.kafka)
            await producer.start()
            stack.push_async_callback(producer.stop)
            auth = self._auth or await self._credential(producer)
            destinations = Destinations()
            stack.push_async_callback(destinations.aclose)
            dispatcher, table, failed_for_good, klaviyo = await build_dispatcher(
                settings, stack, producer, self.catalog, auth=auth, routes=self._routes, destinations=destinations)
            error_log = ErrorLog(producer, self.catalog.name("error-log"))
            for destination in destinations:
                metrics.initialize_destination(destination.name)
            await stack.enter_async_context(report_outages(destinations, error_log))
            # a later change of a key whose earlier change was dead-lettered is applied, and the error log says so
            letters = WaitingLetters()
            # a retryable failure waits in the retry topics first; a retried record a newer change superseded is
            # skipped
            retries, retrying = RetryTopics(producer, settings.kafka.group_id, table.retry_hops), RetryingKeys()

            async def dead_lettered(message: InboundMessage, failure: Failure) -> str | None:
                hop = retries.next_hop(message, failure)
                if hop is not None:
                    await retries.publish(message, failure, hop)
                    retrying.scheduled(original_position(message))
                    return RETRY_SCHEDULED
                await failed_for_good(message, failure)
                letters.dead_lettered(original_position(message) if table.is_retry_topic(message.topic) else message,
                                      failure)
                return None

            runtime = StreamRuntime(
                kafka=settings.kafka,
                limits=settings.runtime,
                topics=table.topics,
                processor=warn_of_waiting_letters(
                    skip_superseded_retries(dispatcher, retrying, table.is_retry_topic), letters, error_log.report),
                failure_sink=dead_lettered,
                policy_for=lambda topic: table.policy_for(topic, default_policy),
                needs_for=table.needs_of,
                destinations=destinations,
                due_at=lambda message: due_at(message) if table.is_retry_topic(message.topic) else None,
            )
            self.runtime = runtime
            runtime.on_share(klaviyo.set_quota_share)
            # the lag and the dead-letter backlog as Kafka sees them, read in the background (/metrics, /status)
            view = KafkaView.for_settings(settings, self.catalog, topics=table.topics, held=runtime.oldest_unfinished)
            self.view = await stack.enter_async_context(view.running())
            # OAuth: a lost authorization pauses consumption ("authorization"), is logged, and shows in the gauge
            await stack.enter_async_context(bind_runtime(auth, destinations, error_log))
            if settings.poller.in_service:
                await self._start_poller(stack, klaviyo, producer)
            health = runtime.health

            def ready() -> tuple[bool, dict[str, Any]]:
                """Ready: consuming, every destination up, and Kafka answering the background view (a broker
                outage shows here within one refresh, ~5 s)."""
                kafka = dict(view.snapshot.errors)
                return health.ready() and not kafka, {
                    "partitions": health.partitions, "paused": sorted(health.paused),
                    "destinations": health.destinations or {}, "kafka": kafka}

            self.ops = OpsServer(
                settings.http.host, settings.http.port,
                live=lambda: (health.live(), {"paused": sorted(health.paused)}),
                ready=ready,
                status=self._status_of(view, table, destinations),
            ).start()
            stack.callback(self.ops.close)
            if install_signal_handlers:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.stop)
                    stack.callback(loop.remove_signal_handler, sig)
            log.info("service starting", extra={"topics": table.topics, "metrics_port": self.ops.port})
            self.started.set()
            if self._stop.is_set():
                return
            run = asyncio.create_task(runtime.run())
            stopper = asyncio.create_task(self._stop.wait())
            try:
                await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                runtime.stop()
                stopper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopper
                await run
            log.info("service stopped")
