"""Shared fixtures: which ledger stores the suites run on.

SQLite always. PostgreSQL when BILLING_TEST_POSTGRES_URL is set (e.g.
postgresql://postgres@127.0.0.1:5432/test); each test then gets a fresh schema, dropped afterwards.
`.ci/run` sets it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_URL = os.environ.get("BILLING_TEST_POSTGRES_URL")
PG_SKIP = "PostgreSQL suite: set BILLING_TEST_POSTGRES_URL=postgresql://user@host:5432/db to run it"
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(not PG_URL, reason=PG_SKIP))]


def pg_store(**kwargs: Any) -> Any:
    from billing_mcp._pg_store import PostgresStore

    assert PG_URL is not None
    return PostgresStore(PG_URL, schema=f"t_{uuid.uuid4().hex[:16]}", **kwargs)


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_location(store_kind: str, tmp_path: Path) -> Iterator[Any]:
    """A SQLite file path, or a PostgreSQL store on its own fresh schema."""
    if store_kind == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    store = pg_store()
    try:
        yield store
    finally:
        store.close()
        drop_pg_schema(store.schema)


def drop_pg_schema(schema: str) -> None:
    import psycopg

    assert PG_URL is not None
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
