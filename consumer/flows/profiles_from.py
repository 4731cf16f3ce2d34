"""Add / Update Klaviyo Profile FROM iPaaS.com: a Customer becomes, or updates, its linked Klaviyo profile.

The link is the profile's ``external_id`` (the mapped Customer id). ``customer/created`` runs the Add flow,
``customer/updated`` the Update flow; an update for a customer that was never sent runs the Add flow.

Add: build the profile with the Add mapping; it needs an email or a phone number (an ``external_id`` alone is
the integration's own link, not an identifier Klaviyo can match or reach a person by) and a well-formed email,
else "Profile Could Not Be Created". Then ``POST /api/profiles``. On 409 ``duplicate_profile`` the existing
profile is read: when it is not linked, or linked to this customer, it is linked and updated (PATCH) instead of
creating a second one.

Update: build with the Update mapping (mapping failures, a malformed email, or neither ``external_id`` nor email
give "Profile Could Not Be Updated"), find the linked profile (link cache, then ``external_id``, then email when
no ``external_id`` is mapped) and PATCH it; when none is found the Add flow runs.

"Could Not Link to Existing Profile" (a warning; the transfer goes on) is raised when
  1. the create returned 201 while a profile holding the email in another letter case or with other white space
     exists (checked only when the sent email is not already lower-case: Klaviyo matches emails exactly, and
     stores them lower-cased, so only such an email can miss an existing profile); the new profile stays;
  2. the 409's existing profile is linked to another customer (its ``external_id`` differs): a separate profile
     is created without the identifiers that profile holds;
  3. a PATCH answers 409 because the customer's email or phone belongs to another profile: the profile is
     updated without those identifiers.
At most one such warning is raised per transfer.

Klaviyo calls (the link cache knows ``external_id`` -> profile id for customers this process has written):
  created, new to Klaviyo .......................................... 1   POST profiles (201)
    ... and the email is not lower-case ............................. +1  GET profiles by the lower-cased email
  created, email/phone on a profile that is not linked ............. 3   POST (409), GET it, PATCH it
  created or updated, link cached (steady state, redelivery) ....... 1   PATCH
  updated, link not cached ......................................... 2   GET by external_id, PATCH
  updated, never sent .............................................. 1 + the "created" costs above
  each identifier conflict resolved ................................ +2  GET the holder, POST/PATCH again
Rate limits, 5xx and connection errors are retried inside ``KlaviyoClient``; what still fails is raised as
"Error calling Klaviyo (...)" / "An error occurred while contacting Klaviyo (...)" with this flow.

In the service every customer goes through the profile importer (``FlowContext.profile_imports``): a trickle takes
the path above; under a backlog a customer shares a bulk import job, with these linking rules kept where the
import can keep them and this path taken where it cannot (``consumer.flows.profile_imports``). Its cost there: a
share of 3 lookups per 100 customers, of one job for up to 10,000, and of the job's reads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from consumer.catalog import (
    COULD_NOT_LINK_PROFILE_BY_PHONE,
    COULD_NOT_LINK_TO_EXISTING_PROFILE,
    PROFILE_COULD_NOT_BE_CREATED,
    PROFILE_COULD_NOT_BE_UPDATED,
    CatalogEntry,
    CatalogError,
    Flow,
)
from consumer.flows.context import Change, FlowContext
from consumer.flows.links import ProfileLinks
from consumer.flows.marketing import apply_marketing, needs_profile
from consumer.flows.ports import KlaviyoPort, ProfileImports
from consumer.flows.profile_imports import BulkProfile
from consumer.klaviyo import KlaviyoRejected, Profile, ProfileAttributes
from consumer.klaviyo.importing import ImportRejected
from consumer.records import Customer
from consumer.transfers import TransferRef

__all__ = ["ProfileSync", "ensure_profile", "is_valid_email", "sync_profile"]

log = logging.getLogger("consumer.flows.profiles_from")

IDENTIFIERS = ("email", "phone_number", "external_id")
CONTACT_IDENTIFIERS = ("email", "phone_number")
MAX_CONFLICTS = 3
"""Identifier conflicts resolved per write before the 409 is given up on (there are three identifiers)."""
MAX_EMAIL_LENGTH = 99
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

CustomerSource = Customer | Callable[[], Awaitable[Customer]]
"""A Customer, or what reads it when it is needed (the order flow's platform Customer)."""

_ENTRIES: dict[Flow, CatalogEntry] = {
    Flow.ADD_PROFILE_FROM_IPAAS: PROFILE_COULD_NOT_BE_CREATED,
    Flow.UPDATE_PROFILE_FROM_IPAAS: PROFILE_COULD_NOT_BE_UPDATED,
}


def is_valid_email(value: Any) -> bool:
    """Klaviyo's own check: one ``@``, a dot in the domain, no white space, under 100 characters."""
    return isinstance(value, str) and len(value) <= MAX_EMAIL_LENGTH and _EMAIL.match(value) is not None


def normal_email(email: str) -> str:
    """The form Klaviyo stores an email in (white space trimmed, lower case)."""
    return email.strip().lower()


def _same(name: str, ours: Any, theirs: Any) -> bool:
    if not isinstance(ours, str) or not isinstance(theirs, str):
        return False
    return normal_email(ours) == normal_email(theirs) if name == "email" else ours == theirs


def _holder_of(exc: KlaviyoRejected) -> str | None:
    """The profile a 409 ``duplicate_profile`` names, else None."""
    return exc.duplicate_profile_id if exc.http_status == 409 else None


@dataclass
class ProfileSync:
    """One transfer's profile work: mapping, lookups, writes, conflict resolution and the link warning."""

    ctx: FlowContext
    transfer: TransferRef
    flow: Flow = Flow.ADD_PROFILE_FROM_IPAAS
    """The flow of the step running now: Klaviyo errors raised from here are attributed to it."""
    warned: bool = False

    @property
    def klaviyo(self) -> KlaviyoPort:
        return self.ctx.klaviyo

    @property
    def links(self) -> ProfileLinks:
        return self.ctx.links

    # --- the flows -------------------------------------------------------------------------------------------
    async def add(self, customer: Customer, *, use_cache: bool = True) -> str:
        """Add Klaviyo Profile FROM iPaaS.com; returns the profile id."""
        self.flow = Flow.ADD_PROFILE_FROM_IPAAS
        attrs = self.attributes(customer)
        external_id = attrs.get("external_id")
        cached = self.links.get(external_id) if use_cache else None
        if cached is not None:
            profile = await self._patch_cached(cached, attrs)
            if profile is not None:
                return profile.id
        return await self._create(attrs)

    async def update(self, customer: Customer) -> str:
        """Update Klaviyo Profile FROM iPaaS.com; a customer never sent is added. Returns the profile id."""
        self.flow = Flow.UPDATE_PROFILE_FROM_IPAAS
        attrs = self.attributes(customer)
        external_id = attrs.get("external_id")
        cached = self.links.get(external_id)
        if cached is not None:
            profile = await self._patch_cached(cached, attrs)
            if profile is not None:
                return profile.id
        if external_id:
            found = await self.klaviyo.find_profile_by_external_id(external_id)
        else:
            found = await self.klaviyo.find_profile_by_email(attrs["email"])
        if found is not None:
            profile = await self._patch(found.id, attrs)
            self.links.remember(external_id, profile.id)
            return profile.id
        return await self.add(customer, use_cache=False)

    async def ensure(self, customer_id: str, customer: CustomerSource) -> str:
        """The profile id of the customer ``customer_id`` (its external_id), created through the Add flow when
        absent from ``customer``: the Customer, or what reads it (called only then, so a linked customer costs no
        read).

        Nothing is written when the profile exists: an order must not overwrite its customer's profile.
        """
        cached = self.links.get(customer_id)
        if cached is not None:
            return cached
        self.flow = Flow.ADD_PROFILE_FROM_IPAAS
        found = await self.klaviyo.find_profile_by_external_id(customer_id)
        if found is not None:
            self.links.remember(customer_id, found.id)
            return found.id
        attrs = self.attributes(customer if isinstance(customer, Customer) else await customer())
        return await self._create(attrs, write_existing=False)

    def bulk(self, customer: Customer, *, created: bool) -> BulkProfile:
        """The change as the importer takes it: the mapped attributes of the flow it starts in (raising that flow's
        catalog error, as the per-record path would), and the Add mapping's for an update that finds no profile."""
        if created:
            self.flow = Flow.ADD_PROFILE_FROM_IPAAS
            return BulkProfile.created(self.attributes(customer))
        self.flow = Flow.UPDATE_PROFILE_FROM_IPAAS
        attrs = self.attributes(customer)

        def add() -> dict[str, Any]:
            self.flow = Flow.ADD_PROFILE_FROM_IPAAS
            try:
                return self.attributes(customer)
            finally:
                self.flow = Flow.UPDATE_PROFILE_FROM_IPAAS

        return BulkProfile.updated(attrs, add)

    # --- mapping and validation --------------------------------------------------------------------------------
    def attributes(self, customer: Customer) -> dict[str, Any]:
        """The mapped profile attributes for the current flow, validated; raises the flow's catalog error."""
        flow = self.flow
        entry = _ENTRIES[flow]
        attrs = self.ctx.mappings[flow.slug].build(customer.model_dump(mode="json"))
        email = attrs.get("email")
        if email is not None and not is_valid_email(email):
            raise CatalogError(entry, "field 'email': not a valid email address", flow=flow)
        if flow is Flow.ADD_PROFILE_FROM_IPAAS and not any(attrs.get(name) for name in CONTACT_IDENTIFIERS):
            raise CatalogError(entry, "the customer has no email and no phone number (at least one is required)",
                               flow=flow)
        if flow is Flow.UPDATE_PROFILE_FROM_IPAAS and not (attrs.get("external_id") or email):
            raise CatalogError(entry, "neither external_id nor email is mapped to find the linked profile",
                               flow=flow)
        try:
            ProfileAttributes.model_validate(attrs)
        except ValueError as exc:
            raise CatalogError(entry, f"the mapped profile is not valid: {_fields_of(exc)}", flow=flow) from None
        return attrs

    # --- Klaviyo writes ---------------------------------------------------------------------------------------
    async def _create(self, attrs: dict[str, Any], *, write_existing: bool = True) -> str:
        """POST the profile; a 409 links to the existing profile, or splits off a separate one (warning)."""
        external_id = attrs.get("external_id")
        for _ in range(MAX_CONFLICTS + 1):
            if not any(attrs.get(name) for name in IDENTIFIERS):
                raise CatalogError(PROFILE_COULD_NOT_BE_CREATED,
                                   "every identifier of the customer belongs to other Klaviyo profiles",
                                   flow=Flow.ADD_PROFILE_FROM_IPAAS)
            try:
                created = await self.klaviyo.create_profile(ProfileAttributes.model_validate(attrs))
            except KlaviyoRejected as exc:
                holder_id = _holder_of(exc)
                if holder_id is None:
                    raise
                holder = await self.klaviyo.get_profile(holder_id)
                linked_to = holder.attributes.external_id
                if linked_to is None or linked_to == external_id:
                    if write_existing or linked_to is None:
                        holder = await self._patch(holder.id, attrs)
                    self.links.remember(external_id, holder.id)
                    return holder.id
                attrs = await self._without_held(attrs, holder, exc, "is linked to another customer")
                continue
            self.links.remember(external_id, created.id)
            await self._check_near_duplicate(created, attrs)
            return created.id
        raise CatalogError(PROFILE_COULD_NOT_BE_CREATED, "too many identifier conflicts",
                           flow=Flow.ADD_PROFILE_FROM_IPAAS)

    async def _patch(self, profile_id: str, attrs: dict[str, Any]) -> Profile:
        """PATCH the profile; an identifier another profile holds is left out (warning)."""
        external_id = attrs.get("external_id")
        last: KlaviyoRejected | None = None
        for _ in range(MAX_CONFLICTS + 1):
            try:
                return await self.klaviyo.update_profile(profile_id, ProfileAttributes.model_validate(attrs))
            except KlaviyoRejected as exc:
                holder_id = _holder_of(exc)
                if holder_id is None or holder_id == profile_id:
                    raise
                last = exc
            holder = await self.klaviyo.get_profile(holder_id)
            if external_id and holder.attributes.external_id == external_id:
                # The customer is already linked to the holder: write there; this profile keeps what it holds.
                current = await self.klaviyo.get_profile(profile_id)
                attrs = await self._without_held(attrs, current, last, "is not the profile linked to the customer")
                profile_id = holder_id
            else:
                attrs = await self._without_held(attrs, holder, last, "holds it")
        assert last is not None
        raise last

    async def _patch_cached(self, profile_id: str, attrs: dict[str, Any]) -> Profile | None:
        """PATCH a profile the link cache names; None (and the link forgotten) when it no longer exists."""
        try:
            profile = await self._patch(profile_id, attrs)
        except KlaviyoRejected as exc:
            if exc.http_status != 404:
                raise
            self.links.forget(attrs.get("external_id"))
            return None
        return profile

    async def _without_held(
        self, attrs: dict[str, Any], holder: Profile, exc: KlaviyoRejected, why: str
    ) -> dict[str, Any]:
        """``attrs`` without the identifiers ``holder`` has, with the link warning; re-raises ``exc`` if none."""
        held = [name for name in IDENTIFIERS if _same(name, attrs.get(name), getattr(holder.attributes, name))]
        if not held:
            raise exc
        entry = COULD_NOT_LINK_TO_EXISTING_PROFILE if "email" in held else COULD_NOT_LINK_PROFILE_BY_PHONE
        await self._warn(f"{' and '.join(held)} already on Klaviyo profile {holder.id}, which {why}", entry)
        return {name: value for name, value in attrs.items() if name not in held}

    async def _check_near_duplicate(self, created: Profile, attrs: dict[str, Any]) -> None:
        email = attrs.get("email")
        if not isinstance(email, str) or self.warned or normal_email(email) == email:
            return
        other = await self.klaviyo.find_profile_by_email(normal_email(email))
        if other is not None and other.id != created.id:
            await self._warn(f"Klaviyo profile {other.id} has this email in another letter case or format; "
                             f"created profile {created.id}")

    async def _warn(self, detail: str, entry: CatalogEntry = COULD_NOT_LINK_TO_EXISTING_PROFILE) -> None:
        """The link warning: the seed's email entry for an email conflict; the service's own for a phone number."""
        if self.warned:
            return
        self.warned = True
        log.info("Could not link to an existing Klaviyo profile",
                 extra={"flow": self.flow.slug, "transfer_kind": self.transfer.kind, "code": entry.code})
        await self.ctx.warn(CatalogError(entry, detail, flow=self.flow), self.transfer)


def _fields_of(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        names = sorted({".".join(str(part) for part in error.get("loc", ())) for error in errors()})
        return ", ".join(name for name in names if name) or "invalid value"
    return "invalid value"


def attribute(exc: CatalogError, flow: Flow) -> None:
    """Give a Klaviyo API error (catalogued under "all flows") the flow it happened in."""
    if exc.flow is Flow.ALL:
        exc.flow = flow


async def sync_profile(change: Change[Customer], ctx: FlowContext) -> None:
    """Handler of ``customer/created`` (Add flow) and ``customer/updated`` (Update flow), then the customer's
    consent and list membership (``consumer.flows.marketing``).

    With the service's importer (``ctx.profile_imports``) the profile goes through it: in a bulk import job under a
    backlog, when the linking rules allow (``consumer.flows.profile_imports``), else by the per-record path below;
    a customer whose consent or lists need the profile's id always takes the per-record path."""
    sync = ProfileSync(ctx, change.transfer)
    try:
        importer = ctx.profile_imports
        if importer is not None and not needs_profile(change.record, ctx.marketing):
            await _through(importer, sync, change)
            return
        await _per_record(sync, change)
    except CatalogError as exc:
        attribute(exc, sync.flow)
        raise


async def _per_record(sync: ProfileSync, change: Change[Customer]) -> None:
    ctx = sync.ctx
    profile_id = await (sync.add(change.record) if change.created else sync.update(change.record))
    await apply_marketing(ctx.klaviyo, ctx.marketing, change.record, profile_id, sync.flow)


async def _through(importer: ProfileImports, sync: ProfileSync, change: Change[Customer]) -> None:
    """The record's profile by the importer: imported in a job, or the per-record path when it hands it back."""
    bulk = sync.bulk(change.record, created=change.created)
    try:
        async with importer.submit(bulk) as imported:
            if imported is None:
                await _per_record(sync, change)
                return
    except ImportRejected as exc:
        sync.flow = bulk.flow
        raise bulk.refused(exc) from exc
    except CatalogError:
        sync.flow = bulk.flow
        raise
    sync.flow = bulk.flow
    if imported.profile_id is not None:
        sync.links.remember(imported.attributes.external_id, imported.profile_id)


async def ensure_profile(ctx: FlowContext, customer: CustomerSource, transfer: TransferRef,
                         customer_id: str | None = None) -> str:
    """The Klaviyo profile id of a customer (looked up by external_id = its id: ``customer_id``, else the
    Customer's), added from ``customer`` (the Customer, or what reads it) when absent.

    Raises the Add flow's catalog errors, with Klaviyo API errors attributed to the Add flow.
    """
    sync = ProfileSync(ctx, transfer)
    if customer_id is None:
        if not isinstance(customer, Customer):
            raise TypeError("ensure_profile needs customer_id when the Customer is read on demand")
        customer_id = customer.id
    try:
        return await sync.ensure(customer_id, customer)
    except CatalogError as exc:
        attribute(exc, sync.flow)
        raise
