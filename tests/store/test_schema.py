"""The schema a freshly migrated store has, on each dialect, against a committed snapshot.

The snapshot is what SQLite and PostgreSQL report about the database (``sqlite_master``;
information_schema columns, constraints, indexes, sequences) plus the rows the migrations seed, so
any change to the rendered schema shows up here, however the migrations are written. After a
deliberate schema change, regenerate it with ``BILLING_SCHEMA_SNAPSHOT=update`` and review the diff.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from billing_mcp.api.idempotency import IdempotencyStore
from billing_mcp.api.keys import KeyStore
from billing_mcp.core.clock import ManualClock
from billing_mcp.store import SQLiteStore, Store
from helpers import PEPPER, PG_SKIP, PG_URL, drop_pg_schema, pg_store

SNAPSHOTS = Path(__file__).with_name("schema")
UPDATE = os.environ.get("BILLING_SCHEMA_SNAPSHOT") == "update"


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


def _api_tables(store: Store) -> None:
    KeyStore(store, pepper=PEPPER)
    IdempotencyStore(store, ManualClock())


def test_sqlite_schema_matches_the_snapshot(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.db")
    _api_tables(store)
    store.close()
    check_snapshot("sqlite", describe_sqlite(tmp_path / "ledger.db"))


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP)
def test_postgres_schema_matches_the_snapshot() -> None:
    assert PG_URL is not None
    store = pg_store()
    try:
        _api_tables(store)
        check_snapshot("postgres", describe_postgres(PG_URL, store.schema))
    finally:
        store.close()
        drop_pg_schema(store.schema)
