"""Klaviyo profiles TO iPaaS.com: Add/Update Klaviyo Profile, and Add/Update Klaviyo Profile Address.

Entry point ``sync_customer(event, ctx)`` (routed from ``klaviyo_profile/created|updated`` on the profile-changes
topic the poller fills). One call handles one profile:

1. **Link** the profile to a Customer, in this order:
   a. the stored link: the Klaviyo profile id as the Customer's external id (``LookupSpecial``, table
      ``customer``); a link to a deleted Customer (``DELETED:``) or to a Customer that is gone does not count;
   b. the profile's ``external_id``, which the FROM-iPaaS.com flows set to the iPaaS.com Customer id, when that
      Customer exists and is not linked to another Klaviyo profile;
   c. exact email (``Customers?action=equals&EmailAddress=``, re-checked character for character), preferring a
      Customer not linked to another profile.
   A link found by (b) or (c) is stored (``UpdateExternalId``), so the next sync finds it by (a).
2. **Add** (no link): the ``add_profile_to_ipaas`` collection builds the Customer, which is created and linked.
   When a Customer exists whose email differs only in case or formatting (whitespace, Unicode compatibility
   forms, ``mailto:``/``<...>``), or exact matches are all linked to other profiles, the warning "Could Not Link
   to Existing Customer" is recorded (the transfer still succeeds: the catalog says a duplicate *may* result),
   under the flow of the event (an ``updated`` profile that cannot be matched is reported by the Update flow).
   **Update** (linked): the ``update_profile_to_ipaas`` collection builds the fields; only those whose value
   differs from the Customer's are written, and nothing is written when none does. That is what stops echo
   loops: the poller sees a profile again after the FROM flow patched it, and the TO flow then writes nothing.
3. **Address**: the ``add/update_profile_address_to_ipaas`` collection builds one Customer Address from the
   profile's location (and any list values a mapping points at; a list position the profile lacks raises
   "Address Value Could Not Be Read"). The address is linked as the child external id ``<profile id>|address``
   (table ``Address``). With a link, the linked address is updated when a mapped value changed (Update flow);
   without one, an address of the Customer at the same location (location fields equal once normalised) is
   adopted (its other mapped fields written when they differ), else one is created (Add flow), and the link is
   stored. A profile without any location value writes no address; a location
   cleared in Klaviyo leaves the iPaaS.com address as it is (no delete propagation), like deleted profiles.

Subscriptions: a mapping may read ``attributes.subscriptions`` (e.g. ``attributes.subscriptions.email.marketing
.consent`` into a Customer custom field). The poller lists profiles with them; an event without them (or
without data) is completed with one ``GET /api/profiles/{id}?additional-fields[profile]=subscriptions``. When
Klaviyo gives none, or a mapped position in them is missing, "Address Value Could Not Be Read" is raised (the
catalog's entry for an address or subscription value that could not be read).

Every step is idempotent, so a retried or re-delivered event converges without duplicates: the Customer created by
an attempt that failed later is found by its link or email, its address by its link or content.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping
from typing import Any

from consumer.catalog import (
    ADDRESS_VALUE_COULD_NOT_BE_READ,
    COULD_NOT_LINK_TO_EXISTING_CUSTOMER,
    UNEXPECTED_ERROR,
    CatalogError,
    Flow,
)
from consumer.envelopes import Action
from consumer.flows.context import Change, FlowContext
from consumer.flows.ports import IpaasPort
from consumer.ipaas.errors import IpaasRejected
from consumer.ipaas.models import ADDRESS_TABLE, CUSTOMER_TABLE
from consumer.mapping import MappingCollection, default_collections
from consumer.mapping.paths import Key
from consumer.records import Customer, CustomerAddress, KlaviyoProfile

logger = logging.getLogger("consumer.flows.profiles_to")

ADDRESS_LINK_SUFFIX = "|address"
LOCATION_FIELDS = ("address_1", "address_2", "address_3", "city", "region", "country", "postal_code")
_defaults: dict[str, MappingCollection] | None = None


# --- helpers ----------------------------------------------------------------------------------------------------
def normalise_email(email: str | None) -> str:
    """An email for "differs only in case or formatting" comparisons: NFKC, case-folded, no white space, no
    ``mailto:`` or angle brackets."""
    if not email:
        return ""
    text = unicodedata.normalize("NFKC", email)
    text = "".join(text.split()).casefold()
    if text.startswith("mailto:"):
        text = text[len("mailto:"):]
    return text.strip("<>")


def normalise_value(value: Any) -> Any:
    """A field value for "same content" comparisons of addresses: trimmed, single-spaced, NFKC, case-folded."""
    if value is None:
        return None
    if isinstance(value, str):
        text = " ".join(unicodedata.normalize("NFKC", value).split()).casefold()
        return text or None
    return value


def address_link_key(profile_id: str) -> str:
    """The child external id of a profile's Customer Address (``<parent id>|<child>``)."""
    return f"{profile_id}{ADDRESS_LINK_SUFFIX}"


def collection(ctx: FlowContext, flow: Flow) -> MappingCollection:
    """The flow's mapping collection from the context, else the shipped default."""
    global _defaults
    found = ctx.mappings.get(flow.slug) if ctx.mappings else None
    if found is not None:
        return found
    if _defaults is None:
        _defaults = default_collections()
    return _defaults[flow.slug]


def _custom_field_changes(current: Customer, mapped: Any) -> list[dict[str, Any]] | None:
    """Mapped ``custom_fields`` (a ``{name: value}`` object or a ``[{name, value}]`` list) merged into the
    Customer's custom fields; None when no value differs."""
    if isinstance(mapped, Mapping):
        wanted = dict(mapped)
    elif isinstance(mapped, list):
        wanted = {item.get("name"): item.get("value") for item in mapped if isinstance(item, Mapping)}
    else:
        return None
    if all(current.custom_field(name) == value for name, value in wanted.items()):
        return None
    merged = [{"name": field.name, "value": field.value} for field in current.custom_fields]
    for name, value in wanted.items():
        for item in merged:
            if item["name"] == name:
                item["value"] = value
                break
        else:
            merged.append({"name": name, "value": value})
    return merged


def customer_changes(current: Customer, mapped: Mapping[str, Any]) -> dict[str, Any]:
    """The mapped fields whose value differs from the Customer's (exact comparison)."""
    values = current.model_dump(mode="json")
    changes: dict[str, Any] = {}
    for name, value in mapped.items():
        if name == "custom_fields":
            merged = _custom_field_changes(current, value)
            if merged is not None:
                changes[name] = merged
        elif values.get(name) != value:
            changes[name] = value
    return changes


def address_changes(current: CustomerAddress, mapped: Mapping[str, Any]) -> dict[str, Any]:
    values = current.model_dump(mode="json")
    return {name: value for name, value in mapped.items() if values.get(name) != value}


def has_location(fields: Mapping[str, Any]) -> bool:
    return any(fields.get(name) not in (None, "") for name in LOCATION_FIELDS)


def same_location(address: CustomerAddress, fields: Mapping[str, Any]) -> bool:
    """True when ``address`` is at the location ``fields`` describe: every location field equal once normalised
    (white space, case, Unicode forms), a field ``fields`` leaves out counting as empty."""
    values = address.model_dump(mode="json")
    return all(normalise_value(values.get(name)) == normalise_value(fields.get(name)) for name in LOCATION_FIELDS)


_TO_FLOWS = (Flow.ADD_PROFILE_TO_IPAAS, Flow.UPDATE_PROFILE_TO_IPAAS, Flow.ADD_PROFILE_ADDRESS_TO_IPAAS,
             Flow.UPDATE_PROFILE_ADDRESS_TO_IPAAS)


def reads_subscriptions(mapping: MappingCollection) -> bool:
    """Whether a field of ``mapping`` reads the profile's ``subscriptions``."""
    paths = [path for field in mapping.fields for path in (field.path, *field.paths) if path is not None]
    return any(Key("subscriptions") in path.segments for path in paths)


async def _profile_of(change: Change[KlaviyoProfile | None], ctx: FlowContext) -> KlaviyoProfile:
    """The changed profile; read from Klaviyo when the event has no data, or has no subscriptions while a
    mapping reads them (the poller's listing asks for them, so this is for events from elsewhere)."""
    wanted = any(reads_subscriptions(collection(ctx, flow)) for flow in _TO_FLOWS)
    record = change.record
    if record is not None and (record.attributes.subscriptions is not None or not wanted):
        return record
    if wanted:
        fetched = await ctx.klaviyo.get_profile_subscriptions(change.record_id)
    else:
        fetched = await ctx.klaviyo.get_profile(change.record_id)  # a data-less event: read the profile
    profile = KlaviyoProfile.model_validate(fetched.model_dump(mode="json"))
    if wanted and profile.attributes.subscriptions is None:
        flow = Flow.ADD_PROFILE_TO_IPAAS if change.created else Flow.UPDATE_PROFILE_TO_IPAAS
        raise CatalogError(ADDRESS_VALUE_COULD_NOT_BE_READ,
                           "a mapping reads the profile's subscriptions, and Klaviyo returned none", flow=flow,
                           retryable=False)
    return profile


# --- the flow -----------------------------------------------------------------------------------------------------
class _Sync:
    """One profile's sync (keeps the flow currently running, for the errors it raises)."""

    def __init__(self, change: Change[KlaviyoProfile | None], ctx: FlowContext, profile: KlaviyoProfile) -> None:
        self.change = change
        self.ctx = ctx
        self.profile = profile
        self.source = profile.model_dump(mode="json")
        self.event_flow = Flow.ADD_PROFILE_TO_IPAAS if change.created else Flow.UPDATE_PROFILE_TO_IPAAS
        self.flow = self.event_flow
        if ctx.ipaas is None:  # a configuration problem: dead-letter (replayable once configured), don't crash
            raise CatalogError(UNEXPECTED_ERROR, "no iPaaS.com client is configured (set ipaas.api_token)",
                               flow=self.flow, retryable=False)
        self.ipaas: IpaasPort = ctx.ipaas

    async def run(self) -> None:
        customer, stored = await self.resolve()
        if customer is None:
            self.flow = Flow.ADD_PROFILE_TO_IPAAS
            customer = await self.add_customer()
        else:
            self.flow = Flow.UPDATE_PROFILE_TO_IPAAS
            customer = await self.update_customer(customer)
            if not stored:
                await self.ipaas.update_external_id(customer.id, self.profile.id, table=CUSTOMER_TABLE)
        await self.sync_address(customer)

    # --- linking -------------------------------------------------------------------------------------------------
    async def _unlinked_or_ours(self, customer: Customer) -> bool:
        other = await self.ipaas.lookup_external_id(customer.id, table=CUSTOMER_TABLE)
        return other is None or other == self.profile.id

    async def resolve(self) -> tuple[Customer | None, bool]:
        """(the linked Customer or None, whether the link is already stored)."""
        profile = self.profile
        internal = await self.ipaas.lookup_internal_id(profile.id, table=CUSTOMER_TABLE)
        if internal is not None:
            customer = await self.ipaas.get_customer(internal)
            if customer is not None:
                return customer, True
            logger.info("The stored link points to a Customer that is gone; linking again",
                        extra={"flow": self.flow.slug})
        external_id = (profile.attributes.external_id or "").strip()
        if external_id:
            try:
                customer = await self.ipaas.get_customer(external_id)
            except IpaasRejected as exc:  # not an iPaaS.com id at all (another system's external_id)
                if exc.http_status not in (400, 404):
                    raise
                customer = None
            if customer is not None and await self._unlinked_or_ours(customer):
                return customer, False
        email = (profile.attributes.email or "").strip()
        if email:
            exact = [c for c in await self.ipaas.find_customers_by_email(email) if c.email_address == email]
            for customer in exact:
                if await self._unlinked_or_ours(customer):
                    return customer, False
        return None, False

    async def _near_matches(self, email: str | None) -> tuple[list[Customer], list[Customer]]:
        """(Customers whose email differs only in case or formatting, exact matches linked to other profiles)."""
        if not email:
            return [], []
        wanted = normalise_email(email)
        found = await self.ipaas.find_customers_by_email(email.strip(), exact=False)
        near = [c for c in found if c.email_address != email and normalise_email(c.email_address) == wanted]
        taken = [c for c in found if c.email_address == email]
        return near, taken

    # --- customer ------------------------------------------------------------------------------------------------
    async def add_customer(self) -> Customer:
        fields = collection(self.ctx, Flow.ADD_PROFILE_TO_IPAAS).build(self.source)
        near, taken = await self._near_matches(fields.get("email_address"))
        if near or taken:
            parts = []
            if near:
                ids = ", ".join(c.id for c in near[:10])
                parts.append(f"{len(near)} Customer(s) with an email differing only in case or formatting ({ids})")
            if taken:
                ids = ", ".join(c.id for c in taken[:10])
                parts.append(f"{len(taken)} Customer(s) with this email linked to another Klaviyo profile ({ids})")
            # reported under the flow of the event: an updated profile that cannot be matched is the Update flow's
            warning = CatalogError(COULD_NOT_LINK_TO_EXISTING_CUSTOMER, "; ".join(parts), flow=self.event_flow)
            await self.ctx.warn(warning, self.change.transfer)
        custom = fields.get("custom_fields")
        if isinstance(custom, Mapping):  # mapped by name (custom_fields.Consent): the list form iPaaS.com takes
            fields = {**fields, "custom_fields": [{"name": k, "value": v} for k, v in custom.items()]}
        customer: Customer = await self.ipaas.create_customer(fields)
        await self.ipaas.update_external_id(customer.id, self.profile.id, table=CUSTOMER_TABLE)
        logger.info("Customer created from a Klaviyo profile", extra={"flow": self.flow.slug,
                                                                      "customer_id": customer.id})
        return customer

    async def update_customer(self, customer: Customer) -> Customer:
        fields = collection(self.ctx, Flow.UPDATE_PROFILE_TO_IPAAS).build(self.source)
        changes = customer_changes(customer, fields)
        if not changes:
            logger.debug("Customer already up to date; nothing written", extra={"flow": self.flow.slug,
                                                                                 "customer_id": customer.id})
            return customer
        updated: Customer = await self.ipaas.update_customer(customer.id, changes, current=customer)
        logger.info("Customer updated from a Klaviyo profile",
                    extra={"flow": self.flow.slug, "customer_id": customer.id, "fields": sorted(changes)})
        return updated

    # --- address -------------------------------------------------------------------------------------------------
    async def sync_address(self, customer: Customer) -> None:
        key = address_link_key(self.profile.id)
        addresses: list[CustomerAddress] | None = None
        address_id = await self.ipaas.lookup_internal_id(key, table=ADDRESS_TABLE)
        if address_id is not None:
            addresses = await self.ipaas.list_customer_addresses(customer.id)
            linked = next((a for a in addresses if a.id == address_id), None)
            if linked is not None:
                self.flow = Flow.UPDATE_PROFILE_ADDRESS_TO_IPAAS
                fields = collection(self.ctx, Flow.UPDATE_PROFILE_ADDRESS_TO_IPAAS).build(self.source)
                if not has_location(fields):
                    return
                changes = address_changes(linked, fields)
                if changes:
                    await self.ipaas.update_customer_address(customer.id, address_id, changes, current=linked)
                    logger.info("Customer Address updated from a Klaviyo profile",
                                extra={"flow": self.flow.slug, "customer_id": customer.id, "fields": sorted(changes)})
                return
        self.flow = Flow.ADD_PROFILE_ADDRESS_TO_IPAAS
        fields = collection(self.ctx, Flow.ADD_PROFILE_ADDRESS_TO_IPAAS).build(self.source)
        if not has_location(fields):
            return
        if addresses is None:
            addresses = await self.ipaas.list_customer_addresses(customer.id)
        address = next((a for a in addresses if same_location(a, fields)), None)
        if address is None:
            address = await self.ipaas.create_customer_address(customer.id, fields)
            logger.info("Customer Address created from a Klaviyo profile",
                        extra={"flow": self.flow.slug, "customer_id": customer.id})
        else:  # the Customer already has an address at this location (e.g. the one sent to Klaviyo): adopt it
            changes = address_changes(address, fields)
            if changes and address.id:
                address = await self.ipaas.update_customer_address(customer.id, address.id, changes,
                                                                   current=address)
        assert address.id is not None
        await self.ipaas.update_external_id(address.id, key, table=ADDRESS_TABLE)


async def sync_customer(change: Change[KlaviyoProfile | None], ctx: FlowContext) -> None:
    """Add or update the iPaaS.com Customer (and its Customer Address) of a changed Klaviyo profile."""
    if change.action == Action.DELETED:
        return  # no delete propagation (as iPaaS.com's own Klaviyo integration)
    sync: _Sync | None = None
    try:
        sync = _Sync(change, ctx, await _profile_of(change, ctx))
        await sync.run()
    except CatalogError as exc:
        # API errors (iPaaS.com, Klaviyo) belong to the flow that was running when they happened
        if sync is not None and exc.entry.flow in (Flow.ALL, Flow.SERVICE):
            exc.flow = sync.flow
        raise


__all__ = [
    "address_link_key",
    "customer_changes",
    "normalise_email",
    "same_location",
    "sync_customer",
]
