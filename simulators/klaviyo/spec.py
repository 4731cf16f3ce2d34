"""Klaviyo's OpenAPI spec as request/response validators for the simulator (and the contract tests).

The spec read by default is the vendored contract ``contract/openapi-klaviyo.json`` beside this module (package
data): the operations the client and the simulator use, trimmed from Klaviyo's public ``openapi-stable.json`` by
``scripts/vendor_klaviyo_spec.py``; ``$KLAVIYO_OPENAPI_SPEC`` (or an explicit path) points at another copy.
The spec is OpenAPI 3.0 (``nullable``, ``$ref`` siblings ignored); ``to_json_schema`` turns one operation's
schema into plain JSON Schema with every reference inlined, and validators are compiled once per operation.
``jsonschema`` is used when installed; otherwise a small structural validator covers the keywords the spec uses.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

SPEC_ENV = "KLAVIYO_OPENAPI_SPEC"
DEFAULT_SPEC_PATH = Path(__file__).resolve().parent / "contract" / "openapi-klaviyo.json"
_SCHEMA_REF = "#/components/schemas/"
_DROP_KEYS = frozenset({"nullable", "example", "examples", "description", "discriminator", "xml", "externalDocs",
                        "deprecated", "readOnly", "writeOnly", "title"})
_RATE = re.compile(r"^(\d+)/([sm])$")


def spec_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the spec is: ``explicit``, else ``$KLAVIYO_OPENAPI_SPEC``, else the vendored contract."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(SPEC_ENV)
    return Path(env) if env else DEFAULT_SPEC_PATH


@dataclass(frozen=True, slots=True)
class Issue:
    """The first way a document fails its schema: a JSON pointer into the document and a message."""

    pointer: str
    message: str


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str) or len(value) < 11 or value[10] not in "Tt ":
        return False
    try:
        datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return False
    return True


def _convert(node: Any, resolve: Callable[[str], Any]) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema (2020-12 subset), references inlined via ``resolve``."""
    if isinstance(node, list):
        return [_convert(item, resolve) for item in node]
    if not isinstance(node, dict):
        return node
    nullable = node.get("nullable") is True
    if "$ref" in node:
        target = resolve(node["$ref"])
        return {"anyOf": [target, {"type": "null"}]} if nullable else target
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS or key.startswith("x-"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _convert(sub, resolve) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = _convert(value, resolve)
        else:
            out[key] = value
    if nullable:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class _MiniValidator:
    """Structural fallback: type, properties, required, items, enum, any/one/allOf, bounds, date-time."""

    _TYPES: dict[str, Callable[[Any], bool]] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }

    def __init__(self, schema: dict[str, Any]) -> None:
        self._schema = schema

    def first_issue(self, instance: Any) -> Issue | None:
        return next(self._errors(self._schema, instance, ""), None)

    def _errors(self, schema: Any, value: Any, pointer: str) -> Iterator[Issue]:
        if not isinstance(schema, dict):
            return
        kind = schema.get("type")
        if kind is not None:
            kinds = kind if isinstance(kind, list) else [kind]
            if not any(self._TYPES[k](value) for k in kinds if k in self._TYPES):
                yield Issue(pointer, f"{_short(value)} is not of type {', '.join(map(repr, kinds))}")
                return
        if "enum" in schema and value not in schema["enum"]:
            yield Issue(pointer, f"{_short(value)} is not one of {schema['enum']!r}")
        if schema.get("format") == "date-time" and isinstance(value, str) and not _is_datetime(value):
            yield Issue(pointer, f"{_short(value)} is not a 'date-time'")
        for word, ok in (("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b)):
            if word in schema and isinstance(value, int | float) and not ok(value, schema[word]):
                yield Issue(pointer, f"{value!r} violates {word} {schema[word]}")
        if isinstance(value, dict):
            for name in schema.get("required", ()):
                if name not in value:
                    yield Issue(f"{pointer}/{name}", f"'{name}' is a required property")
            for name, sub in (schema.get("properties") or {}).items():
                if name in value:
                    yield from self._errors(sub, value[name], f"{pointer}/{name}")
        if isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                yield from self._errors(schema["items"], item, f"{pointer}/{index}")
        for sub in schema.get("allOf", ()):
            yield from self._errors(sub, value, pointer)
        for word in ("anyOf", "oneOf"):
            if word in schema:
                passing = [s for s in schema[word] if next(self._errors(s, value, pointer), None) is None]
                if not passing or (word == "oneOf" and len(passing) > 1):
                    yield Issue(pointer, f"{_short(value)} is not valid under {word} of the given schemas")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _JsonSchemaValidator:
    def __init__(self, schema: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator, FormatChecker

        checker = FormatChecker(formats=())
        checker.checks("date-time")(lambda value: not isinstance(value, str) or _is_datetime(value))
        self._validator = Draft202012Validator(schema, format_checker=checker)

    def first_issue(self, instance: Any) -> Issue | None:
        from jsonschema.exceptions import best_match

        error = best_match(self._validator.iter_errors(instance))
        if error is None:
            return None
        path = [str(p) for p in error.absolute_path]
        message = error.message
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = next((n for n in error.validator_value if n not in error.instance), None)
            if missing is not None:
                path.append(str(missing))
                message = f"'{missing}' is a required property"
        if len(message) > 300:
            message = message[:297] + "..."
        return Issue("/" + "/".join(path) if path else "/", message)


def _compile(schema: dict[str, Any]) -> _JsonSchemaValidator | _MiniValidator:
    try:
        return _JsonSchemaValidator(schema)
    except ImportError:  # jsonschema is a test extra; the simulator degrades to structural checks
        return _MiniValidator(schema)


class Spec:
    """One loaded spec: operation lookup, converted schemas and cached validators."""

    def __init__(self, document: dict[str, Any], source: Path | None = None) -> None:
        self.document = document
        self.source = source
        self.version: str = str(document.get("info", {}).get("version", ""))
        self._schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
        self._responses: dict[str, Any] = document.get("components", {}).get("responses", {})
        self.operations: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for path, item in document.get("paths", {}).items():
            for method, operation in item.items():
                if isinstance(operation, dict) and "operationId" in operation:
                    self.operations[operation["operationId"]] = (method.upper(), path, operation)
        self._validators: dict[tuple[str, str], _JsonSchemaValidator | _MiniValidator | None] = {}

    # --- schema conversion ---------------------------------------------------------------------------------------
    def to_json_schema(self, schema: Any) -> Any:
        """``schema`` as JSON Schema, every ``#/components/...`` reference inlined (cycles become ``{}``)."""
        stack: list[str] = []

        def resolve(ref: str) -> Any:
            if not ref.startswith(_SCHEMA_REF):
                raise ValueError(f"unsupported reference {ref}")
            name = ref[len(_SCHEMA_REF):]
            if name in stack:
                return {}
            stack.append(name)
            try:
                return _convert(self._schemas[name], resolve)
            finally:
                stack.pop()

        return _convert(schema, resolve)

    def request_schema(self, operation_id: str) -> dict[str, Any] | None:
        """The JSON Schema of an operation's request body (None when it takes none)."""
        _, _, operation = self.operations[operation_id]
        content = operation.get("requestBody", {}).get("content", {})
        for media in ("application/vnd.api+json", "application/json"):
            if media in content:
                result: dict[str, Any] = self.to_json_schema(content[media]["schema"])
                return result
        return None

    def response_schema(self, operation_id: str, status: int) -> dict[str, Any] | None:
        """The JSON Schema of an operation's response body for ``status`` (None when it has no body)."""
        _, _, operation = self.operations[operation_id]
        responses = operation.get("responses", {})
        response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
        if response is None:
            return None
        if "$ref" in response:
            response = self._responses[response["$ref"].rsplit("/", 1)[-1]]
        content = response.get("content", {})
        for media in ("application/vnd.api+json", "application/json"):
            if media in content:
                result: dict[str, Any] = self.to_json_schema(content[media]["schema"])
                return result
        return None

    def rate_limit(self, operation_id: str) -> tuple[int, int] | None:
        """``(burst per second, steady per minute)`` from ``x-klaviyo-ratelimit``."""
        limits = self.operations[operation_id][2].get("x-klaviyo-ratelimit")
        if not limits:
            return None
        values = []
        for key, unit in (("burst", "s"), ("steady", "m")):
            match = _RATE.match(str(limits.get(key, "")))
            if not match or match.group(2) != unit:
                return None
            values.append(int(match.group(1)))
        return values[0], values[1]

    def scopes(self, operation_id: str) -> tuple[str, ...]:
        return tuple(self.operations[operation_id][2].get("x-klaviyo-scopes", ()))

    # --- validation ----------------------------------------------------------------------------------------------
    def _validator(self, kind: str, key: str, build: Callable[[], dict[str, Any] | None]) -> Any:
        cache_key = (kind, key)
        if cache_key not in self._validators:
            schema = build()
            self._validators[cache_key] = _compile(schema) if schema is not None else None
        return self._validators[cache_key]

    def validate_request(self, operation_id: str, body: Any) -> Issue | None:
        """The first problem of a request body, or None when it conforms (or the operation takes no body)."""
        validator = self._validator("request", operation_id, lambda: self.request_schema(operation_id))
        return validator.first_issue(body) if validator is not None else None

    def validate_response(self, operation_id: str, status: int, body: Any) -> Issue | None:
        """The first problem of a response body against the spec, or None."""
        key = f"{operation_id}:{status}"
        validator = self._validator("response", key, lambda: self.response_schema(operation_id, status))
        return validator.first_issue(body) if validator is not None else None


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> Spec:
    with open(path, "rb") as handle:
        return Spec(orjson.loads(handle.read()), Path(path))


def load_spec(path: str | os.PathLike[str] | None = None) -> Spec | None:
    """The spec at ``spec_path(path)`` (cached while the file is unchanged), or None when it is absent."""
    resolved = spec_path(path)
    try:
        stat = resolved.stat()
    except OSError:
        return None
    return _load(str(resolved), stat.st_mtime_ns)
