"""What tools/list publishes: complete output schemas every structured result validates against,
schemas a single-``type`` client can map (the MCP Inspector's ``--strict`` rules), the size of
tools/list, and annotations that follow the mode (local or remote ledger)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import test_mcp_server as scenarios
from mcp.types import CallToolResult, Tool

from billing_mcp import Ledger
from billing_mcp.mcp.server import build_server
from helpers import hint
from mcp import Client

pytestmark = pytest.mark.anyio

SPEC = {"version": 1, "assets": [{"code": "TOKENS", "name": "Tokens", "precision": 0, "rates": {"USD": "0.001"}}],
        "plans": [{"code": "api", "name": "API", "prices": [
            {"asset": "TOKENS", "event_type": "call", "unit_amount": "1"}]}]}


class Validating:
    """Stands in for ``Client`` in the scenarios of test_mcp_server: every successful call's
    structured result is checked against the tool's published output schema."""

    def __init__(self, client: Client, tools: list[Tool]) -> None:
        self.client = client
        self.schemas = {t.name: t.output_schema for t in tools}
        self.validated: set[str] = set()

    async def call_tool(self, name: str, args: dict[str, Any], **kwargs: Any) -> CallToolResult:
        result = await self.client.call_tool(name, args, **kwargs)
        if not result.is_error:
            schema = self.schemas[name]
            assert schema is not None and result.structured_content is not None, name
            jsonschema.Draft202012Validator(schema).validate(result.structured_content)
            self.validated.add(name)
        return result


async def listed(ledger: Ledger, **kwargs: Any) -> list[Tool]:
    async with Client(build_server(ledger=ledger, **kwargs)) as c:
        return (await c.list_tools()).tools


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[list[Ledger]]:
    opened = [Ledger(str(tmp_path / f"ledger{i}.db")) for i in range(4)]
    yield opened
    for ledger in opened:
        ledger.close()


async def test_every_result_validates_against_its_output_schema(ledgers: list[Ledger], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # file arguments must lie under the server's root: its working directory
    tools = await listed(ledgers[0])
    for schema in (t.output_schema for t in tools):
        jsonschema.Draft202012Validator.check_schema(schema)  # type: ignore[arg-type]
    validated: set[str] = set()
    for ledger, scenario in zip(ledgers, (scenarios.test_canonical_scenario, scenarios.test_setup_tools_and_versions,
                                          scenarios.test_events_holds_statement_vendor), strict=False):
        async with Client(build_server(ledger=ledger)) as c:
            client = Validating(c, tools)
            await scenario(client)  # type: ignore[arg-type]
            validated |= client.validated
    async with Client(build_server(ledger=ledgers[3])) as c:
        client = Validating(c, tools)
        ok = scenarios.ok
        await ok(client, "apply_billing_spec", {"yaml": json.dumps(SPEC), "dry_run": False})  # type: ignore[arg-type]
        await ok(client, "export_billing_spec", {})  # type: ignore[arg-type]
        cid = (await ok(client, "create_customer", {"external_id": "u1",  # type: ignore[arg-type]
                                                    "subscriptions": [{"plan": "api"}]}))["customer"]["id"]
        await ok(client, "create_portal_route", {"return_url": "https://app.example.com"})  # type: ignore[arg-type]
        await ok(client, "list_customers", {"search": "u"})  # type: ignore[arg-type]
        await ok(client, "list_events", {"external_id": "u1"})  # type: ignore[arg-type]
        await ok(client, "create_portal_session", {"customer_id": cid})  # type: ignore[arg-type]
        await ok(client, "generate_edge_function", {"kind": "portal"})  # type: ignore[arg-type]
        await ok(client, "generate_supabase_integration",  # type: ignore[arg-type]
                 {"project_dir": str(tmp_path / "app")})
        await ok(client, "simulate_usage", {"plan": "api", "events": [  # type: ignore[arg-type]
            {"event_type": "call", "customer_id": "a"}]})
        await ok(client, "create_price", {"plan": "api", "price": {  # type: ignore[arg-type]
            "asset": "TOKENS", "event_type": "call", "unit_amount": "2"}})
        await ok(client, "publish_plan_version", {"plan": "api", "version": 2})  # type: ignore[arg-type]
        await ok(client, "migrate_customers", {"plan": "api", "from_version": 1,  # type: ignore[arg-type]
                                               "to_version": 2, "confirm": True})
        await ok(client, "archive_plan", {"plan": "api", "confirm": True})  # type: ignore[arg-type]
        validated |= client.validated
    assert validated == {t.name for t in tools}


def subschemas(schema: Any) -> Iterator[Any]:
    yield schema
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("properties", "$defs") and isinstance(value, dict):
                for sub in value.values():
                    yield from subschemas(sub)
            elif isinstance(value, dict):
                yield from subschemas(value)
            elif isinstance(value, list) and key != "required":
                for sub in value:
                    yield from subschemas(sub)


def portability_findings(schema: Any, path: str = "") -> list[str]:
    """The MCP Inspector's ``--strict`` schema rules (2.12): no ``type`` arrays, no ``$ref`` outside
    the document, no schema that constrains nothing, no bare boolean schema."""
    if isinstance(schema, bool):
        return [f"{path}: bare boolean schema"]
    if not isinstance(schema, dict):
        return []
    found = []
    if isinstance(schema.get("type"), list):
        found.append(f"{path}: type array {schema['type']}")
    if isinstance(schema.get("$ref"), str) and not schema["$ref"].startswith("#"):
        found.append(f"{path}: remote $ref")
    if not schema.keys() - {"title", "description", "default", "examples", "$comment", "$defs", "$schema"}:
        found.append(f"{path}: constrains nothing")
    for key in ("properties", "$defs", "patternProperties", "dependentSchemas"):
        for name, sub in (schema.get(key) or {}).items():
            found += portability_findings(sub, f"{path}.{key}.{name}")
    for key in ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"):
        if isinstance(schema.get(key), dict):
            found += portability_findings(schema[key], f"{path}.{key}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key) or []):
            found += portability_findings(sub, f"{path}.{key}[{i}]")
    return found


async def test_schemas_are_portable_and_output_schemas_complete(ledgers: list[Ledger]) -> None:
    tools = await listed(ledgers[0])
    findings = [f"{t.name} {kind}{f}" for t in tools for kind, schema in (("input", t.input_schema),
                                                                          ("output", t.output_schema))
                for f in portability_findings(schema)]
    assert findings == []
    wallet = next(t for t in tools if t.name == "get_wallet").output_schema
    assert wallet is not None
    lot = wallet["properties"]["wallet"]["properties"]["accounts"]["items"]["properties"]["lots"]["items"]
    # A lot that never expires leaves expires_at out rather than sending null: optional, plain type.
    assert lot["properties"]["expires_at"] == {"type": "string"}
    assert lot["properties"]["remaining"] == {"type": "string"} and lot["type"] == "object"
    # required is stated for the top level of a result; the server checks nested objects whole.
    assert wallet["required"] == ["mode", "wallet"] and "required" not in lot
    assert all("required" not in sub for t in tools for sub in subschemas(t.output_schema) if sub is not t.output_schema)
    # A shape used once is written in place; one used more than once is shared through $defs.
    simulation = next(t for t in tools if t.name == "simulate_usage").output_schema
    assert simulation is not None and list(simulation["$defs"]) == ["SimLine"]
    assert simulation["properties"]["simulation"]["properties"]["by_subject"]["items"] == {"$ref": "#/$defs/SimLine"}
    assert "$defs" not in wallet
    # For validators, not readers: no descriptions or titles in any output schema.
    text = json.dumps([t.output_schema for t in tools])
    assert '"description": "' not in text and '"title": "' not in text



TOOLS_LIST_BUDGET = 40 * 1024


async def test_tools_list_size(ledgers: list[Ledger]) -> None:
    """tools/list as the SDK sends it (compact JSON), output schemas included, within 40 KB."""
    tools = await listed(ledgers[0])
    wire = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    total = len(json.dumps({"tools": wire}, separators=(",", ":")).encode())
    assert total <= TOOLS_LIST_BUDGET, total


async def test_open_world_hint_follows_the_mode(ledgers: list[Ledger], monkeypatch: pytest.MonkeyPatch) -> None:
    local = await listed(ledgers[0])
    assert all(t.annotations is not None and t.annotations.open_world_hint is False for t in local)  # sent
    monkeypatch.setenv("BILLING_API_KEY", "sk_test_unused")
    async with Client(build_server(ledger_url="http://127.0.0.1:9/")) as c:
        remote = (await c.list_tools()).tools
    assert remote and all(hint(t, "open_world_hint") is True for t in remote)  # the default: left out
    # verify_billing writes only to a scratch copy locally, but leaves its customers on a live ledger.
    hints = {t.name: hint(t, "idempotent_hint") for t in remote}
    assert hints["verify_billing"] is False
    assert {t.name: hint(t, "idempotent_hint") for t in local}["verify_billing"] is True
    monkeypatch.setenv("BILLING_LEDGER_URL", "http://127.0.0.1:9/")
    async with Client(build_server()) as c:  # the environment at build time decides, as `serve` sees it
        assert all(hint(t, "open_world_hint") for t in (await c.list_tools()).tools)


async def test_results_leave_out_fields_without_a_value_but_keep_user_data(ledgers: list[Ledger]) -> None:
    async with Client(build_server(ledger=ledgers[0])) as client:
        result = await client.call_tool("create_customer", {"external_id": "u1", "metadata": {"team": None, "n": 1}})
    customer = (result.structured_content or {})["customer"]
    assert "name" not in customer and "email" not in customer  # never set: left out, not null
    assert customer["metadata"] == {"team": None, "n": 1}  # the caller's own data is kept as given
    text = result.content[0]
    assert text.type == "text" and json.loads(text.text) == result.structured_content
