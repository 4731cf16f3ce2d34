"""Envelope decoding: a Kafka record's key, value and headers -> typed change events.

Decoding happens here, in our own code, never in aiokafka's deserializer: a record that cannot be read must
become a :class:`PoisonPill` with a stable reason (and go to the dead-letter topic), not an exception inside
the client's fetch loop. Everything here is pure: no Kafka, no I/O.

Accepted envelopes (as documented by Debezium's connectors and Outbox Event Router, the CloudEvents 1.0 Kafka
protocol binding and JSON format, and iPaaS.com's hook notifications), one module each:

- :mod:`~consumer.envelopes.tombstone` (value ``None``): a delete of the record named by the key;
- :mod:`~consumer.envelopes.debezium` change events, with or without the JsonConverter ``{"schema", "payload"}``
  wrapper, and the flattened ``ExtractNewRecordState`` form (``__op``/``__deleted``);
- :mod:`~consumer.envelopes.outbox` events routed by the ``EventRouter`` (header ``id``, optional
  ``type``/``eventType`` header, payload possibly a JSON string) and un-routed outbox rows;
- :mod:`~consumer.envelopes.cloudevents` 1.0 in structured (``content-type: application/cloudevents+json``)
  and binary (``ce_*`` headers) mode;
- :mod:`~consumer.envelopes.ipaas_hook` notifications ``{"id", "attempt", "notifications": [{"scope",
  "id"|"external_id"}]}``: notify-then-fetch, the events carry no record;
- :mod:`~consumer.envelopes.plain_json`: a bare record (a Klaviyo profile also as a JSON:API resource or
  document), or a ``{"scope"|"event_type": .., "data"|"record": {..}}`` wrapper.

:func:`decode` (:mod:`~consumer.envelopes.decoder`) checks the size, detects the format and delegates;
:mod:`~consumer.envelopes.base` holds what the formats share (the event, the poison pill, the UTF-8, JSON, key
and record checks) and :mod:`~consumer.envelopes.event_types` reads event type names.
"""

from consumer.envelopes.base import (
    DEFAULT_MAX_VALUE_BYTES,
    Action,
    ChangeEvent,
    EnvelopeFormat,
    NotAChange,
    PoisonPill,
    PoisonReason,
    RecordKind,
    SkipReason,
)
from consumer.envelopes.decoder import decode
from consumer.envelopes.event_types import parse_event_type

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "Action",
    "ChangeEvent",
    "EnvelopeFormat",
    "NotAChange",
    "PoisonPill",
    "PoisonReason",
    "RecordKind",
    "SkipReason",
    "decode",
    "parse_event_type",
]
