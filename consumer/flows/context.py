"""What a flow handler gets: the change it acts on (typed record, action, transfer) and its context (the
ports to Klaviyo and iPaaS.com, the mapping collections, the error log's warning sink, the link cache, the
Customers read for orders)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from consumer.catalog import CatalogError
from consumer.envelopes import Action
from consumer.flows.customers import CustomerCache
from consumer.flows.links import ProfileLinks
from consumer.flows.marketing import MarketingState
from consumer.flows.ports import EventSink, IpaasPort, KlaviyoPort, ProfileImports
from consumer.mapping import MappingCollection
from consumer.transfers import TransferRef

if TYPE_CHECKING:
    from consumer.envelopes import ChangeEvent

WarningSink = Callable[[CatalogError, TransferRef], Awaitable[None]]
R = TypeVar("R")


def transfer_of(event: ChangeEvent) -> TransferRef:
    """The transfer an event is about, for error-log records."""
    return TransferRef(kind=event.kind, id=event.record_id, event_type=event.event_type)


@dataclass(frozen=True, slots=True)
class Change(Generic[R]):
    """One change a handler acts on: the typed record, whether it was created or updated, and its transfer."""

    record: R
    action: Action
    transfer: TransferRef

    @property
    def created(self) -> bool:
        return self.action == Action.CREATED

    @property
    def record_id(self) -> str:
        return self.transfer.id


@dataclass
class FlowContext:
    """The ports a handler talks through. Tests pass real clients pointed at the simulators."""

    klaviyo: KlaviyoPort
    mappings: Mapping[str, MappingCollection]
    warn: WarningSink
    """Records a catalog warning (or a related error) in the error log without failing the transfer."""
    ipaas: IpaasPort | None = None
    """For the TO-iPaaS.com flows and notify-then-fetch hooks (None when no iPaaS.com token is configured)."""
    events: EventSink | None = None
    """Where the order flow sends its events (the service's ``EventBatcher``); the flows that send none need none."""
    profile_imports: ProfileImports | None = None
    """Where the profile flow writes under a backlog (the service's ``ProfileImporter``); None: each record's
    profile through its own requests."""
    generate_events: bool = True
    links: ProfileLinks = field(default_factory=ProfileLinks)
    """A Customer's external_id -> its Klaviyo profile id, shared by every flow of this context."""
    marketing: MarketingState = field(default_factory=MarketingState)
    """The consent list, list ids and what was applied (``consumer.flows.marketing``)."""
    customers: CustomerCache = field(default_factory=CustomerCache)
    """The platform Customers the order flow read from iPaaS.com (``consumer.flows.customers``)."""
