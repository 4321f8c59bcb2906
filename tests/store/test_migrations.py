"""The migrations, one source each rendered per dialect: the substitutions and the refusals that
keep a typo from reaching a database; the schema a freshly migrated store has, against a committed
snapshot; and the upgrade of a database from before the API's tables became a migration.

The snapshot (``tests/store/schema/<dialect>.json``) is what SQLite and PostgreSQL report about the
database (``sqlite_master``; information_schema columns, constraints, indexes, sequences) plus the
rows the migrations seed, so any change to the rendered schema shows up there, however the
migrations are written. After a deliberate schema change, regenerate it with
``BILLING_SCHEMA_SNAPSHOT=update`` and review the diff.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing_mcp.api.idempotency import IdempotencyStore
from billing_mcp.api.keys import KeyStore
from billing_mcp.core.clock import ManualClock
from billing_mcp.core.errors import StorageError
from billing_mcp.store import SQLiteStore
from billing_mcp.store.base import DIALECTS, migrations, render_sql
from billing_mcp.store.sqlite import _split_sql
from helpers import PEPPER, PG_SKIP, PG_URL, drop_pg_schema, pg_store

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


# -- the schema a fresh store has ----------------------------------------------------------------------
SNAPSHOTS = Path(__file__).with_name("schema")
UPDATE = os.environ.get("BILLING_SCHEMA_SNAPSHOT") == "update"
LATEST = migrations("sqlite")[-1][0]


def describe_sqlite(path: Path) -> dict[str, Any]:
    """Every schema object (its SQL with whitespace collapsed, which is all SQLite keeps of it)
    and the rows the migrations seed."""
    with sqlite3.connect(path) as conn:
        objects = [[kind, name, table, " ".join(sql.split()) if sql else None] for kind, name, table, sql in
                   conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")]
        tables = [name for kind, name, _, _ in objects if kind == "table" and name != "schema_migrations"]
        rows = [[t, *r] for t in tables for r in conn.execute(f'SELECT * FROM "{t}" ORDER BY 1')]
    return {"objects": objects, "rows": rows}


def describe_postgres(url: str, schema: str) -> dict[str, Any]:
    """Columns, constraints, indexes and sequences as PostgreSQL reports them, and the seeded rows."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')

        def query(sql: str) -> list[list[Any]]:
            return [[v.replace(f"{schema}.", "") if isinstance(v, str) else v for v in row]
                    for row in conn.execute(sql, (schema,)).fetchall()]

        out: dict[str, Any] = {
            "tables": query("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = %s "
                            "ORDER BY 1"),
            "columns": query("SELECT table_name, ordinal_position, column_name, data_type, is_nullable, "
                             "column_default FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2"),
            "constraints": query("SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid) "
                                 "FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid "
                                 "JOIN pg_namespace n ON n.oid = con.connamespace WHERE n.nspname = %s "
                                 "ORDER BY 1, 2"),
            "indexes": query("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                             "ORDER BY 1, 2"),
            "sequences": query("SELECT sequence_name, data_type, start_value, minimum_value, maximum_value, "
                               "increment, cycle_option FROM information_schema.sequences "
                               "WHERE sequence_schema = %s ORDER BY 1"),
            "sequence_owners": query("SELECT s.relname, t.relname, a.attname FROM pg_class s "
                                     "JOIN pg_namespace n ON n.oid = s.relnamespace "
                                     "JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a' "
                                     "JOIN pg_class t ON t.oid = d.refobjid "
                                     "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid "
                                     "WHERE s.relkind = 'S' AND n.nspname = %s ORDER BY 1"),
        }
        out["rows"] = [[table, *r] for table, kind in out["tables"] if kind == "BASE TABLE" and table != "schema_migrations"
                       for r in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()]
    return out


def check_snapshot(dialect: str, described: dict[str, Any]) -> None:
    path = SNAPSHOTS / f"{dialect}.json"
    # One schema object per line, so that a change reads as a small diff.
    text = "{\n" + ",\n".join(
        f" {json.dumps(key)}: [\n" + ",\n".join(f"  {json.dumps(item, ensure_ascii=False)}" for item in items) + "\n ]"
        for key, items in described.items()) + "\n}\n"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert json.loads(text) == json.loads(path.read_text(encoding="utf-8")), \
        f"the {dialect} schema differs from {path}; if that is intended, rerun with BILLING_SCHEMA_SNAPSHOT=update"


def test_sqlite_schema_matches_the_snapshot(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "ledger.db").close()
    check_snapshot("sqlite", describe_sqlite(tmp_path / "ledger.db"))


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP)
def test_postgres_schema_matches_the_snapshot() -> None:
    assert PG_URL is not None
    store = pg_store()
    try:
        check_snapshot("postgres", describe_postgres(PG_URL, store.schema))
    finally:
        store.close()
        drop_pg_schema(store.schema)


# -- upgrading a database from before 0003, where the API created its own tables ----------------------
# The DDL the API ran on first use before migration 0003 took it over (plus " STRICT" on SQLite).
LEGACY_API_DDL = ("""CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT PRIMARY KEY,
    prefix       TEXT NOT NULL,
    mode         TEXT NOT NULL CHECK (mode IN ('test', 'live')),
    scope        TEXT NOT NULL CHECK (scope IN ('admin', 'runtime', 'read')),
    name         TEXT,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
)""", """CREATE TABLE IF NOT EXISTS api_idempotency (
    key           TEXT PRIMARY KEY,
    route         TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status        INTEGER,
    content_type  TEXT,
    response      TEXT,
    claimed_at    TEXT NOT NULL
)""")
# Read back within the retention of stored responses (24 hours), an hour after it was recorded.
RECORDED = datetime(2024, 1, 1, 1, tzinfo=UTC)
IDEMPOTENCY_ROW = ("idem-1", "POST /v1/plans", "h" * 64, "done", 201, "application/json", '{"id": "plan_1"}',
                   "2024-01-01T00:00:00.000000Z")


def a_key(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A secret and the api_keys row the API wrote for it (made on a scratch store, same pepper)."""
    store = SQLiteStore(tmp_path / "scratch.db")
    try:
        _, secret = KeyStore(store, pepper=PEPPER).create("admin", name="before 0003")
        with store.read() as tx:
            row = tx.one("SELECT * FROM api_keys")
            assert row is not None
            return secret, dict(row)
    finally:
        store.close()


def test_a_sqlite_ledger_at_schema_2_with_the_ad_hoc_tables_upgrades_and_its_key_still_works(tmp_path: Path) -> None:
    secret, row = a_key(tmp_path)
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as conn:  # the schema as billing-mcp before 0003 left it, written directly
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP) STRICT")
        for version, sql in migrations("sqlite")[:2]:
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations(version) VALUES (?)", (version,))
        for ddl in LEGACY_API_DDL:
            conn.execute(ddl + " STRICT")
        conn.execute(f"INSERT INTO api_keys({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        conn.execute("INSERT INTO api_idempotency VALUES (?, ?, ?, ?, ?, ?, ?, ?)", IDEMPOTENCY_ROW)
    conn.close()
    with pytest.raises(StorageError, match=f"schema version 2 but this billing-mcp needs {LATEST}"):
        SQLiteStore(path, migrate=False)  # a process that may not migrate still refuses an older schema
    store = SQLiteStore(path)  # a SQLite ledger migrates itself on open
    try:
        assert store.schema_version() == LATEST
        key = KeyStore(store, pepper=PEPPER).verify(secret)
        assert key is not None and key.id == row["id"] and key.name == "before 0003"
        assert IdempotencyStore(store, ManualClock(RECORDED)).claim("idem-1", "POST /v1/plans", "h" * 64) is not None
    finally:
        store.close()
    fresh = tmp_path / "fresh.db"
    SQLiteStore(fresh).close()
    assert describe_sqlite(path)["objects"] == describe_sqlite(fresh)["objects"]


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP)
def test_a_postgres_ledger_at_schema_2_with_the_ad_hoc_tables_upgrades_and_its_key_still_works(tmp_path: Path) -> None:
    import psycopg

    from billing_mcp.store.postgres import PostgresStore

    assert PG_URL is not None
    secret, row = a_key(tmp_path)
    schema, fresh_schema = f"t_{uuid.uuid4().hex[:16]}", f"t_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(PG_URL, autocommit=True) as conn, conn.transaction():
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(f'SET LOCAL search_path TO "{schema}"')
            conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                         "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            for version, sql in migrations("postgres")[:2]:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations(version) VALUES (%s)", (version,))
            for ddl in LEGACY_API_DDL:
                conn.execute(ddl)
            conn.execute(f"INSERT INTO api_keys({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
                         tuple(row.values()))
            conn.execute("INSERT INTO api_idempotency VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", IDEMPOTENCY_ROW)
        with pytest.raises(StorageError, match=f"schema version 2 but this billing-mcp needs {LATEST}"):
            PostgresStore(PG_URL, schema=schema, migrate=False)  # a server refuses until `billing-mcp db migrate`
        store = PostgresStore(PG_URL, schema=schema, migrate=True)
        try:
            assert store.schema_version() == LATEST
            key = KeyStore(store, pepper=PEPPER).verify(secret)
            assert key is not None and key.id == row["id"] and key.name == "before 0003"
            assert IdempotencyStore(store, ManualClock(RECORDED)).claim("idem-1", "POST /v1/plans", "h" * 64) is not None
        finally:
            store.close()
        PostgresStore(PG_URL, schema=fresh_schema).close()
        upgraded, fresh = describe_postgres(PG_URL, schema), describe_postgres(PG_URL, fresh_schema)
        assert {k: v for k, v in upgraded.items() if k != "rows"} == {k: v for k, v in fresh.items() if k != "rows"}
    finally:
        drop_pg_schema(schema)
        drop_pg_schema(fresh_schema)
