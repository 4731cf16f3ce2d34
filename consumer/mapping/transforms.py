"""Field transforms: small steps applied in order to a mapped value.

Declared on a field as a list; each entry is a bare name or a one-key mapping ``{name: arguments}``::

    transforms: [trim, lower]
    transforms: [{e164: {default_country: "1"}}]
    transforms: [{number: {type: decimal, places: 2}}, {default: "0.00"}]

=========  =====================================================================================================
trim       strip white space; text that is then empty becomes null
lower      lower-case text                      upper     upper-case text
text       to text: numbers without exponent (``12``, ``12.5``), true/false as ``true``/``false``
e164       phone number to E.164 (``+15555550123``). ``default_country``: the calling code used for numbers
           written without one (``"1"``, ``"44"``; none by default: such numbers are invalid). Formatting
           (spaces, ``- ( ) . /``) and a trailing extension (``x12``, ``ext. 12``) are dropped; a leading
           ``00`` (or ``011`` with country 1) is read as the international prefix. ``on_invalid``: ``error``
           (default, an ``InvalidValue`` naming the field) or ``null`` (drop the value).
join       join a list (from ``paths:`` or a ``[*]`` path) into text; ``separator`` (default one space, the
           short form ``{join: ", "}``); null and empty entries are skipped; nothing left gives null
default    when the value is null, empty text or an empty list: a constant (``{default: "n/a"}``,
           ``{default: {value: 0}}``) or another source path (``{default: {path: id}}``)
number     to a number: ``type`` ``float`` (default), ``int`` or ``decimal`` (text, e.g. ``"12.50"``);
           ``places`` rounds half up (short form ``{number: int}``). Accepts numbers and numeric text.
date       to a date-time: reads ISO-8601, epoch seconds (milliseconds above 10^11), RFC 2822 and common
           formats (``%m/%d/%Y %I:%M:%S %p``, ``%Y-%m-%d %H:%M:%S``, ``%m/%d/%Y``, ...) plus your
           ``input_formats``; naive times are in ``timezone`` (default UTC); the result is ISO-8601 in
           ``output_timezone`` (default UTC), or ``format`` (a strftime pattern; short form ``{date: "%Y"}``)
=========  =====================================================================================================

``trim lower upper text e164 number date`` apply to every entry of a list value (entries that become null are
dropped); ``join`` and ``default`` act on the value as a whole.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidValue
from .paths import Path, evaluate, is_list, parse_path

__all__ = ["TRANSFORMS", "Transform", "TransformConfigError", "build_transform", "is_empty"]


class TransformConfigError(ValueError):
    """The declaration of a transform is wrong (unknown name, bad argument); ``key`` is the argument's name."""

    def __init__(self, reason: str, key: str | None = None) -> None:
        self.reason = reason
        self.key = key
        super().__init__(reason)


def is_empty(value: Any) -> bool:
    """Null, text that is empty or only white space, or an empty list/dict."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if type(value) in (list, dict):
        return not value
    if isinstance(value, Sequence | Mapping) and not isinstance(value, bytes | bytearray):
        return len(value) == 0
    return False


class Transform:
    """One transform step. ``apply(value, source)``; ``paths`` are the source paths it reads itself."""

    name: str = ""
    elementwise: bool = True

    @property
    def paths(self) -> tuple[Path, ...]:
        return ()

    def apply(self, value: Any, source: Mapping[str, Any]) -> Any:
        """Transform ``value``; a list is transformed entry by entry when ``elementwise``."""
        if self.elementwise and type(value) is not str and value is not None and is_list(value):
            results = (self.one(entry, source) for entry in value)
            return [result for result in results if result is not None]
        return self.one(value, source)

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<transform {self.name}>"


def _no_arguments(name: str, arguments: Any) -> None:
    if arguments is not None and arguments != {}:
        raise TransformConfigError(f"{name} takes no arguments")


def _options(name: str, arguments: Any, allowed: set[str], short: str | None) -> dict[str, Any]:
    """Normalise ``arguments`` into a dict: None → {}, a scalar → {short: scalar} when a short form exists."""
    if arguments is None:
        return {}
    if isinstance(arguments, Mapping):
        for key in arguments:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise TransformConfigError(f"{name} has no argument {key!r} (known: {known})", str(key))
        return dict(arguments)
    if short is None:
        raise TransformConfigError(f"{name} takes a mapping of arguments")
    return {short: arguments}


class Trim(Transform):
    name = "trim"

    def apply(self, value: Any, source: Mapping[str, Any]) -> Any:
        if type(value) is str:  # the common cases, in one call
            return value.strip() or None
        if value is None:
            return None
        return super().apply(value, source)

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            stripped = value.strip()
            return stripped or None
        return value


class Lower(Transform):
    name = "lower"

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        return value.lower() if isinstance(value, str) else value


class Upper(Transform):
    name = "upper"

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        return value.upper() if isinstance(value, str) else value


_PHONE_EXTENSION = re.compile(r"\s*(?:ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.IGNORECASE)
_PHONE_ALLOWED = re.compile(r"^\+?[\d\s().\-/]+$")
_E164 = re.compile(r"^[1-9]\d{6,14}$")


class Text(Transform):
    name = "text"

    def apply(self, value: Any, source: Mapping[str, Any]) -> Any:
        if value is None or type(value) is str:  # the common cases, in one call
            return value
        return super().apply(value, source)

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float | Decimal):
            return format(_to_decimal(value), "f")
        raise InvalidValue("cannot be turned into text (a list or an object)")


class E164(Transform):
    name = "e164"

    def __init__(self, arguments: Any) -> None:
        options = _options(self.name, arguments, {"default_country", "on_invalid"}, "default_country")
        country = options.get("default_country")
        if country is not None:
            if isinstance(country, bool) or not isinstance(country, str | int):
                raise TransformConfigError('default_country must be a calling code such as "1"', "default_country")
            country = str(country).lstrip("+")
            if not (country.isascii() and country.isdigit() and 1 <= len(country) <= 3 and country[0] != "0"):
                raise TransformConfigError(
                    'default_country must be a calling code of 1 to 3 digits such as "1" or "44"',
                    "default_country",
                )
        on_invalid = options.get("on_invalid", "error")
        if on_invalid is None:  # YAML reads an unquoted null as None
            on_invalid = "null"
        if on_invalid not in ("error", "null"):
            raise TransformConfigError("on_invalid must be 'error' or 'null'", "on_invalid")
        self.default_country: str | None = country
        self.on_invalid: str = on_invalid

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            return self._invalid("not a phone number (wrong type)")
        text = str(value).strip()
        if not text:
            return None
        number = to_e164(text, self.default_country)
        if number is None:
            return self._invalid("not a valid phone number for E.164")
        return number

    def _invalid(self, reason: str) -> None:
        if self.on_invalid == "null":
            return None
        raise InvalidValue(reason)


def to_e164(text: str, default_country: str | None) -> str | None:
    """``text`` as an E.164 number (``+`` and 7 to 15 digits), or None when it cannot be one."""
    text = _PHONE_EXTENSION.sub("", text.strip())
    if not _PHONE_ALLOWED.match(text) or "+" in text[1:]:
        return None
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        full = digits
    elif digits.startswith("00"):
        full = digits[2:]
    elif default_country == "1" and digits.startswith("011"):
        full = digits[3:]
    elif default_country is None:
        return None
    elif default_country == "1":
        if len(digits) == 10:
            full = "1" + digits
        elif len(digits) == 11 and digits.startswith("1"):
            full = digits
        else:
            return None
    else:
        national = digits[1:] if digits.startswith("0") else digits
        full = default_country + national
    if not _E164.match(full):
        return None
    # North American numbering plan: 10 digits after the 1, area code and exchange start with 2-9.
    if full.startswith("1") and (len(full) != 11 or full[1] in "01" or full[4] in "01"):
        return None
    return "+" + full


class Join(Transform):
    name = "join"
    elementwise = False

    def __init__(self, arguments: Any) -> None:
        options = _options(self.name, arguments, {"separator"}, "separator")
        separator = options.get("separator", " ")
        if not isinstance(separator, str):
            raise TransformConfigError("separator must be text", "separator")
        self.separator = separator

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        if value is None:
            return None
        if not is_list(value):
            return value
        parts = [_text(entry) for entry in _flatten(value)]
        kept = [part for part in parts if part is not None and part.strip()]
        return self.separator.join(kept) if kept else None


def _flatten(values: Sequence[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if is_list(value):
            flat.extend(_flatten(value))
        else:
            flat.append(value)
    return flat


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Decimal):
        return str(value)
    raise InvalidValue("join can only join text and numbers")


class Default(Transform):
    name = "default"
    elementwise = False

    def __init__(self, arguments: Any) -> None:
        self.path: Path | None = None
        self.value: Any = None
        if arguments is None:
            raise TransformConfigError("default needs a value: {default: <constant>} or {default: {path: ...}}")
        if isinstance(arguments, Mapping):
            keys = set(arguments)
            if keys not in ({"value"}, {"path"}):
                raise TransformConfigError(
                    "default takes a constant, or a mapping with exactly one of 'value' or 'path'",
                    next(iter(keys - {"value", "path"}), None),
                )
            if "path" in arguments:
                text = arguments["path"]
                if not isinstance(text, str):
                    raise TransformConfigError("default path must be text", "path")
                try:
                    self.path = parse_path(text)
                except ValueError as error:
                    raise TransformConfigError(str(error), "path") from None
            else:
                self.value = arguments["value"]
        else:
            self.value = arguments

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,) if self.path is not None else ()

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        if not is_empty(value):
            return value
        if self.path is not None:
            return evaluate(self.path, source)
        return self.value


_NUMBER_TYPES = ("float", "int", "decimal")


class Number(Transform):
    name = "number"

    def __init__(self, arguments: Any) -> None:
        options = _options(self.name, arguments, {"type", "places"}, "type")
        kind = options.get("type", "float")
        if kind not in _NUMBER_TYPES:
            raise TransformConfigError("type must be float, int or decimal", "type")
        places = options.get("places")
        if places is not None:
            if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= 12:
                raise TransformConfigError("places must be a whole number from 0 to 12", "places")
            if kind == "int":
                raise TransformConfigError("places does not apply to type int", "places")
        self.kind: str = kind
        self.places: int | None = places
        self._quantum = Decimal(1).scaleb(-places) if places is not None else None

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and not value.strip():
            return None
        number = _to_decimal(value)
        try:
            if self.kind == "int":
                return int(number.quantize(Decimal(1), rounding=ROUND_HALF_UP))
            if self._quantum is not None:
                number = number.quantize(self._quantum, rounding=ROUND_HALF_UP)
        except InvalidOperation:
            raise InvalidValue("number is too large to round") from None
        if self.kind == "float":
            result = float(number)
            if math.isinf(result):
                raise InvalidValue("number is too large")
            return result
        return format(number, "f")


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise InvalidValue("not a number (true/false)")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if "_" in text:  # Decimal() would accept 1_000
            raise InvalidValue("not a number")
        if len(text) > 100:
            raise InvalidValue("not a number (text too long)")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise InvalidValue("not a number") from None
    else:
        raise InvalidValue("not a number (wrong type)")
    if not number.is_finite():
        raise InvalidValue("not a finite number")
    return number


_COMMON_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%d %b %Y",
    "%d %B %Y",
    "%b %d, %Y",
    "%B %d, %Y",
)


def _zone(name: Any, key: str) -> tzinfo:
    if not isinstance(name, str) or not name:
        raise TransformConfigError(f"{key} must be a time zone name such as UTC or America/New_York", key)
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TransformConfigError(f"unknown time zone {name!r}", key) from None


class Date(Transform):
    name = "date"

    def __init__(self, arguments: Any) -> None:
        options = _options(self.name, arguments, {"format", "input_formats", "timezone", "output_timezone"}, "format")
        output = options.get("format")
        if output is not None:
            if not isinstance(output, str) or not output:
                raise TransformConfigError('format must be a strftime pattern such as "%Y-%m-%d"', "format")
            try:
                datetime(2000, 1, 2, 3, 4, 5, tzinfo=UTC).strftime(output)
            except ValueError:
                raise TransformConfigError("format is not a valid strftime pattern", "format") from None
        inputs = options.get("input_formats", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(item, str) and item for item in inputs):
            raise TransformConfigError("input_formats must be a list of strptime patterns", "input_formats")
        self.format: str | None = output
        self.input_formats: tuple[str, ...] = (*inputs, *_COMMON_FORMATS)
        self.timezone: tzinfo = _zone(options.get("timezone", "UTC"), "timezone")
        self.output_timezone: tzinfo = _zone(options.get("output_timezone", "UTC"), "output_timezone")

    def one(self, value: Any, source: Mapping[str, Any]) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        moment = self._parse(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.timezone)
        try:
            moment = moment.astimezone(self.output_timezone)
            if self.format is not None:
                return moment.strftime(self.format)
        except (OverflowError, ValueError):
            raise InvalidValue("date out of range") from None
        return moment.isoformat()

    def _parse(self, value: Any) -> datetime:
        if isinstance(value, bool):
            raise InvalidValue("not a date (true/false)")
        if isinstance(value, datetime):
            return value
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day)
        if isinstance(value, int | float | Decimal):
            seconds = float(value)
            if abs(seconds) >= 1e11:
                seconds /= 1000.0
            try:
                return datetime.fromtimestamp(seconds, UTC)
            except (OverflowError, OSError, ValueError):
                raise InvalidValue("not a date (epoch out of range)") from None
        if not isinstance(value, str):
            raise InvalidValue("not a date (wrong type)")
        text = value.strip()
        if len(text) > 64:
            raise InvalidValue("not a date (text too long)")
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
        for pattern in self.input_formats:
            try:
                return datetime.strptime(text, pattern)
            except ValueError:
                continue
        try:
            return email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            pass
        raise InvalidValue("not a date in a known format")


def _simple(cls: type[Transform]) -> Callable[[Any], Transform]:
    def factory(arguments: Any) -> Transform:
        _no_arguments(cls.name, arguments)
        return cls()

    return factory


TRANSFORMS: dict[str, Callable[[Any], Transform]] = {
    "trim": _simple(Trim),
    "lower": _simple(Lower),
    "upper": _simple(Upper),
    "text": _simple(Text),
    "e164": E164,
    "join": Join,
    "default": Default,
    "number": Number,
    "date": Date,
}


def build_transform(declaration: Any) -> Transform:
    """Build a transform from its declaration: ``"name"`` or ``{"name": arguments}``."""
    if isinstance(declaration, str):
        name, arguments = declaration, None
    elif isinstance(declaration, Mapping) and len(declaration) == 1:
        ((name, arguments),) = declaration.items()
    else:
        raise TransformConfigError("a transform is a name, or a mapping with one name: {number: {places: 2}}")
    factory = TRANSFORMS.get(name) if isinstance(name, str) else None
    if factory is None:
        known = ", ".join(TRANSFORMS)
        raise TransformConfigError(f"unknown transform {name!r} (known: {known})")
    return factory(arguments)
