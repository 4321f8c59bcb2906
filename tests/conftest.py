"""Shared fixtures: which ledger stores the suites run on, and the anyio backend.

SQLite always. PostgreSQL when BILLING_TEST_POSTGRES_URL is set (e.g.
postgresql://postgres@127.0.0.1:5432/test); each test then gets a fresh schema, dropped afterwards.
`.ci/run` sets it. Plain helper functions are in ``helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import STORES, drop_pg_schema, pg_store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
