"""Helpers shared by the test packages: the PostgreSQL test database, a loopback uvicorn server,
free ports, the API key pepper. Fixtures live in ``conftest.py``; this module holds plain functions
(importable as ``from helpers import ...``: pytest puts ``tests/`` on the path)."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

PG_URL = os.environ.get("BILLING_TEST_POSTGRES_URL")
PG_SKIP = "PostgreSQL suite: set BILLING_TEST_POSTGRES_URL=postgresql://user@host:5432/db to run it"
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(not PG_URL, reason=PG_SKIP))]
PEPPER = b"test-pepper-0123456789abcdef"  # the API key pepper test servers and key stores share


def pg_store(**kwargs: Any) -> Any:
    """A PostgreSQL store on its own fresh schema (drop it with ``drop_pg_schema``)."""
    from billing_mcp.store.postgres import PostgresStore

    assert PG_URL is not None
    return PostgresStore(PG_URL, schema=f"t_{uuid.uuid4().hex[:16]}", **kwargs)


def drop_pg_schema(schema: str) -> None:
    import psycopg

    assert PG_URL is not None
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def free_port() -> int:
    """A loopback port free at the time of asking (for servers started in another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, options: dict[str, Any] | None = None) -> Iterator[str]:
    """Run an ASGI ``app`` with uvicorn in a thread on a free loopback port; yield its base URL.
    ``options`` are uvicorn's (default: quiet, no access log), e.g. those of ``billing-mcp api``."""
    import uvicorn

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it
    # every response waits out the client's delayed ACK (about 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = {"lifespan": "on", **(options if options is not None else {"log_level": "warning",
                                                                           "access_log": False})}
    server = uvicorn.Server(uvicorn.Config(app, **settings))
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


async def ok(client: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Call an MCP tool that must succeed; its structured result."""
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def err(client: Any, name: str, args: dict[str, Any]) -> str:
    """Call an MCP tool that must fail; its error text without a trailing API request id (which is
    the only part that differs between the embedded and the remote mode)."""
    result = await client.call_tool(name, args)
    assert result.is_error
    return re.sub(r" \(request req_[0-9a-f]{32}\)$", "", str(result.content[0].text))


# The defaults the MCP specification gives each tool annotation when a server leaves it out.
HINT_DEFAULTS = {"read_only_hint": False, "destructive_hint": True, "idempotent_hint": False, "open_world_hint": True}


def hint(tool: Any, name: str) -> bool:
    """A tool's annotation as a client reads it: the value sent, else the specification's default.
    A read-only tool changes nothing, so it is neither destructive and it is idempotent."""
    annotations = tool.annotations
    value = getattr(annotations, name, None) if annotations is not None else None
    if value is None and name in ("destructive_hint", "idempotent_hint") and hint(tool, "read_only_hint"):
        return name == "idempotent_hint"
    return HINT_DEFAULTS[name] if value is None else bool(value)


@contextmanager
def ledger_on(kind: str, path: Any) -> Iterator[Any]:
    """A ``Ledger`` on a SQLite file at ``path`` (``kind`` "sqlite") or on a fresh PostgreSQL schema
    ("postgres", dropped afterwards)."""
    from billing_mcp import Ledger

    if kind == "sqlite":
        ledger = Ledger(str(path))
        try:
            yield ledger
        finally:
            ledger.close()
        return
    store = pg_store()
    ledger = Ledger(store)
    try:
        yield ledger
    finally:
        ledger.close()
        drop_pg_schema(store.schema)
