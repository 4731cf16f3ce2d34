"""The transfer a failure or a warning is about: the source record's kind and id (no Kafka here).

Flows attach it to the errors they raise and pass it with their warnings; the error log keys its records by it,
so every entry of one transfer is found, in order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TransferRef:
    """The source record a transfer is about."""

    kind: str
    id: str
    event_type: str | None = None

    @property
    def key(self) -> bytes:
        return f"{self.kind}:{self.id}".encode()
