"""The vendored Klaviyo contract and ``scripts/vendor_klaviyo_spec.py``, which trims Klaviyo's full spec into it."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from consumer.klaviyo.ratelimits import ENDPOINTS, EXTRA_LIMITS, GET_PROFILE_INCLUDE, GET_PROFILES_PREDICTIVE
from simulators.klaviyo import Spec
from simulators.klaviyo.app import ROUTED_OPERATIONS
from simulators.klaviyo.spec import DEFAULT_SPEC_PATH

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "vendor_klaviyo_spec.py"


@pytest.fixture(scope="module")
def vendoring() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_klaviyo_spec", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCE: dict[str, Any] = {
    "openapi": "3.0.2",
    "info": {"title": "Klaviyo API", "version": "2030-01-01", "description": "prose", "contact": {"name": "x"}},
    "servers": [{"url": "https://a.klaviyo.com", "description": "Production"}],
    "security": [{"Key": []}],
    "tags": [{"name": "Things", "description": "things"}],
    "paths": {
        "/api/things": {
            "get": {
                "operationId": "get_things", "summary": "Get Things",
                "description": "Lists.<br><br>*Rate limits*:<br>Burst: `3/s`<br>Steady: `60/m`<br><br>Rate limits "
                               "when using the `include=owner` parameter in your API request:<br>Burst: `1/s`<br>"
                               "Steady: `15/m`",
                "parameters": [{"name": "page[size]", "in": "query", "description": "how many",
                                "schema": {"type": "integer", "example": 5}}],
                "responses": {"200": {"description": "Success", "content": {"application/vnd.api+json": {
                    "schema": {"$ref": "#/components/schemas/ThingList"}}}},
                    "4XX": {"$ref": "#/components/responses/ClientError"}},
                "x-klaviyo-scopes": ["things:read"],
            },
            "delete": {"operationId": "delete_things", "responses": {"204": {"description": "gone"}}},
        },
        "/api/other": {"get": {"operationId": "get_other", "responses": {"200": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Unused"}}}}}}},
    },
    "components": {
        "schemas": {
            "ThingList": {"type": "object", "description": "a list", "properties": {
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}}}},
            "Thing": {"type": "object", "title": "Thing", "example": {"id": "1"}, "properties": {
                "description": {"type": "string", "description": "the thing's own description field"},
                "example": {"$ref": "#/components/schemas/Part"},
                "kind": {"type": "string", "enum": ["description", "summary"], "default": "summary"}}},
            "Part": {"type": "object", "properties": {"id": {"type": "string"}}},
            "Unused": {"type": "string"},
        },
        "responses": {"ClientError": {"description": "Client Error", "content": {"application/vnd.api+json": {
            "schema": {"type": "object", "properties": {"errors": {"type": "array"}}}}}}},
        "securitySchemes": {"Key": {"type": "apiKey", "in": "header", "name": "Authorization",
                                    "description": "how to authenticate"}},
    },
}


@pytest.fixture
def source(tmp_path: Path, vendoring: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(vendoring, "used_operations", lambda: {"get_things"})
    path = tmp_path / "openapi-stable.json"
    path.write_text(json.dumps(SOURCE))
    return path


def test_the_script_keeps_the_used_operations_and_what_they_reach(
    vendoring: ModuleType, source: Path, tmp_path: Path,
) -> None:
    output = tmp_path / "out" / "openapi-klaviyo.json"
    assert vendoring.main([str(source), "--output", str(output)]) == 0
    document = json.loads(output.read_text())

    assert list(document["paths"]) == ["/api/things"] and list(document["paths"]["/api/things"]) == ["get"]
    assert set(document["components"]["schemas"]) == {"ThingList", "Thing", "Part"}  # transitively, not Unused
    assert set(document["components"]["responses"]) == {"ClientError"}
    assert document["components"]["securitySchemes"] == {"Key": {"type": "apiKey", "in": "header",
                                                                 "name": "Authorization"}}
    assert document["info"] == {"title": "Klaviyo API", "version": "2030-01-01"}
    assert document["servers"] == [{"url": "https://a.klaviyo.com"}] and "tags" not in document

    operation = document["paths"]["/api/things"]["get"]
    assert "summary" not in operation and "description" not in operation
    assert operation["parameters"] == [{"name": "page[size]", "in": "query", "schema": {"type": "integer"}}]
    assert operation["x-klaviyo-ratelimit"] == {"burst": "3/s", "steady": "60/m"}  # from the description
    assert operation["x-vendored-ratelimit-conditions"] == [{"when": "include=owner", "burst": "1/s",
                                                            "steady": "15/m"}]
    thing = document["components"]["schemas"]["Thing"]
    assert "example" not in thing and thing["title"] == "Thing"
    assert thing["properties"]["description"] == {"type": "string"}  # a property called description stays
    assert thing["properties"]["example"] == {"$ref": "#/components/schemas/Part"}
    assert thing["properties"]["kind"]["enum"] == ["description", "summary"]

    header = document["x-vendored"]
    assert header["operations"] == ["get_things"]
    assert header["source"]["file"] == "openapi-stable.json"
    assert header["source"]["info_version"] == "2030-01-01"
    assert header["source"]["bytes"] == source.stat().st_size and len(header["source"]["sha256"]) == 64
    assert header["generated"]
    assert output.read_text() == vendoring.render(document)  # sorted keys, one layout


def test_rerunning_changes_nothing_until_the_source_does(vendoring: ModuleType, source: Path, tmp_path: Path) -> None:
    output = tmp_path / "openapi-klaviyo.json"
    text, changed = vendoring.vendor(source, output, today="2030-01-02")
    assert changed
    output.write_text(text)
    again, changed = vendoring.vendor(source, output, today="2030-02-03")
    assert not changed and again == text  # the date of the first generation is kept
    assert vendoring.main([str(source), "--output", str(output), "--check"]) == 0

    source.write_text(json.dumps({**SOURCE, "info": {**SOURCE["info"], "version": "2030-06-01"}}))
    assert vendoring.main([str(source), "--output", str(output), "--check"]) == 1
    assert output.read_text() == text  # --check writes nothing


def test_an_operation_missing_from_the_source_is_an_error(
    vendoring: ModuleType, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vendoring, "used_operations", lambda: {"get_things", "no_such_operation"})
    with pytest.raises(SystemExit, match="no_such_operation"):
        vendoring.vendor(source, tmp_path / "out.json")


# --- the vendored file itself ----------------------------------------------------------------------------------------

def _walk(node: Any, named: bool = False) -> Iterator[tuple[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if not named:
                yield key, value
            if not key.startswith("x-") and key not in ("enum", "default", "const"):
                yield from _walk(value, named=key in ("properties", "patternProperties") and not named)


def test_the_vendored_contract_covers_the_client_and_the_simulator(vendoring: ModuleType) -> None:
    text = DEFAULT_SPEC_PATH.read_text(encoding="utf-8")
    document = json.loads(text)
    assert text == vendoring.render(document)  # what the script writes: refreshing it gives a clean diff
    header = document["x-vendored"]
    assert set(header["operations"]) == set(ENDPOINTS) | set(ROUTED_OPERATIONS)
    assert header["source"]["info_version"] == document["info"]["version"]
    assert not [key for key, _ in _walk(document) if key in vendoring.PROSE]
    refs = {value for key, value in _walk(document) if key == "$ref"}
    for ref in refs:
        _, _, kind, name = ref.split("/")
        assert name in document["components"][kind], ref
    used = {"/".join(ref.split("/")[2:]) for ref in refs}
    assert {f"{kind}/{name}" for kind, names in document["components"].items() for name in names} <= used | {
        f"securitySchemes/{name}" for requirement in document["security"] for name in requirement}


def test_the_conditional_rate_limits_match_the_extra_limits(openapi_spec: Spec) -> None:
    def conditions(operation: str) -> dict[str, tuple[int, int]]:
        listed = openapi_spec.operations[operation][2].get("x-vendored-ratelimit-conditions", [])
        return {c["when"]: (int(c["burst"].split("/")[0]), int(c["steady"].split("/")[0])) for c in listed}

    include = EXTRA_LIMITS[GET_PROFILE_INCLUDE]
    predictive = EXTRA_LIMITS[GET_PROFILES_PREDICTIVE]
    assert conditions("get_profile")["include=list"] == (include.burst, include.steady)
    assert conditions("get_profile")["include=segment"] == (include.burst, include.steady)
    assert conditions("get_profiles")["additional-fields[profile]=predictive_analytics"] == (
        predictive.burst, predictive.steady)
