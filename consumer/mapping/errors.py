"""Exceptions of the mapping package.

Two families: ``MappingFileError`` (a collection file is refused at start-up) and ``MappingEvaluationError``
(a collection could not be applied to one record). Evaluation errors name the target field, the source path
and a short reason; they never quote a value of the record, so their text is safe to log and to show.
"""

from __future__ import annotations

from pathlib import Path


class MappingError(Exception):
    """Base class of every mapping failure."""


class MappingFileError(MappingError):
    """A mapping collection file was refused: ``file``, 1-based ``line`` (None when unknown), ``reason``."""

    def __init__(self, file: str | Path, line: int | None, reason: str) -> None:
        self.file = str(file)
        self.line = line
        self.reason = reason
        where = f"{self.file}, line {line}" if line is not None else self.file
        super().__init__(f"{where}: {reason}")


class PathSyntaxError(ValueError):
    """A source path or target key does not follow the path syntax (``column`` is 1-based)."""

    def __init__(self, text: str, column: int, reason: str) -> None:
        self.text = text
        self.column = column
        self.reason = reason
        super().__init__(f"bad path {text!r} at column {column}: {reason}")


class MappingEvaluationError(MappingError):
    """A mapping could not be evaluated against a record.

    ``target`` is the target field being built, ``path`` the source path being read (either may be None while
    the error travels up from a helper that does not know it yet), ``reason`` a short text without data values.
    """

    def __init__(self, reason: str, *, target: str | None = None, path: str | None = None) -> None:
        self.reason = reason
        self.target = target
        self.path = path
        super().__init__(reason)

    def __str__(self) -> str:
        parts = []
        if self.target is not None:
            parts.append(f"field {self.target!r}")
        if self.path is not None:
            parts.append(f"path {self.path!r}")
        where = " ".join(parts)
        return f"{where}: {self.reason}" if where else self.reason

    def locate(self, target: str, path: str | None) -> MappingEvaluationError:
        """Fill in the target field and source path where they are still unknown; returns self."""
        if self.target is None:
            self.target = target
        if self.path is None:
            self.path = path
        return self


class ListPositionMissing(MappingEvaluationError):
    """A path reads a list position (``index``, 0-based) the record's list (of ``length`` items) lacks."""

    def __init__(self, path: str, index: int, length: int, *, target: str | None = None) -> None:
        self.index = index
        self.length = length
        noun = "entry" if length == 1 else "entries"
        super().__init__(
            f"list position {index} is not present (the record has {length} {noun})", target=target, path=path
        )


class RequiredValueMissing(MappingEvaluationError):
    """A field marked ``required: true`` has no value (null, absent, empty text or empty list)."""

    def __init__(self, target: str, *, path: str | None = None) -> None:
        super().__init__("required value is missing or empty", target=target, path=path)


class InvalidValue(MappingEvaluationError):
    """A transform could not convert the value (not a phone number, a number, a date ...)."""


class TypeMismatch(MappingEvaluationError):
    """A path step does not fit the record's shape (a key on a list, a position on text, ...)."""
