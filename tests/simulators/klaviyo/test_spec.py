"""OpenAPI 3.0 -> JSON Schema conversion, the structural fallback validator, and locating the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulators.klaviyo import KlaviyoSimulator, SimulatorConfig, Spec, load_spec, spec_path
from simulators.klaviyo.spec import SPEC_ENV, _JsonSchemaValidator, _MiniValidator

TINY = {
    "openapi": "3.0.2",
    "info": {"version": "2026-07-15"},
    "paths": {"/api/things": {"post": {"operationId": "create_thing", "x-klaviyo-ratelimit": {
        "burst": "3/s", "steady": "60/m"}, "requestBody": {"content": {"application/vnd.api+json": {
            "schema": {"$ref": "#/components/schemas/ThingQuery"}}}}, "responses": {}}}},
    "components": {"schemas": {
        "ThingQuery": {"type": "object", "required": ["data"], "properties": {"data": {
            "$ref": "#/components/schemas/Thing"}}},
        "Thing": {"type": "object", "required": ["type"], "properties": {
            "type": {"type": "string", "enum": ["thing"]},
            "when": {"type": "string", "format": "date-time", "nullable": True},
            "where": {"$ref": "#/components/schemas/Place", "nullable": True},
            "size": {"nullable": True, "oneOf": [{"type": "string"}, {"type": "number"}]},
            "kind": {"type": "string", "enum": ["a", "b"], "nullable": True},
            "properties": {"type": "object"},
            "child": {"$ref": "#/components/schemas/Thing"},
        }},
        "Place": {"type": "object", "properties": {"city": {"type": "string"}}},
    }},
}

CASES: list[tuple[dict[str, Any], str | None]] = [
    ({"data": {"type": "thing"}}, None),
    ({"data": {"type": "thing", "when": None, "where": None, "size": None, "kind": None}}, None),
    ({"data": {"type": "thing", "when": "2025-01-01T00:00:00Z", "where": {"city": "Oslo"}, "size": 3}}, None),
    ({"data": {"type": "thing", "properties": {"anything": 1}, "child": {"type": "thing"}}}, None),
    ({}, "/data"),
    ({"data": {"type": "other"}}, "/data/type"),
    ({"data": {"type": "thing", "when": "2025-01-01"}}, "/data/when"),
    ({"data": {"type": "thing", "where": {"city": 5}}}, "/data/where"),
    ({"data": {"type": "thing", "size": True}}, "/data/size"),
    ({"data": {"type": "thing", "kind": "c"}}, "/data/kind"),
]


@pytest.mark.parametrize(("document", "pointer"), CASES)
@pytest.mark.parametrize("engine", [_JsonSchemaValidator, _MiniValidator])
def test_conversion_and_both_validators(document: dict[str, Any], pointer: str | None, engine: type) -> None:
    spec = Spec(TINY)
    schema = spec.request_schema("create_thing")
    issue = engine(schema).first_issue(document)
    if pointer is None:
        assert issue is None
    else:
        assert issue is not None and issue.pointer.startswith(pointer)


def test_operation_metadata() -> None:
    spec = Spec(TINY)
    assert spec.version == "2026-07-15"
    assert spec.rate_limit("create_thing") == (3, 60)
    assert spec.response_schema("create_thing", 200) is None


def test_spec_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SPEC_ENV, raising=False)
    assert spec_path().parts[-4:] == ("simulators", "klaviyo", "contract", "openapi-klaviyo.json")
    assert spec_path().is_file()  # vendored in the repository (package data), not looked up beside it
    monkeypatch.setenv(SPEC_ENV, str(tmp_path / "x.json"))
    assert spec_path() == tmp_path / "x.json"
    assert load_spec() is None
    assert spec_path("/explicit.json") == Path("/explicit.json")


async def test_without_a_spec_the_simulator_falls_back_to_structural_checks(tmp_path: Path) -> None:
    import httpx

    from .conftest import HEADERS, event_body

    async with KlaviyoSimulator(SimulatorConfig(spec_path=tmp_path / "absent.json")) as sim:
        assert sim.state.spec is None
        async with httpx.AsyncClient(base_url=sim.base_url, headers=HEADERS) as http:
            assert (await http.post("/api/events", content=event_body())).status_code == 202
            assert (await http.post("/api/events", content=b'{"nope": 1}')).status_code == 400
            missing_metric = b'{"data": {"type": "event", "attributes": {"properties": {}}}}'
            assert (await http.post("/api/events", content=missing_metric)).status_code == 400
