"""Vendor Klaviyo's OpenAPI contract: trim the full ``openapi-stable.json`` to what this project uses.

    python scripts/vendor_klaviyo_spec.py SOURCE [--output PATH] [--check]

SOURCE is Klaviyo's full public spec (``openapi-stable.json`` from Klaviyo's public OpenAPI repository), read only
when refreshing. The output (default ``simulators/klaviyo/contract/openapi-klaviyo.json``, package data of the
simulator) keeps:

- the paths/methods of the operations the client uses (``consumer.klaviyo.ratelimits.ENDPOINTS``) and the
  simulator answers (``simulators.klaviyo.app.ROUTED_OPERATIONS``), with their parameters, request bodies,
  responses and ``x-klaviyo-*`` extensions (rate limits, scopes, filters);
- every ``#/components/...`` object those reach, transitively (schemas, responses, security schemes);
- the revision (``info.version``), the servers and the security requirements;
- the rate-limit facts: ``x-klaviyo-ratelimit`` (taken from the operation's description when the extension is
  missing) and the conditional limits the descriptions give ("Rate limits when using ``include=list``...") as
  ``x-vendored-ratelimit-conditions``.

Every ``description``, ``summary``, ``example``, ``examples`` and ``externalDocs`` is stripped (a schema property
that happens to be called ``description`` stays). ``x-vendored`` records the source: its file name, sha256 and
size, its ``info.version``, and the date of generation. The output is deterministic (sorted keys, one layout):
re-running on an unchanged source leaves the file as it is, date included. ``--check`` writes nothing and exits
1 when the vendored file is out of date.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "simulators" / "klaviyo" / "contract" / "openapi-klaviyo.json"

PROSE = frozenset({"description", "summary", "example", "examples", "externalDocs"})
NAMED_SCHEMAS = frozenset({"properties", "patternProperties"})  # maps of user-chosen names to schemas
VERBATIM = frozenset({"default", "enum", "const"})  # values, not schema structure
COMPONENT_REF = re.compile(r"^#/components/(?P<kind>[A-Za-z]+)/(?P<name>[^/]+)$")
_LIMITS = r"Burst: `(?P<burst>\d+/s)`<br>Steady: `(?P<steady>\d+/m)`"
BASE_LIMIT = re.compile(r"\*Rate limits\*:<br>" + _LIMITS)
CONDITIONAL_LIMIT = re.compile(r"Rate limits when (?P<when>[^:]*?):<br>" + _LIMITS)
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def used_operations() -> set[str]:
    """The operationIds the client (its endpoint table) and the simulator (its routes) use."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from consumer.klaviyo.ratelimits import ENDPOINTS
    from simulators.klaviyo.app import ROUTED_OPERATIONS

    return set(ENDPOINTS) | set(ROUTED_OPERATIONS)


def strip_prose(node: Any, *, named: bool = False) -> Any:
    """``node`` without prose keys; ``named`` marks a map of names (``properties``) whose keys are all kept."""
    if isinstance(node, list):
        return [strip_prose(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if named:
            out[key] = strip_prose(value)
        elif key in PROSE:
            continue
        elif key in VERBATIM or key.startswith("x-"):
            out[key] = value
        else:
            out[key] = strip_prose(value, named=key in NAMED_SCHEMAS)
    return out


def rate_limit_facts(operation: dict[str, Any]) -> dict[str, Any]:
    """The operation's ``x-klaviyo-ratelimit`` (from its description when absent) and its conditional limits."""
    text = str(operation.get("description", ""))
    facts: dict[str, Any] = {}
    if "x-klaviyo-ratelimit" not in operation:
        base = BASE_LIMIT.search(text)
        if base:
            facts["x-klaviyo-ratelimit"] = {"burst": base["burst"], "steady": base["steady"]}
    conditions = []
    for match in CONDITIONAL_LIMIT.finditer(text):
        quoted = re.search(r"`([^`]+)`", match["when"])
        conditions.append({"when": quoted.group(1) if quoted else match["when"].strip(),
                           "burst": match["burst"], "steady": match["steady"]})
    if conditions:
        facts["x-vendored-ratelimit-conditions"] = conditions
    return facts


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, list):
        for item in node:
            yield from _references(item)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for key, value in node.items():
            if key not in VERBATIM:
                yield from _references(value)


def reachable_components(spec: dict[str, Any], roots: Any) -> dict[str, dict[str, Any]]:
    """Every ``#/components/KIND/NAME`` object reached from ``roots``, transitively, prose stripped."""
    components = spec.get("components", {})
    found: dict[str, dict[str, Any]] = {}
    pending = list(_references(roots))
    while pending:
        ref = pending.pop()
        match = COMPONENT_REF.match(ref)
        if match is None:
            raise SystemExit(f"unsupported reference {ref!r}: only #/components/KIND/NAME is vendored")
        kind, name = match["kind"], match["name"]
        if name in found.get(kind, {}):
            continue
        try:
            target = components[kind][name]
        except KeyError:
            raise SystemExit(f"dangling reference {ref!r} in the source spec") from None
        found.setdefault(kind, {})[name] = strip_prose(target)
        pending.extend(_references(target))
    return found


def trim(spec: dict[str, Any], operations: set[str]) -> dict[str, Any]:
    """The vendored document (without ``x-vendored``): only ``operations`` and what they reach."""
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or operation.get("operationId") not in operations:
                continue
            seen.add(operation["operationId"])
            kept = strip_prose(operation)
            kept.update(rate_limit_facts(operation))
            paths.setdefault(path, {})[method] = kept
            if "parameters" in item:  # path-level parameters apply to the kept method too
                paths[path]["parameters"] = strip_prose(item["parameters"])
    missing = operations - seen
    if missing:
        raise SystemExit(f"operations not in the source spec: {', '.join(sorted(missing))}")

    schemes = {name for requirement in [*spec.get("security", []),
                                        *(r for item in paths.values() for op in item.values()
                                          if isinstance(op, dict) for r in op.get("security", []))]
               for name in requirement}
    roots = [paths, *({"$ref": f"#/components/securitySchemes/{name}"} for name in sorted(schemes))]
    document: dict[str, Any] = {
        "openapi": spec["openapi"],
        "info": {"title": spec.get("info", {}).get("title", ""), "version": spec["info"]["version"]},
        "paths": paths,
        "components": reachable_components(spec, roots),
    }
    for key in ("servers", "security"):
        if key in spec:
            document[key] = strip_prose(spec[key])
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def vendor(source: Path, output: Path, *, today: str | None = None) -> tuple[str, bool]:
    """The vendored text for ``source``, and whether it differs from what ``output`` holds (date aside)."""
    raw = source.read_bytes()
    spec = json.loads(raw)
    document = trim(spec, used_operations())
    header = {
        "generator": "scripts/vendor_klaviyo_spec.py",
        "generated": today or datetime.now(UTC).date().isoformat(),
        "operations": sorted(op["operationId"] for item in document["paths"].values()
                             for op in item.values() if isinstance(op, dict) and "operationId" in op),
        "source": {
            "file": source.name,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw),
            "info_version": spec["info"]["version"],
        },
    }
    document["x-vendored"] = header
    try:
        previous = json.loads(output.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and isinstance(previous.get("x-vendored"), dict):
        # same content as before: keep its generation date, so a re-run on an unchanged source changes nothing
        header_before = previous["x-vendored"].get("generated")
        candidate = {**document, "x-vendored": {**header, "generated": header_before}}
        if candidate == previous:
            return render(previous), False
    return render(document), True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Vendor a trimmed copy of Klaviyo's OpenAPI contract.")
    parser.add_argument("source", type=Path, help="Klaviyo's full openapi-stable.json")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the vendored file to write")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the output is out of date")
    args = parser.parse_args(argv)
    source = args.source.resolve()
    if not source.is_file():
        print(f"no spec at {source}: pass the path of Klaviyo's openapi-stable.json", file=sys.stderr)
        return 2
    text, changed = vendor(source, args.output)
    if args.check:
        print(f"{args.output}: {'out of date' if changed else 'up to date'}")
        return 1 if changed else 0
    if changed:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    print(f"{args.output}: {'written' if changed else 'unchanged'} ({len(text.encode())} bytes from "
          f"{source.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
