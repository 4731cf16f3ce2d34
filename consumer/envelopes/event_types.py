"""Event type names -> actions, whatever the naming style of the envelope that carries them."""

from __future__ import annotations

import re

from consumer.envelopes.base import Action, PoisonPill, RecordKind, short

_ENTITY_ALIASES: dict[str, frozenset[str]] = {
    "customer": frozenset({"customer"}),
    "transaction": frozenset({"transaction", "order"}),
    "klaviyo_profile": frozenset({"profile", "klaviyoprofile"}),
}
_ACTIONS: dict[str, Action] = {
    **dict.fromkeys(("created", "create", "inserted", "insert", "added", "add", "new"), Action.CREATED),
    **dict.fromkeys(
        (
            "updated",
            "update",
            "modified",
            "modify",
            "changed",
            "change",
            "upserted",
            "upsert",
            "saved",
            "poll",
            "polled",
            "initialize",
            "initialized",
            "initialise",
            "initialised",
        ),
        Action.UPDATED,
    ),
    **dict.fromkeys(("deleted", "delete", "removed", "remove", "destroyed"), Action.DELETED),
}
_SEPARATORS = re.compile(r"[/.:_\-\s]+")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_VERSION = re.compile(r"^v?\d+$")


def entity_matches(kind: str, word: str) -> bool:
    word = word.lower()
    aliases = _ENTITY_ALIASES[kind]
    return word in aliases or (word.endswith("s") and word[:-1] in aliases)


def parse_event_type(kind: RecordKind, event_type: str) -> Action:
    """The action of an event type naming ``kind``; else :class:`PoisonPill` ``unknown_event_type``.

    Accepts scope style (``customer/created``), reverse-DNS style (``com.ipaas.customer.created``,
    ``ipaas.customer.updated``), PascalCase (``CustomerCreated``, ``OrderCreated``) and snake/kebab case. The
    action is the last word; the word before it, when there is one, must name ``kind``. ``poll`` and
    ``initialize`` scopes are updates.
    """
    words = [
        word.lower()
        for segment in _SEPARATORS.split(event_type.strip())
        if not _VERSION.match(segment.lower())
        for word in _WORDS.findall(segment)
    ]
    if not words or words[-1] not in _ACTIONS:
        raise PoisonPill("unknown_event_type", f"event type {short(event_type)!r}: unknown action")
    if len(words) >= 2 and not entity_matches(kind, words[-2]):
        raise PoisonPill("unknown_event_type", f"event type {short(event_type)!r} is not about a {kind} record")
    return _ACTIONS[words[-1]]
