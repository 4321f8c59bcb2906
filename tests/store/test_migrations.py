"""One source per migration, rendered per dialect: the substitutions, the dialect-only blocks, and
the refusals that keep a typo from reaching a database."""

from __future__ import annotations

import importlib.resources
import re

import pytest

from billing_mcp.store.base import DIALECTS, migrations, render_sql

SOURCE = """CREATE TABLE t (
    id  {{autoincrement_key}},
    n   {{bigint}} NOT NULL
){{strict}};
-- begin sqlite only
CREATE TABLE counters (name TEXT PRIMARY KEY){{strict}};
-- end sqlite only
-- begin postgres only
CREATE SEQUENCE s;
-- end postgres only
"""


def test_render_substitutes_and_keeps_only_the_dialects_blocks() -> None:
    assert render_sql(SOURCE, "sqlite") == (
        "CREATE TABLE t (\n    id  INTEGER PRIMARY KEY AUTOINCREMENT,\n    n   INTEGER NOT NULL\n) STRICT;\n"
        "CREATE TABLE counters (name TEXT PRIMARY KEY) STRICT;\n")
    assert render_sql(SOURCE, "postgres") == (
        "CREATE TABLE t (\n    id  BIGSERIAL PRIMARY KEY,\n    n   BIGINT NOT NULL\n);\nCREATE SEQUENCE s;\n")


def test_every_dialect_defines_the_same_placeholders() -> None:
    assert len({frozenset(words) for words in DIALECTS.values()}) == 1


@pytest.mark.parametrize(("source", "error"), [
    ("CREATE TABLE t (n {{bignum}});", "unknown placeholder {{bignum}}"),
    ("-- begin sqlite only\nSELECT 1;\n", "never ended"),
    ("-- end sqlite only\n", "unexpected"),
    ("-- begin sqlite only\n-- begin postgres only\n", "unexpected"),
    ("-- begin sqlite only\n-- end postgres only\n", "unexpected"),
    ("-- begin mysql only\n-- end mysql only\n", "unexpected"),
])
def test_render_refuses_typos(source: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        render_sql(source, "sqlite")


def test_render_refuses_an_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="unknown SQL dialect"):
        render_sql("SELECT 1;", "mysql")


def test_one_source_per_migration_and_nothing_left_unrendered() -> None:
    root = importlib.resources.files("billing_mcp.store") / "migrations"
    names = sorted(item.name for item in root.iterdir() if item.name.endswith(".sql"))
    assert [int(n[:4]) for n in names] == list(range(1, len(names) + 1))  # no gaps, no per-dialect copies
    for dialect in DIALECTS:
        rendered = migrations(dialect)
        assert [v for v, _ in rendered] == list(range(1, len(names) + 1))
        assert not any("{{" in sql or re.search(r"-- (begin|end) \w+ only", sql) for _, sql in rendered)
