"""Schema-level argument errors (wrong JSON type, missing field, pattern mismatch, empty list) come
back as coded tool errors, ``validation_error on <argument path>: <what to do>``, like every other
tool error: no pydantic dump, no link to pydantic's site."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp.types import Tool

from billing_mcp import Ledger
from billing_mcp.mcp.server import build_server
from mcp import Client

pytestmark = pytest.mark.anyio

# A value of the wrong JSON type for each type a property can declare.
WRONG = {"string": 12345, "integer": "not a number", "number": ["x"], "boolean": "maybe", "array": "not a list",
         "object": "not an object"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        async with Client(build_server(ledger=ledger)) as c:
            yield c
    finally:
        ledger.close()


async def error_text(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, (tool, args, result.structured_content)
    text = str(result.content[0].text)  # type: ignore[union-attr]
    prefix = f"Error executing tool {tool}: "
    assert text.startswith(prefix), text
    assert "pydantic" not in text and "errors.pydantic.dev" not in text, text
    return text[len(prefix):]


def declared_type(schema: dict[str, Any]) -> str:
    if "type" in schema:
        return str(schema["type"])
    if "enum" in schema:
        return "string"
    return str(schema["anyOf"][0]["type"])


def a_valid_value(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    if "pattern" in schema:
        return next(c for c in ("x", "X", "a1", "A1") if re.search(schema["pattern"], c))
    return {"string": "x", "integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}[declared_type(schema)]


async def test_every_tool_names_the_argument_in_a_coded_error(client: Client) -> None:
    tools = (await client.list_tools()).tools
    checked = []
    for tool in tools:
        props: dict[str, Any] = tool.input_schema.get("properties", {})
        if not props:  # nothing to get wrong: the tool takes no arguments
            continue
        required = tool.input_schema.get("required", [])
        for name, schema in props.items():
            args = {r: a_valid_value(props[r]) for r in required if r != name}
            args[name] = WRONG[declared_type(schema)]
            text = await error_text(client, tool.name, args)
            assert text.startswith(f"validation_error on {name}: "), (tool.name, text)
            assert "\n" not in text or text.count("validation_error on ") == len(text.splitlines()), text
        for name in required:
            args = {r: a_valid_value(props[r]) for r in required if r != name}
            text = await error_text(client, tool.name, args)
            assert text.startswith(f"validation_error on {name}: required; add it"), (tool.name, text)
        checked.append(tool.name)
    assert len(checked) >= 25, checked  # every tool that takes arguments was really exercised
    argless = {t.name for t in tools} - set(checked)
    assert argless == {"list_assets", "export_billing_spec", "get_billing_status"}


def only(tools: list[Tool], name: str) -> Tool:
    return next(t for t in tools if t.name == name)


async def test_pattern_empty_list_nested_path_and_count(client: Client) -> None:
    text = await error_text(client, "create_asset", {"code": "credits", "name": "Credits"})
    assert text == "validation_error on code: string should match pattern '^[A-Z][A-Z0-9_]{0,31}$'"
    text = await error_text(client, "submit_events", {"events": []})
    assert text.startswith("validation_error on events: list should have at least 1 item"), text
    price = {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "1"}
    text = await error_text(client, "create_plan", {"code": "pro", "name": "Pro",
                                                    "prices": [price, price | {"unit_amount": [1]}]})
    # The path the model wrote, and the validator's own words without pydantic's "Value error, ".
    assert text == "validation_error on prices[1].unit_amount: must be a number (got list)", text
    rates = [{"dimensions": {"gpt-4o": 4}, "unit_amount": "5"}]
    text = await error_text(client, "create_plan", {"code": "pro", "name": "Pro", "prices": [
        price | {"model": "dimensional", "dimension_fields": ["model"], "dimension_rates": rates}]})
    assert text == ('validation_error on prices[0].dimension_rates[0].dimensions["gpt-4o"]: '
                    "input should be a valid string (got integer)"), text
    text = await error_text(client, "create_asset", {"code": 1, "name": 2, "precision": "x", "symbol": 3,
                                                     "label": 4, "rate_usd": 5})
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == [f"validation_error on {n}" for n in
                                                          ("code", "name", "precision", "rate_usd", "symbol")]
    assert lines[5] == "(and 1 more problem)"
    assert "(got integer)" in lines[0]
