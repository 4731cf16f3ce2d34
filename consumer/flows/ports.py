"""The ports the flows call: what a flow may ask of Klaviyo and of iPaaS.com, and nothing more.

``consumer.klaviyo.KlaviyoClient``, ``consumer.klaviyo.batching.EventBatcher``,
``consumer.klaviyo.importing.ProfileImporter`` and ``consumer.ipaas.IpaasClient`` implement them; the flows' tests
pass the real clients (and a real batcher and importer) pointed at the simulators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from consumer.ipaas.models import CUSTOMER_TABLE, AddressWrite, CustomerWrite
from consumer.klaviyo.importing import Imported, ProfileChange
from consumer.klaviyo.models import NewEvent, PatchProperties, Profile, ProfileAttributes, UpsertResult
from consumer.records import Customer, CustomerAddress, Transaction


class KlaviyoPort(Protocol):
    """Klaviyo's profiles, consent, lists and events, as the flows use them."""

    async def get_profile(self, profile_id: str) -> Profile: ...

    async def find_profile_by_email(self, email: str) -> Profile | None: ...

    async def find_profile_by_external_id(self, external_id: str) -> Profile | None: ...

    async def create_profile(self, attributes: ProfileAttributes) -> Profile: ...

    async def update_profile(
        self, profile_id: str, attributes: ProfileAttributes, *, patch_properties: PatchProperties | None = None
    ) -> Profile: ...

    async def upsert_profile(
        self, attributes: ProfileAttributes, *, profile_id: str | None = None,
        patch_properties: PatchProperties | None = None,
    ) -> UpsertResult: ...

    async def get_profile_subscriptions(self, profile_id: str) -> Profile: ...

    async def subscribe_profiles(self, list_id: str, emails: Sequence[str]) -> None: ...

    async def unsubscribe_profiles(self, list_id: str | None, emails: Sequence[str]) -> None: ...

    async def find_list_id(self, name: str) -> str | None: ...

    async def add_profiles_to_list(self, list_id: str, profile_ids: Sequence[str]) -> None: ...

    async def remove_profiles_from_list(self, list_id: str, profile_ids: Sequence[str]) -> None: ...


class EventSink(Protocol):
    """Klaviyo events, one record's at a time, shared with every other record in flight."""

    async def submit(self, events: Sequence[NewEvent]) -> None:
        """Returns once Klaviyo accepted every one of ``events``; raises the record's failure otherwise (an
        ``EventRejected`` names the event and field Klaviyo refused)."""
        ...


class ProfileImports(Protocol):
    """Klaviyo profile writes shared with every record in flight: bulk import jobs under a backlog, the per-record
    path for a trickle (``consumer.klaviyo.importing.ProfileImporter``)."""

    def submit(self, change: ProfileChange) -> AbstractAsyncContextManager[Imported | None]:
        """The record's imported row once Klaviyo imported it, or None: run the per-record path inside the block.
        Raises the record's failure (an ``ImportRejected`` names the field Klaviyo refused)."""
        ...


class IpaasPort(Protocol):
    """iPaaS.com's Customers, their addresses and external-id links, as the flows use them."""

    async def fetch_record(self, kind: str, record_id: str) -> Customer | Transaction: ...

    async def get_customer(self, customer_id: str) -> Customer | None: ...

    async def find_customers_by_email(self, email: str, *, exact: bool = True) -> list[Customer]: ...

    async def create_customer(self, fields: Mapping[str, Any] | CustomerWrite) -> Customer: ...

    async def update_customer(
        self, customer_id: str, changes: Mapping[str, Any] | CustomerWrite, *, current: Customer | None = None
    ) -> Customer: ...

    async def list_customer_addresses(self, customer_id: str) -> list[CustomerAddress]: ...

    async def create_customer_address(
        self, customer_id: str, fields: Mapping[str, Any] | AddressWrite
    ) -> CustomerAddress: ...

    async def update_customer_address(
        self, customer_id: str, address_id: str, changes: Mapping[str, Any] | AddressWrite, *,
        current: CustomerAddress | None = None,
    ) -> CustomerAddress: ...

    async def lookup_internal_id(
        self, external_id: str, *, table: str = CUSTOMER_TABLE, allow_deleted: bool = False
    ) -> str | None: ...

    async def lookup_external_id(
        self, internal_id: str, *, table: str = CUSTOMER_TABLE, allow_deleted: bool = False
    ) -> str | None: ...

    async def update_external_id(self, internal_id: str, external_id: str, *, table: str = CUSTOMER_TABLE) -> None: ...
