"""Test kit: handlers' typed input from decoded events, and a customer source around a test handler."""

from __future__ import annotations

from typing import Any

from consumer.catalog import Flow
from consumer.envelopes import ChangeEvent
from consumer.flows.context import Change, transfer_of
from consumer.klaviyo.errors import DESTINATION as KLAVIYO
from consumer.records import Customer
from consumer.routing import Handler, Source, source


def change_of(event: ChangeEvent) -> Change[Any]:
    """The typed change the dispatcher hands a flow handler for ``event``."""
    return Change(event.record, event.action, transfer_of(event))


def customer_source(
    handler: Handler, *, created: Flow = Flow.ADD_PROFILE_FROM_IPAAS, updated: Flow = Flow.UPDATE_PROFILE_FROM_IPAAS
) -> Source:
    """The customer topic, declared like the shipped one, with ``handler`` taking its creates and updates."""
    return source("customer-changes", record=Customer, needs={KLAVIYO}, dead_letter="customer-changes-dlt",
                  on={"customer/created": (created, handler), "customer/updated": (updated, handler),
                      "customer/deleted": None})
