"""Marketing consent and list membership FROM iPaaS.com, from the Customer's special custom fields.

After the Add/Update Profile flow has written the profile:

``SubscribeProfile`` (true/false) is email marketing consent. Creating or updating a profile never subscribes it
(Klaviyo's rule): consent is given with a subscription job (``bulk_subscribe_profiles``, joining the configured
``klaviyo.consent_list_id``) and withdrawn with an unsubscription job (``bulk_unsubscribe_profiles``). Without
a consent list nothing is sent (the service warns at start). A value is applied only when it changed from the
one last applied to the profile: the profile's ``ipaas_subscribe_profile`` property records it (and this
process caches it), so a profile whose person unsubscribed in Klaviyo is never resubscribed by an unrelated
update. Applying a changed value reads the profile's subscriptions (``additional-fields[profile]=subscriptions``,
once per change, not per update) and sends:
  true,  Klaviyo not SUBSCRIBED ............ a subscription job (unless the value was never applied and the
                                             person's unsubscription is newer than the Customer's last update)
  false, Klaviyo SUBSCRIBED ................ an unsubscription job (no list: consent is withdrawn globally)
  otherwise ................................ nothing
then records the value on the profile (one PATCH).

``LIST_<name>`` true: the profile joins list ``<name>``. ``UCLIST_<name>`` true: the profile leaves list
``<name>`` (read as "un-check list": membership only, consent is untouched; when both are true, leaving wins).
The prefixes are matched as written (upper case). False or empty fields change nothing. Lists are found by exact
name (``GET /api/lists``, cached) unless ``klaviyo.list_ids`` names their ids; a name Klaviyo has no list for is
logged (a warning) and skipped. Adding is idempotent at Klaviyo and cached here, so a redelivered change adds the
profile once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consumer.catalog import Flow
from consumer.flows.ports import KlaviyoPort
from consumer.klaviyo.models import ProfileAttributes, email_consent
from consumer.records import Customer

__all__ = ["CONSENT_FIELD", "CONSENT_PROPERTY", "MarketingState", "apply_marketing", "list_changes", "needs_profile"]

log = logging.getLogger("consumer.flows.marketing")

CONSENT_FIELD = "SubscribeProfile"
CONSENT_PROPERTY = "ipaas_subscribe_profile"
"""The profile property holding the ``SubscribeProfile`` value last applied (survives restarts)."""
JOIN_PREFIX = "LIST_"
LEAVE_PREFIX = "UCLIST_"
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


def as_bool(value: Any) -> bool | None:
    """A custom field's true/false (``True``, ``"true"``, ``1``, ``"yes"``...); None when empty or not a flag."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


@dataclass
class MarketingState:
    """The configured consent list and list ids, and what this process has applied (caches)."""

    consent_list_id: str | None = None
    list_ids: dict[str, str] = field(default_factory=dict)
    """List name -> id: the configured ones, and those looked up by name."""
    consent_applied: dict[str, bool] = field(default_factory=dict)
    memberships: set[tuple[str, str, bool]] = field(default_factory=set)
    """(profile id, list id, joined) changes this process has made."""


def list_changes(customer: Customer) -> tuple[list[str], list[str]]:
    """The list names the customer joins and leaves (``LIST_`` / ``UCLIST_`` fields that are true)."""
    join: set[str] = set()
    leave: set[str] = set()
    for custom in customer.custom_fields:
        name = custom.name or ""
        if as_bool(custom.value) is not True:
            continue
        if name.startswith(LEAVE_PREFIX) and name[len(LEAVE_PREFIX):]:
            leave.add(name[len(LEAVE_PREFIX):])
        elif name.startswith(JOIN_PREFIX) and name[len(JOIN_PREFIX):]:
            join.add(name[len(JOIN_PREFIX):])
    return sorted(join - leave), sorted(leave)


def needs_profile(customer: Customer, state: MarketingState) -> bool:
    """Whether applying the customer's consent or lists needs its profile's id (what a bulk import doesn't give)."""
    if state.consent_list_id is not None and as_bool(customer.custom_field(CONSENT_FIELD)) is not None:
        return True
    join, leave = list_changes(customer)
    return bool(join or leave)


@dataclass
class _Marketing:
    klaviyo: KlaviyoPort
    state: MarketingState
    flow: Flow

    async def consent(self, customer: Customer, profile_id: str) -> None:
        desired = as_bool(customer.custom_field(CONSENT_FIELD))
        list_id = self.state.consent_list_id
        if desired is None or list_id is None or self.state.consent_applied.get(profile_id) is desired:
            return
        profile = await self.klaviyo.get_profile_subscriptions(profile_id)
        applied = as_bool((profile.attributes.properties or {}).get(CONSENT_PROPERTY))
        if applied is desired:
            self.state.consent_applied[profile_id] = desired
            return
        email = profile.attributes.email
        if not email:
            log.info("Email marketing consent not applied: the profile has no email", extra={"flow": self.flow.slug})
            return
        current = email_consent(profile)
        if desired and current != "SUBSCRIBED":
            if not (applied is None and current == "UNSUBSCRIBED" and _unsubscribed_since(profile, customer)):
                await self.klaviyo.subscribe_profiles(list_id, [email])
        elif not desired and current == "SUBSCRIBED":
            await self.klaviyo.unsubscribe_profiles(None, [email])
        await self.klaviyo.update_profile(profile_id, ProfileAttributes(properties={CONSENT_PROPERTY: desired}))
        self.state.consent_applied[profile_id] = desired

    async def lists(self, customer: Customer, profile_id: str) -> list[str]:
        """Joins and leaves the customer's lists; returns the names of lists Klaviyo doesn't have."""
        join, leave = list_changes(customer)
        missing: list[str] = []
        for names, joined in ((join, True), (leave, False)):
            for name in names:
                list_id = await self._list_id(name)
                if list_id is None:
                    missing.append(name)
                    continue
                key = (profile_id, list_id, joined)
                if key in self.state.memberships:
                    continue
                if joined:
                    await self.klaviyo.add_profiles_to_list(list_id, [profile_id])
                else:
                    await self.klaviyo.remove_profiles_from_list(list_id, [profile_id])
                self.state.memberships.discard((profile_id, list_id, not joined))
                self.state.memberships.add(key)
        return missing

    async def _list_id(self, name: str) -> str | None:
        known = self.state.list_ids.get(name)
        if known is not None:
            return known
        found = await self.klaviyo.find_list_id(name)
        if found is not None:
            self.state.list_ids[name] = found
        return found


def _unsubscribed_since(profile: Any, customer: Customer) -> bool:
    """Whether the person's unsubscription is newer than the Customer's last update (or the update is unknown)."""
    marketing = ((profile.attributes.subscriptions or {}).get("email") or {}).get("marketing") or {}
    stamp = marketing.get("consent_timestamp") if isinstance(marketing, dict) else None
    updated = customer.updated_datetime
    if not isinstance(stamp, str) or not isinstance(updated, datetime):
        return True
    try:
        unsubscribed = datetime.fromisoformat(stamp)
    except ValueError:
        return True
    if unsubscribed.tzinfo is None or updated.tzinfo is None:
        return True
    return unsubscribed >= updated


async def apply_marketing(
    klaviyo: KlaviyoPort, state: MarketingState, customer: Customer, profile_id: str, flow: Flow
) -> None:
    """Applies the customer's consent and list membership to its (written) profile."""
    marketing = _Marketing(klaviyo, state, flow)
    await marketing.consent(customer, profile_id)
    missing = await marketing.lists(customer, profile_id)
    if missing:
        log.warning("List membership not changed: Klaviyo has no list of that name",
                    extra={"flow": flow.slug, "lists": missing})
