"""The Add/Update Profile flow's linking rules for a profile written by a bulk import job.

A bulk import upserts: Klaviyo matches a row without ``id`` to whichever profile holds one of its identifiers,
and never clears a field. The per-record path (``consumer.flows.profiles_from``) decides the same things from
409s and lookups. ``BulkProfile.resolve`` takes the row only where the outcome is the one the per-record path
would reach, from the profiles the importer found holding the record's identifiers:

  Update flow, the profile linked by external_id (by email when none is mapped) exists,
    no other profile holds the customer's email or phone, no field to clear ........ update it by id
  Add flow (or an Update for a customer never sent), nobody holds an identifier ..... create it
    one profile holds them, not linked or linked to this customer, nothing to clear  update it by id (the link)
  anything else (a profile linked to another customer, identifiers on two profiles,
    an email not in Klaviyo's lower case, a value to clear) ........................ the per-record path

So a row never takes a profile linked to another customer, and the "Could Not Link" warnings, which only those
conflicts raise, still come from the per-record path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from consumer.catalog import (
    PROFILE_COULD_NOT_BE_CREATED,
    PROFILE_COULD_NOT_BE_UPDATED,
    CatalogError,
    Flow,
)
from consumer.klaviyo.importing import Identifier, Imported, ImportRejected, holders_of, normal_identifier
from consumer.klaviyo.models import Profile, ProfileAttributes

__all__ = ["BulkProfile"]

IDENTIFIERS = ("email", "phone_number", "external_id")
_ROW_WRAPPING = 80
"""The most a row adds around its attributes: ``{"type":"profile","id":"<26>","attributes":...}`` and a comma."""


def identifiers_of(attrs: Mapping[str, Any]) -> frozenset[Identifier]:
    return frozenset(normal_identifier(name, value) for name in IDENTIFIERS
                     if isinstance(value := attrs.get(name), str) and value)


def _present(value: Any) -> bool:
    return value not in (None, "", {}, [])


def clears(attrs: Mapping[str, Any], profile: Profile) -> bool:
    """Whether ``attrs`` set to null a field (or a location or property key) the profile has a value for."""
    current = profile.attributes
    for name, value in attrs.items():
        if value is None:
            if _present(getattr(current, name, None)):
                return True
        elif name in ("location", "properties") and isinstance(value, dict):
            inner = getattr(current, name, None)
            known = inner.model_dump() if isinstance(inner, BaseModel) else (inner or {})
            if any(v is None and _present(known.get(key)) for key, v in value.items()):
                return True
    return False


def written(attrs: Mapping[str, Any]) -> ProfileAttributes:
    """What the row writes: the attributes without nulls (the import ignores them; there is nothing to clear)."""
    kept: dict[str, Any] = {}
    for name, value in attrs.items():
        if value is None:
            continue
        if name in ("location", "properties") and isinstance(value, dict):
            value = {key: inner for key, inner in value.items() if inner is not None}
            if not value:
                continue
        kept[name] = value
    return ProfileAttributes.model_validate(kept)


def _normalized(attrs: Mapping[str, Any]) -> bool:
    email = attrs.get("email")
    return not isinstance(email, str) or email == email.strip().lower()


@dataclass
class BulkProfile:
    """One Customer change as the importer sees it (``consumer.klaviyo.importing.ProfileChange``).

    ``update``: the Update mapping's attributes (a ``customer/updated``), else None; ``add`` builds the Add
    mapping's (raising its catalog error) when the Add flow decides.
    """

    add: Callable[[], dict[str, Any]]
    update: dict[str, Any] | None = None
    first: dict[str, Any] = field(default_factory=dict)
    """The attributes the record starts with: ``update``, or the Add mapping's for a ``customer/created``."""
    flow: Flow = Flow.ADD_PROFILE_FROM_IPAAS
    """The flow the row belongs to (set by ``resolve``): which catalog entry an import error is."""
    _add: dict[str, Any] | None = None
    identifiers: frozenset[Identifier] = field(init=False)
    eligible: bool = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.identifiers = identifiers_of(self.first)
        self.eligible = _normalized(self.first)
        self.size = len(orjson.dumps(self.first, default=str)) + _ROW_WRAPPING

    @classmethod
    def created(cls, attrs: dict[str, Any]) -> BulkProfile:
        return cls(add=lambda: attrs, first=attrs, _add=attrs)

    @classmethod
    def updated(cls, attrs: dict[str, Any], add: Callable[[], dict[str, Any]]) -> BulkProfile:
        return cls(add=add, update=attrs, first=attrs, flow=Flow.UPDATE_PROFILE_FROM_IPAAS)

    def resolve(self, holders: Mapping[Identifier, Profile]) -> Imported | None:
        update = self.update
        if update is not None:
            external_id = update.get("external_id")
            key = ("external_id", external_id) if external_id else normal_identifier("email", str(update.get("email")))
            linked = holders.get(key)
            if linked is not None:
                self.flow = Flow.UPDATE_PROFILE_FROM_IPAAS
                if set(holders_of(identifiers_of(update), holders)) != {linked.id} or clears(update, linked):
                    return None
                return Imported(written(update), linked.id)
        self.flow = Flow.ADD_PROFILE_FROM_IPAAS
        attrs = self._add if self._add is not None else self.add()
        if not identifiers_of(attrs) <= self.identifiers or not _normalized(attrs):
            return None  # identifiers nobody looked up or held: the per-record path
        found = holders_of(identifiers_of(attrs), holders)
        if not found:
            return Imported(written(attrs))
        if len(found) > 1:
            return None
        (holder,) = found.values()
        if holder.attributes.external_id not in (None, attrs.get("external_id")) or clears(attrs, holder):
            return None
        return Imported(written(attrs), holder.id)

    def refused(self, error: ImportRejected) -> CatalogError:
        """Klaviyo's import error for this record as the flow's catalog error, with Klaviyo's detail."""
        entry = (PROFILE_COULD_NOT_BE_CREATED if self.flow is Flow.ADD_PROFILE_FROM_IPAAS
                 else PROFILE_COULD_NOT_BE_UPDATED)
        return CatalogError(entry, f"Klaviyo's bulk import refused the profile: {error.detail}", flow=self.flow,
                            cause=error)
