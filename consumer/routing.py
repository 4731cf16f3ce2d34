"""The routing table: one declaration per source topic says which flow handles each event, which destinations
its flows need, its retries and its dead-letter topic.

``default_sources`` is the one place a reader finds every flow and its failure policy (as Karafka's routing
does). ``RoutingTable`` checks the declarations against the topic catalog at start-up. The ``Dispatcher`` is the
runtime's processor: it decodes a record (``envelopes``), looks its events up here and calls the handler; an
undecodable record or an event with no route is a poison pill, dead-lettered at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consumer.catalog import Flow
from consumer.envelopes import ChangeEvent, NotAChange, PoisonPill, RecordKind, decode
from consumer.errors import IntegrationError, UnexpectedError
from consumer.flows.context import Change, FlowContext, transfer_of
from consumer.flows.orders_from import send_order_events
from consumer.flows.profiles_from import sync_profile
from consumer.flows.profiles_to import sync_customer
from consumer.ipaas.errors import DESTINATION as IPAAS
from consumer.klaviyo.errors import DESTINATION as KLAVIYO
from consumer.observability import metrics
from consumer.records import Customer, KlaviyoProfile, Transaction
from consumer.runtime import Handled, InboundMessage, RetryPolicy
from consumer.topics import TopicCatalog

Handler = Callable[[Change[Any], FlowContext], Awaitable[None]]
"""A flow handler: a plain async function of the typed change it acts on and its context."""


@dataclass(frozen=True, slots=True)
class Route:
    """One event of a source: the flow that handles it. ``event`` is ``<kind>/<action>``."""

    topic: str
    event: str
    flow: Flow | None
    handler: Handler | None
    """None: the event is acknowledged and skipped (counted as ``skipped``), e.g. deletes."""


@dataclass(frozen=True, slots=True)
class Source:
    """Everything about one source topic, in one declaration (``topic`` is the catalog's logical id).

    - ``routes``: which flow handles each event of the topic;
    - ``needs``: the destinations its flows call; while one of them is out the topic's partitions pause;
    - ``retry``: attempts and backoff before a record is dead-lettered (None: the settings' ``runtime.retry_*``);
    - ``retry_delays_s``: after the in-process attempts, a retryable failure waits in the source's retry topics
      (``<topic>-retry-0`` ..., one per delay) before its dead letter (None: the settings'
      ``runtime.retry_topic_delays_s``; empty: dead-letter at once);
    - ``dead_letter``: the catalog id of its dead-letter topic (checked against the catalog at start-up);
    - ``record``: the record type its handlers take.
    """

    topic: str
    routes: tuple[Route, ...]
    needs: frozenset[str]
    dead_letter: str
    retry: RetryPolicy | None = None
    record: type | tuple[type, ...] = object
    """What its handlers take as ``Change.record`` (checked before the handler is called)."""
    retry_delays_s: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for route in self.routes:
            if route.topic != self.topic:
                raise ValueError(f"route {route.event!r} of source {self.topic!r} names topic {route.topic!r}")


def source(
    topic: str, *, record: type | tuple[type, ...], needs: Iterable[str], dead_letter: str,
    retry: RetryPolicy | None = None, retry_delays_s: Iterable[float] | None = None,
    on: Mapping[str, tuple[Flow, Handler] | None],
) -> Source:
    """A ``Source`` from ``{event: (flow, handler)}``; ``None`` skips the event."""
    routes = tuple(
        Route(topic, event, *(target if target is not None else (None, None))) for event, target in on.items()
    )
    delays = tuple(retry_delays_s) if retry_delays_s is not None else None
    return Source(topic, routes, frozenset(needs), dead_letter, retry, record, delays)


async def _fetch_if_notified(event: ChangeEvent, ctx: FlowContext) -> ChangeEvent:
    """Notify-then-fetch: a hook notification carries only an id; read the record from iPaaS.com."""
    if event.record is not None or event.action == "deleted" or event.kind == "klaviyo_profile":
        return event  # (a data-less Klaviyo profile change is read from Klaviyo by its flow)
    if ctx.ipaas is None:
        raise PoisonPill("schema_violation", f"{event.event_type} carries no record and no iPaaS.com client is set")
    record = await ctx.ipaas.fetch_record(event.kind, event.record_id)
    return event.model_copy(update={"record": record})


def default_sources() -> tuple[Source, ...]:
    """Every flow of the integration and its failure policy, one declaration per source topic.

    Deletes are skipped: the integration does not propagate deletions. Hook notifications on the customer and
    transaction topics are read from iPaaS.com first, but those topics don't *need* iPaaS.com: while it is out
    only the records that must be fetched wait; everything else keeps flowing to Klaviyo.
    """
    return (
        source(
            "customer-changes",
            record=Customer,
            needs={KLAVIYO},
            dead_letter="customer-changes-dlt",
            on={
                "customer/created": (Flow.ADD_PROFILE_FROM_IPAAS, sync_profile),
                "customer/updated": (Flow.UPDATE_PROFILE_FROM_IPAAS, sync_profile),
                "customer/deleted": None,
            },
        ),
        source(
            "transaction-changes",
            record=Transaction,
            needs={KLAVIYO},
            dead_letter="transaction-changes-dlt",
            on={
                "transaction/created": (Flow.PLACED_ORDER_FROM_IPAAS, send_order_events),
                # events are append-only; their unique_id makes a resend a no-op at Klaviyo
                "transaction/updated": (Flow.PLACED_ORDER_FROM_IPAAS, send_order_events),
                "transaction/deleted": None,
            },
        ),
        source(
            "klaviyo-profile-changes",
            record=(KlaviyoProfile, type(None)),  # a data-less change (None) is read from Klaviyo by its flow
            needs={KLAVIYO, IPAAS},
            dead_letter="klaviyo-profile-changes-dlt",
            on={
                "klaviyo_profile/created": (Flow.ADD_PROFILE_TO_IPAAS, sync_customer),
                "klaviyo_profile/updated": (Flow.UPDATE_PROFILE_TO_IPAAS, sync_customer),
                "klaviyo_profile/deleted": None,
            },
        ),
    )


class RoutingTable:
    """The sources resolved against the topic catalog, by Kafka topic name; checked at start-up.

    A source's retry topics are routed as the source itself: a record there is handled like the original."""

    def __init__(self, sources: Iterable[Source], topics: TopicCatalog,
                 retry_delays_s: Iterable[float] = ()) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        self._kinds: dict[str, RecordKind] = {}
        self._sources: dict[str, Source] = {}
        self._dead_letters: dict[str, str] = {}
        self._retries: dict[str, tuple[tuple[str, float], ...]] = {}
        self._source_names: dict[str, str] = {}
        default_delays = tuple(retry_delays_s)
        for declared in sources:
            spec = topics.topics.get(declared.topic)
            if spec is None:
                raise ValueError(f"source {declared.topic!r} is not in the topic catalog")
            if spec.record_kind is None:
                raise ValueError(f"source {declared.topic!r}: the topic has no record_kind")
            if spec.dead_letter_topic != declared.dead_letter:
                raise ValueError(f"source {declared.topic!r} dead-letters to {declared.dead_letter!r}, but the topic "
                                 f"catalog says {spec.dead_letter_topic!r}")
            name = topics.name(declared.topic)
            if name in self._sources:
                raise ValueError(f"source {declared.topic!r} is declared twice")
            delays = declared.retry_delays_s if declared.retry_delays_s is not None else default_delays
            hops = tuple(zip(topics.retry_topics(declared.topic, len(delays)), delays, strict=True))
            for topic in (name, *(retry for retry, _ in hops)):
                self._sources[topic], self._kinds[topic] = declared, spec.record_kind
                self._dead_letters[topic], self._retries[topic] = topics.name(declared.dead_letter), hops
                self._source_names[topic] = name
                for route in declared.routes:
                    self._routes[(topic, route.event)] = route

    @property
    def topics(self) -> list[str]:
        return sorted(self._kinds)

    def kind_of(self, topic: str) -> RecordKind:
        return self._kinds[topic]

    def route(self, topic: str, event_type: str) -> Route | None:
        return self._routes.get((topic, event_type))

    def source_of(self, topic: str) -> Source:
        return self._sources[topic]

    def policy_for(self, topic: str, default: RetryPolicy) -> RetryPolicy:
        declared = self._sources.get(topic)
        return declared.retry if declared is not None and declared.retry is not None else default

    def needs_of(self, topic: str) -> frozenset[str]:
        declared = self._sources.get(topic)
        return declared.needs if declared is not None else frozenset()

    def retry_hops(self, topic: str) -> tuple[tuple[str, float], ...]:
        """A source's retry topics (Kafka names) with their delays, in order; the same for its retry topics."""
        return self._retries.get(topic, ())

    def is_retry_topic(self, topic: str) -> bool:
        return self._source_names.get(topic, topic) != topic

    def source_name(self, topic: str) -> str:
        """The Kafka name of the source topic a topic (the source itself or one of its retry topics) belongs to."""
        return self._source_names.get(topic, topic)

    def dead_letter_of(self, topic: str) -> str:
        """The Kafka name of a source topic's dead-letter topic."""
        return self._dead_letters[topic]


class Dispatcher:
    """The runtime's processor: bytes in, flow handlers called, failures raised with their transfer."""

    def __init__(self, table: RoutingTable, context: FlowContext, *, max_value_bytes: int) -> None:
        self._table = table
        self._context = context
        self._max_value_bytes = max_value_bytes

    @property
    def context(self) -> FlowContext:
        return self._context

    async def __call__(self, message: InboundMessage) -> Handled:
        try:
            events = decode(self._table.kind_of(message.topic), message.key, message.value, message.headers,
                            max_value_bytes=self._max_value_bytes)
        except PoisonPill as exc:
            exc.flow = Flow.SERVICE
            raise
        except NotAChange as skipped:  # a truncate, a heartbeat, ...: acknowledged, counted, never dead-lettered
            metrics.RECORDS_SKIPPED.labels(message.topic, skipped.reason).inc()
            return Handled(flow=Flow.SERVICE.slug, outcome="skipped")
        flow, outcome, transfer = Flow.SERVICE.slug, "skipped", None
        for event in events:
            route = self._table.route(message.topic, event.event_type)
            if route is None:
                pill = PoisonPill("unknown_event_type", f"no route for {event.event_type} on this topic")
                pill.flow, pill.transfer = Flow.SERVICE, transfer_of(event)
                raise pill
            if route.handler is None:
                continue
            flow, outcome, transfer = route.flow.slug if route.flow else flow, "succeeded", transfer_of(event)
            try:
                await route.handler(self._change_of(await _fetch_if_notified(event, self._context), message.topic),
                                    self._context)
            except IntegrationError as error:
                error.transfer = transfer_of(event)
                if error.flow is None:
                    error.flow = route.flow
                raise
            except Exception as exc:
                unexpected = UnexpectedError(exc)
                unexpected.transfer, unexpected.flow = transfer_of(event), route.flow
                raise unexpected from exc
        return Handled(flow=flow, outcome=outcome, transfer=transfer)

    def _change_of(self, event: ChangeEvent, topic: str) -> Change[Any]:
        """The typed change a handler takes; a record that is not the source's kind is a poison pill."""
        accepted = self._table.source_of(topic).record
        if not isinstance(event.record, accepted):
            raise PoisonPill("schema_violation", f"{event.event_type} carries no {self._table.kind_of(topic)} record")
        return Change(event.record, event.action, transfer_of(event))
