"""What a flow handler may use: the ports (Klaviyo, iPaaS.com), the mapping collections, the error log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumer.catalog import CatalogError
from consumer.mapping import MappingCollection
from consumer.transfers import TransferRef

if TYPE_CHECKING:
    from consumer.envelopes import ChangeEvent

WarningSink = Callable[[CatalogError, TransferRef], Awaitable[None]]


def transfer_of(event: ChangeEvent) -> TransferRef:
    """The transfer an event is about, for error-log records."""
    return TransferRef(kind=event.kind, id=event.record_id, event_type=event.event_type)


@dataclass
class FlowContext:
    """The ports a handler talks through. Tests pass real clients pointed at the simulators."""

    klaviyo: Any
    """``consumer.klaviyo.KlaviyoClient`` (typed loosely here so the flows' tests can pass the real thing)."""
    mappings: Mapping[str, MappingCollection]
    warn: WarningSink
    """Records a catalog warning (or a related error) in the error log without failing the transfer."""
    ipaas: Any = None
    """``consumer.ipaas.IpaasClient`` for the TO-iPaaS.com flows and notify-then-fetch hooks."""
    generate_events: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
