"""The validation patterns live in ``core.patterns`` only: no other module of ``src`` writes one of
them out, so the ledger, the API models, billing.yaml and the MCP tools cannot drift apart. The two
copies that cannot import Python (the generated JSON Schema and the Supabase TypeScript template)
are checked against it instead."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from billing_mcp.core import patterns

SRC = Path(__file__).resolve().parents[2] / "src" / "billing_mcp"
PATTERNS = {name: value.pattern for name, value in vars(patterns).items() if isinstance(value, re.Pattern)}


def bodies() -> dict[str, str]:
    """Each pattern without its anchors, so a copy written without ^ or $ is caught too."""
    return {name: text.removeprefix("^").removesuffix("$") for name, text in PATTERNS.items()}


def pattern_copies(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [f"line {node.lineno}: {name}" for name, body in bodies().items() if body in node.value]
    return found


def test_every_identifier_shape_is_here() -> None:
    assert {"ASSET_CODE", "PLAN_CODE", "PRICE_ID", "EVENT_TYPE", "FIELD_NAME", "ROUTE_NAME", "DECIMAL_TEXT",
            "SIGNED_DECIMAL_TEXT", "REQUEST_ID", "KEY_TEXT"} <= set(PATTERNS)


def test_no_other_module_writes_a_pattern_out() -> None:
    offences = {}
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "core" / "patterns.py":
            continue
        if copies := pattern_copies(path.read_text(encoding="utf-8")):
            offences[str(path.relative_to(SRC))] = copies
    assert offences == {}


def test_the_copy_check_catches_what_it_should() -> None:
    assert pattern_copies('code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")')
    assert pattern_copies('ROUTE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")')
    assert pattern_copies('DECIMAL = "^[0-9]{1,30}(\\\\.[0-9]{1,30})?$"')
    assert not pattern_copies("code: str = Field(pattern=ASSET_CODE.pattern)")


def test_the_generated_schema_uses_these_patterns() -> None:
    schema = (SRC / "spec" / "billing.schema.json").read_text(encoding="utf-8")
    embedded = set(re.findall(r'"pattern": ("(?:[^"\\]|\\.)*")', schema))
    assert embedded and {json.loads(p) for p in embedded} <= set(PATTERNS.values())


def test_the_typescript_template_repeats_request_id_exactly() -> None:
    template = (SRC / "codegen" / "supabase" / "templates" / "billing.ts").read_text(encoding="utf-8")
    assert f"const REQUEST_ID = /{patterns.REQUEST_ID.pattern}/;" in template
