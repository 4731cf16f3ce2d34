"""The in-process link cache: a Customer's external_id -> the id of its Klaviyo profile.

Klaviyo can PATCH a profile only by its id, so without this cache every update of a linked customer would
first look the id up (``GET /api/profiles?filter=equals(external_id,...)``). The cache only saves that call:
it starts empty after a restart, every path that trusts it recovers when the cached profile is gone (a 404),
and Klaviyo stays the source of truth.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_MAX_LINKS = 100_000


class ProfileLinks:
    """A bounded LRU map of external_id -> Klaviyo profile id."""

    def __init__(self, max_entries: int = DEFAULT_MAX_LINKS) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._links: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._links)

    def get(self, external_id: str | None) -> str | None:
        if not external_id:
            return None
        profile_id = self._links.get(external_id)
        if profile_id is not None:
            self._links.move_to_end(external_id)
        return profile_id

    def remember(self, external_id: str | None, profile_id: str) -> None:
        if not external_id:
            return
        self._links[external_id] = profile_id
        self._links.move_to_end(external_id)
        while len(self._links) > self._max:
            self._links.popitem(last=False)

    def forget(self, external_id: str | None) -> None:
        if external_id:
            self._links.pop(external_id, None)

