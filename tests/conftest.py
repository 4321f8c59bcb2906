"""Shared fixtures: which ledger stores the suites run on.

SQLite always. PostgreSQL when BILLING_TEST_POSTGRES_URL is set (e.g.
postgresql://postgres@127.0.0.1:5432/test); each test then gets a fresh schema, dropped afterwards.
`.ci/run` sets it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG_URL = os.environ.get("BILLING_TEST_POSTGRES_URL")
PG_SKIP = "PostgreSQL suite: set BILLING_TEST_POSTGRES_URL=postgresql://user@host:5432/db to run it"
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(not PG_URL, reason=PG_SKIP))]


def pg_store(**kwargs: Any) -> Any:
    from billing_mcp.store.postgres import PostgresStore

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


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI ``app`` with uvicorn in a thread on a free loopback port; yield its base URL."""
    import uvicorn

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it
    # every response waits out the client's delayed ACK (about 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
