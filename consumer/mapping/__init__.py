"""Declarative mapping collections: which source value becomes which target field, per flow.

A collection is a YAML (or JSON) file, validated when the service starts; a bad file is refused with a
``MappingFileError`` naming the file, the line and the reason::

    flow: add_profile_from_ipaas          # the flow slug (consumer.catalog.Flow.slug)
    source: customer                      # optional; must match the flow when given
    target: klaviyo_profile               # optional; must match the flow when given
    keep_null: false                      # optional default for every field
    extra_fields: [loyalty_tier]          # optional: source fields beyond the known shape (records keep extras)
    fields:
      email: {path: email_address, transforms: [trim]}
      phone_number: {path: phone_number, transforms: [{e164: {default_country: "1"}}]}
      location.address1: primary_billing_address.address_1      # short form: just the path
      external_id: {path: id, required: true}
      properties.Source: {value: "iPaaS.com"}                   # a constant
      properties["Full Name"]: {paths: [first_name, last_name], transforms: [join]}

Flows, sources and targets (``FLOW_KINDS``)
    ``add/update_profile_from_ipaas``      customer → klaviyo_profile (profile attributes)
    ``placed_order_from_ipaas``            transaction → klaviyo_event
    ``ordered_product_from_ipaas``         transaction_line (the line, with its transaction under
                                           ``transaction``) → klaviyo_event
    ``add/update_profile_to_ipaas``        klaviyo_profile (the JSON:API resource: ``id``, ``attributes``)
                                           → ipaas_customer
    ``add/update_profile_address_to_ipaas`` klaviyo_profile → ipaas_customer_address
    An event target holds ``metric`` (the metric name), ``unique_id``, ``value``, ``value_currency``, ``time``,
    ``backfill``, ``profile.*`` (profile attributes) and ``properties.*``; the flow wraps them into Klaviyo's
    JSON:API document and adds what the mapping does not cover (such as the Placed Order ``Items`` list).

Fields
    The key is the target field, dotted for nested objects (``location.city``; quote odd names:
    ``properties["Order Qty"]``). The value is a source path (short form) or a mapping with exactly one of
    ``path`` (one source path), ``paths`` (several paths, giving a list without its nulls, e.g. to ``join``)
    or ``value`` (a constant), and optionally ``transforms`` (see ``consumer.mapping.transforms``),
    ``required: true`` (null/empty raises ``RequiredValueMissing``), ``keep_null: true`` (send null instead of
    leaving the field out), ``on_missing_position: null`` (a missing list position gives null instead of
    ``ListPositionMissing``) and ``description``.

Paths (``consumer.mapping.paths``)
    Dotted names with list positions ``addresses[0].city`` — **positions are 0-based**, ``[-1]`` is the last
    entry — a wildcard ``lines[*].sku`` giving a list, and quoted keys ``properties["Order Qty"]``. Path roots
    and known nested fields are checked against the source's shape at load time (``consumer.mapping.schema``);
    free-form parts (``properties``, ``custom_fields``, ``line_info``, ``options`` ...) accept any name.

Evaluation
    ``MappingCollection.apply(source)`` builds the target dict or raises a ``MappingEvaluationError``
    (``ListPositionMissing``, ``RequiredValueMissing``, ``InvalidValue``, ``TypeMismatch``) naming the target
    field and the path, never a data value. ``MappingCollection.build(source)`` raises the flow's catalog
    error instead (``catalog_error``), which is how flows report a mapping that cannot be evaluated.

Loading
    ``load_collections(directory)`` returns every flow's collection keyed by slug: the shipped defaults in
    ``consumer/mapping/defaults/``, each replaced by ``<directory>/<flow_slug>.yaml|yml|json`` when present.
"""

from __future__ import annotations

from .collection import (
    FLOW_KINDS,
    SOURCE_KINDS,
    TARGET_KINDS,
    FieldMapping,
    MappingCollection,
    catalog_entry_for,
    catalog_error,
    default_collections,
    load_collection,
    load_collections,
    parse_collection,
)
from .errors import (
    InvalidValue,
    ListPositionMissing,
    MappingError,
    MappingEvaluationError,
    MappingFileError,
    PathSyntaxError,
    RequiredValueMissing,
    TypeMismatch,
)
from .paths import Path as SourcePath
from .paths import evaluate, parse_path
from .transforms import TRANSFORMS, build_transform

__all__ = [
    "FLOW_KINDS",
    "SOURCE_KINDS",
    "TARGET_KINDS",
    "TRANSFORMS",
    "FieldMapping",
    "InvalidValue",
    "ListPositionMissing",
    "MappingCollection",
    "MappingError",
    "MappingEvaluationError",
    "MappingFileError",
    "PathSyntaxError",
    "RequiredValueMissing",
    "SourcePath",
    "TypeMismatch",
    "build_transform",
    "catalog_entry_for",
    "catalog_error",
    "default_collections",
    "evaluate",
    "load_collection",
    "load_collections",
    "parse_collection",
    "parse_path",
]
