"""The routing table: which topic and event go to which flow, with what retry and dead-letter policy.

One declarative table (``default_routes``) is the place a reader finds every flow. The ``Dispatcher`` is
the runtime's processor: it decodes a record (``envelopes``), looks its events up here and calls the
handler; an undecodable record or an event with no route is a poison pill, dead-lettered at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from consumer.catalog import Flow
from consumer.envelopes import ChangeEvent, PoisonPill, RecordKind, decode
from consumer.flows.context import FlowContext, transfer_of
from consumer.runtime import Handled, InboundMessage, RetryPolicy
from consumer.topics import TopicCatalog

Handler = Callable[[ChangeEvent, FlowContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """``topic`` is the catalog's logical topic id; ``event`` is ``<kind>/<action>``."""

    topic: str
    event: str
    flow: Flow | None
    handler: Handler | None
    """None: the event is acknowledged and skipped (counted as ``skipped``), e.g. deletes."""
    policy: RetryPolicy | None = None
    """None: the settings' default policy."""


async def _fetch_if_notified(event: ChangeEvent, ctx: FlowContext) -> ChangeEvent:
    """Notify-then-fetch: a hook notification carries only an id; read the record from iPaaS.com."""
    if event.record is not None or event.action == "deleted" or event.kind == "klaviyo_profile":
        return event  # (a data-less Klaviyo profile change is read from Klaviyo by its flow)
    if ctx.ipaas is None:
        raise PoisonPill("schema_violation", f"{event.event_type} carries no record and no iPaaS.com client is set")
    record = await ctx.ipaas.fetch_record(event.kind, event.record_id)
    return event.model_copy(update={"record": record})


def default_routes(default: RetryPolicy | None = None) -> tuple[Route, ...]:
    """Every flow of the integration, from one table."""
    from consumer.flows.orders_from import send_order_events
    from consumer.flows.profiles_from import sync_profile
    from consumer.flows.profiles_to import sync_customer

    return (
        Route("customer-changes", "customer/created", Flow.ADD_PROFILE_FROM_IPAAS, sync_profile),
        Route("customer-changes", "customer/updated", Flow.UPDATE_PROFILE_FROM_IPAAS, sync_profile),
        Route("customer-changes", "customer/deleted", None, None),  # Klaviyo profiles are not deleted
        Route("transaction-changes", "transaction/created", Flow.PLACED_ORDER_FROM_IPAAS,
              send_order_events),
        Route("transaction-changes", "transaction/updated", Flow.PLACED_ORDER_FROM_IPAAS,
              send_order_events),  # events are append-only; unique_id makes a resend a no-op
        Route("transaction-changes", "transaction/deleted", None, None),
        Route("klaviyo-profile-changes", "klaviyo_profile/created", Flow.ADD_PROFILE_TO_IPAAS,
              sync_customer),
        Route("klaviyo-profile-changes", "klaviyo_profile/updated", Flow.UPDATE_PROFILE_TO_IPAAS,
              sync_customer),
        Route("klaviyo-profile-changes", "klaviyo_profile/deleted", None, None),
    )


class RoutingTable:
    """Routes by (Kafka topic name, event type), resolved against the topic catalog."""

    def __init__(self, routes: Iterable[Route], topics: TopicCatalog) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        self._kinds: dict[str, RecordKind] = {}
        self._policies: dict[str, RetryPolicy] = {}
        for route in routes:
            name = topics.name(route.topic)
            spec = topics.topics[route.topic]
            if spec.record_kind is None:
                raise ValueError(f"route for {route.topic!r}: the topic has no record_kind")
            self._kinds[name] = spec.record_kind
            self._routes[(name, route.event)] = route
            if route.policy is not None:
                self._policies[name] = route.policy

    @property
    def topics(self) -> list[str]:
        return sorted(self._kinds)

    def kind_of(self, topic: str) -> RecordKind:
        return self._kinds[topic]

    def route(self, topic: str, event_type: str) -> Route | None:
        return self._routes.get((topic, event_type))

    def policy_for(self, topic: str, default: RetryPolicy) -> RetryPolicy:
        return self._policies.get(topic, default)


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
            exc.flow = Flow.SERVICE  # type: ignore[attr-defined]
            raise
        flow, outcome = Flow.SERVICE.slug, "skipped"
        for event in events:
            route = self._table.route(message.topic, event.event_type)
            if route is None:
                pill = PoisonPill("unknown_event_type", f"no route for {event.event_type} on this topic")
                pill.flow = Flow.SERVICE  # type: ignore[attr-defined]
                pill.transfer = transfer_of(event)  # type: ignore[attr-defined]
                raise pill
            if route.handler is None:
                continue
            flow, outcome = route.flow.slug if route.flow else flow, "succeeded"
            try:
                await route.handler(await _fetch_if_notified(event, self._context), self._context)
            except Exception as exc:
                exc.transfer = transfer_of(event)  # type: ignore[attr-defined]
                if getattr(exc, "flow", None) is None:
                    exc.flow = route.flow  # type: ignore[attr-defined]
                raise
        return Handled(flow=flow, outcome=outcome)
