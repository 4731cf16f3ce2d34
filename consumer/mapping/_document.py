"""Reading a collection file into plain data plus the line of every key, for error messages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import MappingFileError

Location = tuple[str | int, ...]

_MAX_DEPTH = 64
_MAX_NODES = 200_000


@dataclass
class Document:
    """Parsed file content (``data``) and the 1-based line of each key or list entry (``lines``)."""

    name: str
    text: str
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)

    def line(self, location: Location) -> int | None:
        """The line of ``location``, else of its nearest ancestor, else a best-effort text search."""
        for end in range(len(location), 0, -1):
            found = self.lines.get(location[:end])
            if found is not None:
                return found
        if self.lines:
            return None
        return self._search(location)

    def _search(self, location: Location) -> int | None:
        """Without marks (a JSON file PyYAML cannot read): the first line quoting the innermost key."""
        for part in reversed(location):
            if isinstance(part, str):
                needle = json.dumps(part)
                for number, text in enumerate(self.text.splitlines(), start=1):
                    if needle in text:
                        return number
        return None

    def error(self, location: Location, reason: str) -> MappingFileError:
        return MappingFileError(self.name, self.line(location), reason)


def read_document(text: str, name: str | Path, *, json_format: bool = False) -> Document:
    """Parse YAML (or JSON when ``json_format``) text; raises ``MappingFileError`` with the line on failure."""
    label = str(name)
    if json_format:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise MappingFileError(label, error.lineno, f"not valid JSON: {error.msg}") from None
        document = Document(label, text, data)
        try:
            _, document.lines = _compose(text, label)
        except yaml.YAMLError:
            document.lines = {}
        return document
    try:
        data, lines = _compose(text, label)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = error.problem or error.context or "not valid YAML"
        raise MappingFileError(label, line, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise MappingFileError(label, None, f"not valid YAML: {error}") from None
    return Document(label, text, data, lines)


def _compose(text: str, label: str) -> tuple[Any, dict[Location, int]]:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[Location, int] = {}
    if node is None:
        return None, lines
    walker = _Walker(label, lines)
    return walker.walk(node, ()), lines


class _Walker:
    def __init__(self, label: str, lines: dict[Location, int]) -> None:
        self.label = label
        self.lines = lines
        self.constructor = yaml.constructor.SafeConstructor()
        self.nodes = 0

    def walk(self, node: Node, location: Location) -> Any:
        self.nodes += 1
        line = node.start_mark.line + 1
        if len(location) > _MAX_DEPTH or self.nodes > _MAX_NODES:
            raise MappingFileError(self.label, line, "the document is nested too deeply or is too large")
        if isinstance(node, MappingNode):
            self.constructor.flatten_mapping(node)  # resolves "<<" merge keys
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                key = self.constructor.construct_object(key_node) if isinstance(key_node, ScalarNode) else None
                if not isinstance(key, str):
                    raise MappingFileError(self.label, key_line, "keys must be text (quote the key)")
                if key in result:
                    raise MappingFileError(self.label, key_line, f"duplicate key {key!r}")
                self.lines[(*location, key)] = key_line
                result[key] = self.walk(value_node, (*location, key))
            return result
        if isinstance(node, SequenceNode):
            items: list[Any] = []
            for index, item in enumerate(node.value):
                self.lines[(*location, index)] = item.start_mark.line + 1
                items.append(self.walk(item, (*location, index)))
            return items
        value = self.constructor.construct_object(node, deep=True)
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, bytes):
            raise MappingFileError(self.label, line, "binary values are not supported")
        return value
