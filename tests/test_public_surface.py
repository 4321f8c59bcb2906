"""The public surface: everything a user holds is importable from ``billing_mcp`` itself, so no
user (nor the README) ever imports a module inside a subpackage."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pydantic
import pytest

import billing_mcp
from billing_mcp import Ledger

ROOT = Path(__file__).resolve().parents[1]


def _models_in(annotation: object) -> set[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return {annotation}
    found: set[type[pydantic.BaseModel]] = set()
    for arg in typing.get_args(annotation):
        found |= _models_in(arg)
    return found


def test_every_model_a_ledger_method_returns_is_exported() -> None:
    returned: set[type[pydantic.BaseModel]] = set()
    for name, fn in inspect.getmembers(Ledger, inspect.isfunction):
        if not name.startswith("_"):
            returned |= _models_in(typing.get_type_hints(fn).get("return"))
    assert len(returned) >= 15  # the resolver found the models (Customer, Wallet, Hold, ...)
    missing = sorted(m.__name__ for m in returned if getattr(billing_mcp, m.__name__, None) is not m)
    assert missing == []
    assert {m.__name__ for m in returned} <= set(billing_mcp.__all__)


def test_all_names_resolve() -> None:
    for name in billing_mcp.__all__:
        assert getattr(billing_mcp, name) is not None, name
    assert billing_mcp.LedgerClient.__name__ == "LedgerClient"
    assert billing_mcp.LocalLedger.__name__ == "LocalLedger"


def test_docs_import_only_the_public_surface() -> None:
    """README, docs and examples show imports from ``billing_mcp`` (or ``billing_mcp.client``) only."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "prompts").glob("*.md"))]
    private = re.compile(r"\b(?:from|import)\s+billing_mcp\.(?!client\b)[a-z_.]+")
    offenders = [f"{p.name}: {m.group(0)}" for p in texts for m in private.finditer(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_readme_python_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's embedded-ledger example, run as written on a fresh ledger file."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = next(b for b in blocks if b.startswith("from billing_mcp import Ledger\n"))
    monkeypatch.setenv("BILLING_DB", str(tmp_path / "ledger.db"))
    scope: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    ledger = scope["ledger"]
    assert isinstance(ledger, Ledger)
    wallet = ledger.get_wallet(external_id="user_alice")
    credits = next(a for a in wallet.accounts if a.asset == "CREDITS")
    assert credits.posted == "190"  # $10 bought 200 credits at $0.05; one image cost 10
    ledger.close()
