"""Source paths: parsing and evaluation against plain dicts and lists.

Syntax
    ``name`` segments separated by dots, each optionally followed by bracket steps::

        email_address
        primary_billing_address.city
        addresses[0].city                  # list position, 0-based: [0] is the first entry
        addresses[-1].city                 # negative positions count from the end: [-1] is the last entry
        lines[*].description               # wildcard: every entry, the result is a list
        custom_fields[name=SubscribeProfile].value   # the entry whose ``name`` is SubscribeProfile
        custom_fields[name="LIST_VIP Club"].value    # quote a value with spaces or brackets
        attributes.properties["Order Qty"] # a key with spaces, dots or brackets, in double or single quotes
        ["Order Qty"]                      # a quoted key may also start a path

    A plain name is one or more characters other than ``. [ ] " '`` and white space (unicode letters, digits,
    ``_ - $ @ :`` ... are fine). Inside quotes ``\\`` escapes the next character. Positions are **0-based**,
    like JSONPath, jq and Python (the first address is ``addresses[0]``).

Evaluation
    * a key that is absent or null gives None, and so does every later step on that None (``a.b.c`` with a
      null ``a`` is None, not an error);
    * a list position the record does not have raises ``ListPositionMissing(path, index, length)``, also when
      the list itself is absent or null (length 0);
    * a step that does not fit the shape (a key on a list or on text, a position on a dict or on text) raises
      ``TypeMismatch`` (a ``MappingEvaluationError``);
    * a selection ``[field=value]`` gives the first entry (an object) whose ``field`` equals ``value`` (text
      compared exactly, else ignoring letter case); when no entry has it, or the list is absent or null, the
      value is None (a custom field that isn't set is not an error); unlike a position it can't return another
      entry when the list's order changes;
    * after a wildcard the path yields a list: steps apply to every entry; entries whose value is null, or
      that lack a later list position, are left out; nested wildcards flatten; a wildcard over an absent or
      null list gives None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ListPositionMissing, PathSyntaxError, TypeMismatch

__all__ = ["Index", "Key", "Path", "Segment", "Select", "Wildcard", "evaluate", "parse_path"]


@dataclass(frozen=True, slots=True)
class Key:
    """A dict key step."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Index:
    """A list position step (0-based; negative counts from the end)."""

    position: int

    def __str__(self) -> str:
        return f"[{self.position}]"


@dataclass(frozen=True, slots=True)
class Wildcard:
    """Every entry of a list."""

    def __str__(self) -> str:
        return "[*]"


@dataclass(frozen=True, slots=True)
class Select:
    """The first entry of a list whose ``field`` equals ``value``."""

    field: str
    value: str

    def __str__(self) -> str:
        quoted = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'[{self.field}="{quoted}"]'

    def pick(self, entries: Sequence[Any]) -> Any:
        texts = [(entry, entry.get(self.field)) for entry in entries if isinstance(entry, Mapping)]
        for entry, value in texts:
            if value is not None and str(value) == self.value:
                return entry
        folded = self.value.casefold()
        for entry, value in texts:
            if value is not None and str(value).casefold() == folded:
                return entry
        return None


Segment = Key | Index | Wildcard | Select

_SPECIAL = frozenset(".[]\"'")


def _plain_char(char: str) -> bool:
    return char not in _SPECIAL and not char.isspace()


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path: the text as written and its steps."""

    text: str
    segments: tuple[Segment, ...]
    names: tuple[str, ...] | None = field(init=False, repr=False, compare=False)
    """The key names of a path made of keys only (most paths), which ``evaluate`` reads in a tight loop."""

    def __post_init__(self) -> None:
        keys_only = all(type(segment) is Key for segment in self.segments)
        names = tuple(segment.name for segment in self.segments if type(segment) is Key) if keys_only else None
        object.__setattr__(self, "names", names)

    @property
    def has_wildcard(self) -> bool:
        return any(isinstance(segment, Wildcard) for segment in self.segments)

    @property
    def is_key_path(self) -> bool:
        """True when every step is a key (the form target names take)."""
        return all(isinstance(segment, Key) for segment in self.segments)

    def keys(self) -> tuple[str, ...]:
        """The key names of a key-only path (target names)."""
        return tuple(segment.name for segment in self.segments if isinstance(segment, Key))

    def __str__(self) -> str:
        return self.text


def parse_path(text: str) -> Path:
    """Parse ``text``; raises ``PathSyntaxError`` naming the column and the problem."""
    if not isinstance(text, str):
        raise PathSyntaxError(repr(text), 1, "a path must be text")
    if text == "":
        raise PathSyntaxError(text, 1, "the path is empty")
    segments: list[Segment] = []
    i = 0
    n = len(text)
    expect_name = True  # at the start, or just after a dot
    while i < n:
        char = text[i]
        if char == "[":
            if expect_name and segments:
                raise PathSyntaxError(text, i + 1, "a name must follow the dot")
            segment, i = _parse_bracket(text, i)
            segments.append(segment)
            expect_name = False
        elif char == ".":
            if expect_name:
                raise PathSyntaxError(text, i + 1, "empty name (two dots, or a leading dot)")
            expect_name = True
            i += 1
        elif _plain_char(char):
            if not expect_name:
                raise PathSyntaxError(text, i + 1, "a dot or a bracket must separate names")
            start = i
            while i < n and _plain_char(text[i]):
                i += 1
            segments.append(Key(text[start:i]))
            expect_name = False
        elif char.isspace():
            raise PathSyntaxError(text, i + 1, 'white space outside quotes (quote such keys: ["a b"])')
        elif char == "]":
            raise PathSyntaxError(text, i + 1, "unmatched ']'")
        else:
            raise PathSyntaxError(text, i + 1, f'unexpected {char!r} (quote keys inside brackets: ["a b"])')
    if expect_name:
        raise PathSyntaxError(text, n, "the path ends with a dot")
    return Path(text, tuple(segments))


def _parse_bracket(text: str, start: int) -> tuple[Segment, int]:
    """Parse ``[...]`` at ``start``; returns the segment and the index after ``]``."""
    i = start + 1
    n = len(text)
    if i >= n:
        raise PathSyntaxError(text, start + 1, "unclosed '['")
    if text[i] in "\"'":
        key, i = _read_quoted(text, start, i)
        if i >= n or text[i] != "]":
            raise PathSyntaxError(text, i + 1, "expected ']' after the quoted key")
        if not key:
            raise PathSyntaxError(text, start + 1, "empty quoted key")
        return Key(key), i + 1
    close = text.find("]", i)
    if close < 0:
        raise PathSyntaxError(text, start + 1, "unclosed '['")
    equals = text.find("=", i)
    if 0 <= equals < close:
        return _parse_select(text, start, i, equals)
    inner = text[i:close]
    if inner == "*":
        return Wildcard(), close + 1
    digits = inner[1:] if inner.startswith("-") else inner
    if not digits or not digits.isascii() or not digits.isdigit():
        raise PathSyntaxError(
            text, start + 1, 'a bracket holds a position such as [0], a wildcard [*] or a quoted key ["a b"]'
        )
    return Index(int(inner)), close + 1


def _read_quoted(text: str, start: int, i: int) -> tuple[str, int]:
    """The quoted string opening at ``i`` (backslash escapes anything) and the index after its closing quote;
    ``start`` is the bracket, for the error of an unclosed quote."""
    quote, n = text[i], len(text)
    i += 1
    chars: list[str] = []
    while True:
        if i >= n:
            raise PathSyntaxError(text, start + 1, "unclosed quote")
        char = text[i]
        if char == "\\":
            if i + 1 >= n:
                raise PathSyntaxError(text, i + 1, "a backslash ends the path")
            chars.append(text[i + 1])
            i += 2
            continue
        if char == quote:
            return "".join(chars), i + 1
        chars.append(char)
        i += 1


def _plain_name(name: str) -> bool:
    return bool(name) and all(_plain_char(char) for char in name)


def _parse_select(text: str, start: int, i: int, equals: int) -> tuple[Segment, int]:
    """``[field=value]`` or ``[field="quoted value"]`` starting at ``start``; ``equals`` is the ``=``."""
    field = text[i:equals]
    if not _plain_name(field):
        raise PathSyntaxError(text, i + 1, "a selection names a field before '=': [name=SubscribeProfile]")
    j = equals + 1
    n = len(text)
    if j < n and text[j] in "\"'":
        value, j = _read_quoted(text, start, j)
        if j >= n or text[j] != "]":
            raise PathSyntaxError(text, j + 1, "expected ']' after the quoted value")
        return Select(field, value), j + 1
    close = text.find("]", j)
    if close < 0:
        raise PathSyntaxError(text, start + 1, "unclosed '['")
    value = text[j:close]
    if not value or not all(_plain_char(char) for char in value):
        raise PathSyntaxError(text, j + 1, 'the value to select by is missing or needs quotes: [name="a b"]')
    return Select(field, value), close + 1


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Sequence):
        return "a list"
    return "a value"


_SCALARS = frozenset({str, int, float, bool, type(None), dict})
"""Types that are surely not lists, told apart without an abstract-class check (records are JSON-like)."""


def is_list(value: Any) -> bool:
    """A list-like value (a ``Sequence`` other than text or bytes)."""
    kind = type(value)
    if kind is list:
        return True
    if kind in _SCALARS:
        return False
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)



def _key_step(path: Path, current: Any, segment: Key) -> Any:
    return _read_key(path, current, segment.name)


def _read_key(path: Path, current: Any, name: str) -> Any:
    if current is None:
        return None
    if type(current) is dict or isinstance(current, Mapping):
        return current.get(name)
    raise TypeMismatch(f"cannot read key {name!r}: the value there is {_kind(current)}", path=path.text)


def _index_step(path: Path, current: Any, segment: Index, *, lenient: bool) -> tuple[bool, Any]:
    """Returns (found, value)."""
    if current is None:
        if lenient:
            return False, None
        raise ListPositionMissing(path.text, segment.position, 0)
    if not is_list(current):
        raise TypeMismatch(
            f"cannot read position {segment.position}: the value there is {_kind(current)}, not a list",
            path=path.text,
        )
    length = len(current)
    if -length <= segment.position < length:
        return True, current[segment.position]
    if lenient:
        return False, None
    raise ListPositionMissing(path.text, segment.position, length)


def _select_step(path: Path, current: Any, segment: Select) -> Any:
    if current is None:
        return None
    if not is_list(current):
        raise TypeMismatch(f"cannot select {segment}: the value there is {_kind(current)}, not a list", path=path.text)
    return segment.pick(current)


def evaluate(path: Path, source: Any) -> Any:
    """Read ``path`` from ``source`` (see the module docstring for the rules)."""
    current: Any = source
    names = path.names
    if names is not None:
        for name in names:
            if type(current) is dict:
                current = current.get(name)
            elif current is None:
                return None
            else:
                current = _read_key(path, current, name)
        return current
    segments = path.segments
    for position, segment in enumerate(segments):
        if isinstance(segment, Key):
            current = _key_step(path, current, segment)
        elif isinstance(segment, Index):
            _, current = _index_step(path, current, segment, lenient=False)
        elif isinstance(segment, Select):
            current = _select_step(path, current, segment)
        else:
            if current is None:
                return None
            return _evaluate_many(path, [current], segments[position:])
    return current


def _evaluate_many(path: Path, matches: list[Any], segments: tuple[Segment, ...]) -> list[Any]:
    for segment in segments:
        following: list[Any] = []
        if isinstance(segment, Key):
            for match in matches:
                value = _key_step(path, match, segment)
                if value is not None:
                    following.append(value)
        elif isinstance(segment, Index):
            for match in matches:
                found, value = _index_step(path, match, segment, lenient=True)
                if found and value is not None:
                    following.append(value)
        elif isinstance(segment, Select):
            for match in matches:
                value = _select_step(path, match, segment)
                if value is not None:
                    following.append(value)
        else:
            for match in matches:
                if match is None:
                    continue
                if not is_list(match):
                    raise TypeMismatch(
                        f"cannot read every entry ([*]): the value there is {_kind(match)}, not a list",
                        path=path.text,
                    )
                following.extend(entry for entry in match if entry is not None)
        matches = following
    return matches
