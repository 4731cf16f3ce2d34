"""Klaviyo's ``filter`` query language: ``equals(email,"a@b.com")``, ``any(id,["a","b"])``,
``greater-than(updated,2024-01-01T00:00:00Z)``, combined with ``and(...)``/``or(...)``/``not(...)`` or commas.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class FilterError(ValueError):
    """The filter is malformed or uses a field/operator the resource doesn't allow."""


@dataclass(frozen=True, slots=True)
class Condition:
    op: str
    field: str
    value: Any


@dataclass(frozen=True, slots=True)
class Group:
    op: str  # and / or / not
    items: tuple[Node, ...]


Node = Condition | Group
_GROUPS = frozenset({"and", "or", "not"})
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": lambda a, b: a == b,
    "any": lambda a, b: a in b,
    "greater-than": lambda a, b: a is not None and a > b,
    "less-than": lambda a, b: a is not None and a < b,
    "greater-or-equal": lambda a, b: a is not None and a >= b,
    "less-or-equal": lambda a, b: a is not None and a <= b,
    "contains": lambda a, b: a is not None and b in a,
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> FilterError:
        return FilterError(f"Invalid filter provided at position {self.pos}: {message}.")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def expect(self, char: str) -> None:
        self.skip()
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.pos += 1

    def bare(self) -> str:
        self.skip()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",()[]\"'":
            self.pos += 1
        return self.text[start : self.pos].strip()

    def parse(self) -> list[Node]:
        nodes = [self.node()]
        self.skip()
        while self.peek() == ",":
            self.pos += 1
            nodes.append(self.node())
            self.skip()
        if self.pos != len(self.text):
            raise self.error("unexpected trailing text")
        return nodes

    def node(self) -> Node:
        name = self.bare()
        if not name:
            raise self.error("expected an operator")
        self.expect("(")
        if name in _GROUPS:
            items = [self.node()]
            self.skip()
            while self.peek() == ",":
                self.pos += 1
                items.append(self.node())
                self.skip()
            self.expect(")")
            if name == "not" and len(items) != 1:
                raise self.error("not() takes one expression")
            return Group(name, tuple(items))
        if name not in _COMPARISONS:
            raise FilterError(f"'{name}' is not a valid filter operator.")
        field = self.bare()
        if not field:
            raise self.error("expected a field name")
        self.expect(",")
        value = self.value()
        self.expect(")")
        return Condition(name, field, value)

    def value(self) -> Any:
        self.skip()
        char = self.peek()
        if char == "[":
            self.pos += 1
            items: list[Any] = []
            self.skip()
            if self.peek() == "]":
                self.pos += 1
                return items
            while True:
                items.append(self.value())
                self.skip()
                if self.peek() == ",":
                    self.pos += 1
                    continue
                self.expect("]")
                return items
        if char in "\"'":
            return self.quoted(char)
        token = self.bare()
        if token in ("true", "false"):
            return token == "true"
        if token == "null":
            return None
        return _Bare(token)

    def quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                raw = self.text[start : self.pos]
                if quote == '"':
                    try:
                        return str(json.loads(raw))
                    except json.JSONDecodeError as exc:
                        raise self.error("bad string") from exc
                return raw[1:-1].replace("\\'", "'").replace("\\\\", "\\")
            self.pos += 1
        raise self.error("unterminated string")


class _Bare(str):
    """An unquoted value (datetime, number): typed later by the field it is compared with."""


def parse_filter(text: str) -> list[Node]:
    """The top-level expressions of a filter (implicitly and-ed)."""
    return _Parser(text).parse()


def parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value).replace("z", "Z"))
    except ValueError as exc:
        raise FilterError(f"'{value}' is not a valid datetime.") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _typed(value: Any, kind: str) -> Any:
    if isinstance(value, list):
        return [_typed(v, kind) for v in value]
    if kind == "datetime":
        return parse_datetime(value)
    if kind == "number":
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise FilterError(f"'{value}' is not a number.") from exc
    return str(value) if isinstance(value, _Bare) else value


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Which operators a field allows and how its values are typed (string, datetime, number)."""

    operators: frozenset[str]
    kind: str = "string"


def compile_filter(
    text: str, rules: Mapping[str, FieldRule], resource: str
) -> Callable[[Callable[[str], Any]], bool]:
    """A predicate over a record accessor (``field -> value``); raises ``FilterError`` for bad filters."""
    nodes = parse_filter(text)

    def build(node: Node) -> Callable[[Callable[[str], Any]], bool]:
        if isinstance(node, Group):
            parts = [build(item) for item in node.items]
            if node.op == "and":
                return lambda get: all(p(get) for p in parts)
            if node.op == "or":
                return lambda get: any(p(get) for p in parts)
            return lambda get: not parts[0](get)
        rule = rules.get(node.field)
        if rule is None:
            raise FilterError(f"'{node.field}' is not a valid field for the resource '{resource}'.")
        if node.op not in rule.operators:
            raise FilterError(f"'{node.op}' is not a valid operator for the field '{node.field}'.")
        if node.op == "any" and not isinstance(node.value, list):
            raise FilterError(f"'any' requires a list of values for the field '{node.field}'.")
        value = _typed(node.value, rule.kind)
        compare = _COMPARISONS[node.op]
        field = node.field
        return lambda get: compare(get(field), value)

    predicates = [build(node) for node in nodes]
    return lambda get: all(p(get) for p in predicates)
