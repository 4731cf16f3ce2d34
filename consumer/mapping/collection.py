"""Mapping collections: the model, the loader/validator, and evaluation against one record."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from consumer.catalog import (
    ADDRESS_VALUE_COULD_NOT_BE_READ,
    ORDER_EVENT_COULD_NOT_BE_CREATED,
    PRODUCT_EVENT_COULD_NOT_BE_CREATED,
    PROFILE_COULD_NOT_BE_CREATED,
    PROFILE_COULD_NOT_BE_UPDATED,
    CatalogEntry,
    CatalogError,
    Flow,
)

from . import schema
from ._document import Document, Location, read_document
from .errors import (
    InvalidValue,
    ListPositionMissing,
    MappingEvaluationError,
    MappingFileError,
    PathSyntaxError,
    RequiredValueMissing,
)
from .paths import Path as SourcePath
from .paths import evaluate, parse_path
from .transforms import Transform, TransformConfigError, build_transform, is_empty

__all__ = [
    "FLOW_KINDS",
    "SOURCE_KINDS",
    "TARGET_KINDS",
    "FieldMapping",
    "MappingCollection",
    "catalog_entry_for",
    "catalog_error",
    "default_collections",
    "load_collection",
    "load_collections",
    "parse_collection",
]

SOURCE_KINDS = ("customer", "transaction", "transaction_line", "klaviyo_profile")
TARGET_KINDS = ("klaviyo_profile", "klaviyo_event", "ipaas_customer", "ipaas_customer_address")

FLOW_KINDS: dict[Flow, tuple[str, str]] = {
    Flow.ADD_PROFILE_FROM_IPAAS: ("customer", "klaviyo_profile"),
    Flow.UPDATE_PROFILE_FROM_IPAAS: ("customer", "klaviyo_profile"),
    Flow.PLACED_ORDER_FROM_IPAAS: ("transaction", "klaviyo_event"),
    Flow.ORDERED_PRODUCT_FROM_IPAAS: ("transaction_line", "klaviyo_event"),
    Flow.ADD_PROFILE_TO_IPAAS: ("klaviyo_profile", "ipaas_customer"),
    Flow.UPDATE_PROFILE_TO_IPAAS: ("klaviyo_profile", "ipaas_customer"),
    Flow.ADD_PROFILE_ADDRESS_TO_IPAAS: ("klaviyo_profile", "ipaas_customer_address"),
    Flow.UPDATE_PROFILE_ADDRESS_TO_IPAAS: ("klaviyo_profile", "ipaas_customer_address"),
}
"""Every flow that has a mapping collection, with its (source, target) kinds."""

_FLOWS_BY_SLUG = {flow.slug: flow for flow in FLOW_KINDS}

_SOURCE_NAMES = {
    "customer": "a customer",
    "transaction": "a transaction",
    "transaction_line": "a transaction line",
    "klaviyo_profile": "a Klaviyo profile",
}
_TARGET_NAMES = {
    "klaviyo_profile": "a Klaviyo profile",
    "klaviyo_event": "a Klaviyo event",
    "ipaas_customer": "an iPaaS.com customer",
    "ipaas_customer_address": "an iPaaS.com customer address",
}

_CATALOG: dict[Flow, CatalogEntry] = {
    Flow.ADD_PROFILE_FROM_IPAAS: PROFILE_COULD_NOT_BE_CREATED,
    Flow.UPDATE_PROFILE_FROM_IPAAS: PROFILE_COULD_NOT_BE_UPDATED,
    Flow.PLACED_ORDER_FROM_IPAAS: ORDER_EVENT_COULD_NOT_BE_CREATED,
    Flow.ORDERED_PRODUCT_FROM_IPAAS: PRODUCT_EVENT_COULD_NOT_BE_CREATED,
    Flow.ADD_PROFILE_TO_IPAAS: ADDRESS_VALUE_COULD_NOT_BE_READ,
    Flow.UPDATE_PROFILE_TO_IPAAS: ADDRESS_VALUE_COULD_NOT_BE_READ,
    Flow.ADD_PROFILE_ADDRESS_TO_IPAAS: ADDRESS_VALUE_COULD_NOT_BE_READ,
    Flow.UPDATE_PROFILE_ADDRESS_TO_IPAAS: ADDRESS_VALUE_COULD_NOT_BE_READ,
}

_TOP_KEYS = {"flow", "source", "target", "fields", "keep_null", "description", "extra_fields"}
_FIELD_KEYS = {"path", "paths", "value", "transforms", "required", "keep_null", "on_missing_position", "description"}
_SUFFIXES = (".yaml", ".yml", ".json")

MissingPosition = Literal["error", "null"]


def catalog_entry_for(flow: Flow) -> CatalogEntry:
    """The catalog entry that reports a mapping failure of ``flow``.

    FROM-iPaaS.com flows use their "... could not be created/updated because a required mapping field is
    missing or incomplete" entry; TO-iPaaS.com flows read the Klaviyo profile and use "Address Value Could Not
    Be Read" (the catalog's entry for a mapped value that could not be read from the profile).
    """
    try:
        return _CATALOG[flow]
    except KeyError:
        raise ValueError(f"flow {flow.slug!r} has no mapping collection") from None


def catalog_error(flow: Flow, error: MappingEvaluationError) -> CatalogError:
    """Wrap an evaluation failure of ``flow`` in the catalog error that reports it (not retryable).

    ``detail`` holds the evaluation error's text: the field, the path and the reason, never a data value.
    """
    return CatalogError(catalog_entry_for(flow), str(error), flow=flow, retryable=False)


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One target field: where its value comes from (a path, several paths, or a constant) and how it is shaped."""

    target: str
    target_keys: tuple[str, ...]
    path: SourcePath | None = None
    paths: tuple[SourcePath, ...] = ()
    value: Any = None
    transforms: tuple[Transform, ...] = ()
    required: bool = False
    keep_null: bool = False
    on_missing_position: MissingPosition = "error"
    line: int | None = None
    _read: Callable[[Mapping[str, Any]], Any] = field(init=False, repr=False, compare=False)
    """The source value's reader, built once from ``path``, ``paths`` or ``value`` (see ``_reader``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_read", _reader(self))

    @property
    def is_constant(self) -> bool:
        return self.path is None and not self.paths

    @property
    def source_text(self) -> str | None:
        """The source path(s) as written, for messages; None for a constant."""
        if self.path is not None:
            return self.path.text
        if self.paths:
            return ", ".join(path.text for path in self.paths)
        return None

    def evaluate(self, source: Mapping[str, Any]) -> Any:
        """The field's value for ``source``; raises a ``MappingEvaluationError`` naming this field."""
        try:
            value = self._read(source)
            try:
                for transform in self.transforms:
                    try:
                        value = transform.apply(value, source)
                    except (ValueError, TypeError, ArithmeticError):
                        # a conversion the transform did not foresee: still a reported failure, not a crash
                        raise InvalidValue(f"{transform.name} could not convert the value") from None
            except ListPositionMissing:
                if self.on_missing_position == "error":
                    raise
                value = None
        except MappingEvaluationError as error:
            raise error.locate(self.target, self.source_text) from None
        if self.required and is_empty(value):
            raise RequiredValueMissing(self.target, path=self.source_text)
        return value


_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _copy(value: Any) -> Any:
    """A copy the target may own (the source's lists and dicts are never shared with it); cheap for plain values."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is list and all(type(item) in _IMMUTABLE for item in value):
        return list(value)
    if isinstance(value, dict | list):
        return copy.deepcopy(value)
    return value


def _reader(mapping: FieldMapping) -> Callable[[Mapping[str, Any]], Any]:
    """How ``mapping`` reads its value: one path, several (a list without their nulls), or a constant (a copy)."""
    lenient = mapping.on_missing_position == "null"
    if mapping.path is not None:
        return _path_reader(mapping.path, lenient)
    if mapping.paths:
        readers = tuple(_path_reader(path, lenient) for path in mapping.paths)

        def read_all(source: Mapping[str, Any]) -> Any:
            values = [read(source) for read in readers]
            return [value for value in values if value is not None]

        return read_all
    constant = mapping.value
    if type(constant) in _IMMUTABLE:
        return lambda source: constant
    return lambda source: copy.deepcopy(constant)


def _path_reader(path: SourcePath, lenient: bool) -> Callable[[Mapping[str, Any]], Any]:
    """A reader of one path; a missing list position gives None when ``lenient``."""
    names = path.names
    if names is not None and len(names) == 1:  # the commonest path: one field of the source
        name = names[0]

        def read_field(source: Mapping[str, Any]) -> Any:
            value = source.get(name) if type(source) is dict else evaluate(path, source)
            return value if type(value) in _IMMUTABLE else _copy(value)

        return read_field

    def read_path(source: Mapping[str, Any]) -> Any:
        try:
            value = evaluate(path, source)
        except ListPositionMissing:
            if not lenient:
                raise
            return None
        return value if type(value) in _IMMUTABLE else _copy(value)

    return read_path


@dataclass(frozen=True, slots=True)
class MappingCollection:
    """The field mappings of one flow, from a shipped default or a user file (``origin``)."""

    flow: Flow
    source: str
    target: str
    fields: tuple[FieldMapping, ...]
    origin: str
    description: str | None = None

    @property
    def slug(self) -> str:
        return self.flow.slug

    def field(self, target: str) -> FieldMapping | None:
        """The mapping of ``target`` (as written in the file), or None."""
        for mapping in self.fields:
            if mapping.target == target:
                return mapping
        return None

    def apply(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """Build the target from ``source``: dotted targets become nested dicts; null values are left out
        unless the field says ``keep_null: true``. Raises a ``MappingEvaluationError`` on the first failure."""
        result: dict[str, Any] = {}
        # the nested objects made so far, by their keys (targets never overlap: the parser refuses it)
        nodes: dict[tuple[str, ...], dict[str, Any]] = {(): result}
        for mapping in self.fields:
            value = mapping.evaluate(source)
            if value is None and not mapping.keep_null:
                continue
            keys = mapping.target_keys
            parents = keys[:-1]
            node = nodes.get(parents)
            if node is None:
                node = result
                for key in parents:
                    child = node.get(key)
                    if not isinstance(child, dict):
                        child = node[key] = {}
                    node = child
                nodes[parents] = node
            node[keys[-1]] = value
        return result

    def build(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """Like ``apply``, but a failure is raised as the flow's ``CatalogError`` (see ``catalog_error``)."""
        try:
            return self.apply(source)
        except MappingEvaluationError as error:
            raise catalog_error(self.flow, error) from error


# --- loading ---------------------------------------------------------------------------------------------


def parse_collection(
    text: str, name: str | Path = "<text>", *, json_format: bool = False, expected_flow: Flow | None = None
) -> MappingCollection:
    """Parse and validate a collection from YAML (or JSON) text; raises ``MappingFileError``."""
    document = read_document(text, name, json_format=json_format)
    return _Parser(document).collection(expected_flow)


def load_collection(path: Path, *, expected_flow: Flow | None = None) -> MappingCollection:
    """Load and validate one collection file (``.yaml``, ``.yml`` or ``.json``); raises ``MappingFileError``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise MappingFileError(path, None, "a mapping collection file ends in .yaml, .yml or .json")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MappingFileError(path, None, f"cannot be read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise MappingFileError(path, line, "not UTF-8 text") from None
    return parse_collection(text, path, json_format=suffix == ".json", expected_flow=expected_flow)


def default_collections() -> dict[str, MappingCollection]:
    """The shipped default collections, keyed by flow slug."""
    folder = resources.files(__package__).joinpath("defaults")
    collections: dict[str, MappingCollection] = {}
    for flow in FLOW_KINDS:
        resource = folder.joinpath(f"{flow.slug}.yaml")
        text = resource.read_text(encoding="utf-8")
        collections[flow.slug] = parse_collection(text, f"defaults/{flow.slug}.yaml", expected_flow=flow)
    return collections


def load_collections(directory: Path | None = None) -> dict[str, MappingCollection]:
    """Every flow's collection keyed by flow slug: the shipped defaults, each replaced by the user file
    ``<directory>/<flow_slug>.yaml|yml|json`` when there is one.

    Raises ``MappingFileError`` for a missing directory, a collection file whose name is not a flow slug, two
    files for one flow, or any invalid file; other files in the directory are ignored.
    """
    collections = default_collections()
    if directory is None:
        return collections
    directory = Path(directory)
    if not directory.is_dir():
        raise MappingFileError(directory, None, "the mapping directory does not exist")
    found: dict[Flow, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in _SUFFIXES or not path.is_file():
            continue
        flow = _FLOWS_BY_SLUG.get(path.stem)
        if flow is None:
            raise MappingFileError(
                path, None, f"the file name must be a flow slug ({', '.join(_FLOWS_BY_SLUG)}) plus .yaml/.yml/.json"
            )
        if flow in found:
            raise MappingFileError(path, None, f"{found[flow].name} already maps flow {flow.slug!r}")
        found[flow] = path
    for flow, path in found.items():
        collections[flow.slug] = load_collection(path, expected_flow=flow)
    return collections


class _Parser:
    """Validates a ``Document`` into a ``MappingCollection``; every refusal names the line."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.source_shape: dict[str, schema.Shape] = {}
        self.source_name = ""

    def fail(self, location: Location, reason: str) -> MappingFileError:
        return self.document.error(location, reason)

    def collection(self, expected_flow: Flow | None) -> MappingCollection:
        data = self.document.data
        if data is None:
            raise self.fail((), "the file is empty")
        if not isinstance(data, dict):
            raise self.fail((), "a mapping collection is a mapping with flow, source, target and fields")
        for key in data:
            if key not in _TOP_KEYS:
                raise self.fail((key,), f"unknown key {key!r} (known: {', '.join(sorted(_TOP_KEYS))})")
        flow = self._flow(data, expected_flow)
        source, target = FLOW_KINDS[flow]
        for key, expected, known in (("source", source, SOURCE_KINDS), ("target", target, TARGET_KINDS)):
            if key in data:
                given = data[key]
                if given not in known:
                    raise self.fail((key,), f"unknown {key} {given!r} (known: {', '.join(known)})")
                if given != expected:
                    raise self.fail((key,), f"flow {flow.slug!r} maps {key} {expected!r}, not {given!r}")
        self.source_shape = {**schema.SOURCES[source], **self._extra_fields(data.get("extra_fields", []))}
        self.source_name = _SOURCE_NAMES[source]
        keep_null = self._bool(data, ("keep_null",), False)
        description = data.get("description")
        if description is not None and not isinstance(description, str):
            raise self.fail(("description",), "description must be text")
        fields_data = data.get("fields")
        if not isinstance(fields_data, dict) or not fields_data:
            raise self.fail(("fields",), "fields must be a mapping of target field to its source")
        fields = tuple(self._field(name, spec, target, keep_null) for name, spec in fields_data.items())
        self._check_overlaps(fields)
        return MappingCollection(flow, source, target, fields, self.document.name, description)

    def _flow(self, data: dict[str, Any], expected: Flow | None) -> Flow:
        slug = data.get("flow")
        if slug is None:
            raise self.fail((), "the flow is missing (flow: <flow slug>)")
        flow = _FLOWS_BY_SLUG.get(slug) if isinstance(slug, str) else None
        if flow is None:
            raise self.fail(("flow",), f"unknown flow {slug!r} (known: {', '.join(_FLOWS_BY_SLUG)})")
        if expected is not None and flow is not expected:
            raise self.fail(("flow",), f"the file is for flow {expected.slug!r} but says {flow.slug!r}")
        return flow

    def _extra_fields(self, names: Any) -> dict[str, schema.Shape]:
        """Top-level source fields beyond the known shape (records keep extra fields), free below."""
        if not isinstance(names, list):
            raise self.fail(("extra_fields",), "extra_fields must be a list of source field names")
        extra: dict[str, schema.Shape] = {}
        for index, name in enumerate(names):
            try:
                parsed = parse_path(name) if isinstance(name, str) else None
            except PathSyntaxError:
                parsed = None
            if parsed is None or len(parsed.segments) != 1 or not parsed.is_key_path:
                raise self.fail(("extra_fields", index), "an extra field is one plain field name")
            extra[parsed.keys()[0]] = schema.OPEN
        return extra

    def _bool(self, data: Mapping[str, Any], location: Location, default: bool) -> bool:
        value = data.get(str(location[-1]), default)
        if not isinstance(value, bool):
            raise self.fail(location, f"{location[-1]} must be true or false")
        return value

    def _path(self, text: Any, location: Location) -> SourcePath:
        if not isinstance(text, str):
            raise self.fail(location, "a path must be text")
        try:
            path = parse_path(text)
        except PathSyntaxError as error:
            raise self.fail(location, f"bad path {text!r}: {error.reason} (column {error.column})") from None
        refusal = schema.check_path(path, self.source_shape, self.source_name)
        if refusal is not None:
            raise self.fail(location, f"path {text!r}: {refusal}")
        return path

    def _field(self, name: str, spec: Any, target: str, keep_null: bool) -> FieldMapping:
        location: Location = ("fields", name)
        target_keys = self._target(name, location, target)
        if isinstance(spec, str):
            spec = {"path": spec}
            short = True
        else:
            short = False
        if not isinstance(spec, dict):
            raise self.fail(location, "a field is a path, or a mapping with path, paths or value")
        for key in spec:
            if key not in _FIELD_KEYS:
                raise self.fail((*location, key), f"unknown key {key!r} (known: {', '.join(sorted(_FIELD_KEYS))})")
        given = [key for key in ("path", "paths", "value") if key in spec]
        if len(given) != 1:
            raise self.fail(location, f"field {name!r} needs exactly one of path, paths or value")
        path: SourcePath | None = None
        paths: tuple[SourcePath, ...] = ()
        if "path" in spec:
            path = self._path(spec["path"], location if short else (*location, "path"))
        elif "paths" in spec:
            listed = spec["paths"]
            if not isinstance(listed, list) or not listed:
                raise self.fail((*location, "paths"), "paths must be a non-empty list of paths")
            paths = tuple(self._path(text, (*location, "paths", index)) for index, text in enumerate(listed))
        transforms = self._transforms(spec.get("transforms", []), (*location, "transforms"))
        on_missing = spec.get("on_missing_position", "error")
        if on_missing is None:  # YAML reads an unquoted null as None
            on_missing = "null"
        if on_missing not in ("error", "null"):
            raise self.fail((*location, "on_missing_position"), "on_missing_position must be 'error' or 'null'")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise self.fail((*location, "description"), "description must be text")
        return FieldMapping(
            target=name,
            target_keys=target_keys,
            path=path,
            paths=paths,
            value=spec.get("value"),
            transforms=transforms,
            required=self._bool(spec, (*location, "required"), False),
            keep_null=self._bool(spec, (*location, "keep_null"), keep_null),
            on_missing_position=on_missing,
            line=self.document.line(location),
        )

    def _target(self, name: str, location: Location, target: str) -> tuple[str, ...]:
        try:
            parsed = parse_path(name)
        except PathSyntaxError as error:
            raise self.fail(location, f"bad target {name!r}: {error.reason} (column {error.column})") from None
        if not parsed.is_key_path:
            raise self.fail(location, f"target {name!r}: a target is made of names only (no [0] or [*])")
        refusal = schema.check_path(parsed, schema.TARGETS[target], _TARGET_NAMES[target])
        if refusal is not None:
            raise self.fail(location, f"target {name!r}: {refusal}")
        return parsed.keys()

    def _transforms(self, declared: Any, location: Location) -> tuple[Transform, ...]:
        if isinstance(declared, str | dict):
            declared = [declared]
        if not isinstance(declared, list):
            raise self.fail(location, "transforms must be a list")
        built: list[Transform] = []
        for index, declaration in enumerate(declared):
            where: Location = (*location, index)
            try:
                transform = build_transform(declaration)
            except TransformConfigError as error:
                name = next(iter(declaration)) if isinstance(declaration, dict) and declaration else None
                if error.key is not None and isinstance(name, str):
                    where = (*where, name, error.key)
                raise self.fail(where, error.reason) from None
            for path in transform.paths:
                refusal = schema.check_path(path, self.source_shape, self.source_name)
                if refusal is not None:
                    raise self.fail(where, f"path {path.text!r}: {refusal}")
            built.append(transform)
        return tuple(built)

    def _check_overlaps(self, fields: Sequence[FieldMapping]) -> None:
        taken: dict[tuple[str, ...], FieldMapping] = {}
        for mapping in fields:
            keys = mapping.target_keys
            if keys in taken:
                raise self.fail(
                    ("fields", mapping.target), f"target {mapping.target!r} is mapped twice ({taken[keys].target!r})"
                )
            taken[keys] = mapping
        for keys, mapping in taken.items():
            for end in range(1, len(keys)):
                other = taken.get(keys[:end])
                if other is not None:
                    raise self.fail(
                        ("fields", mapping.target),
                        f"target {mapping.target!r} lies inside {other.target!r}, which is mapped as a whole",
                    )
