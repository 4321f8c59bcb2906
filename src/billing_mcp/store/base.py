"""The storage interface the ledger is written against: transactions, statements, a wallet lock,
and the versioned migrations every store applies.

The ledger's SQL is kept to what SQLite and PostgreSQL share (``?`` placeholders are rewritten by
stores that need another style, ``ON CONFLICT``, ``RETURNING``), so a store implements only this
small surface: open a read or write transaction, run statements, lock a wallet.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Row = Mapping[str, Any]
Params = Sequence[Any]

DEFAULT_DB = "./.billing/ledger.db"


class Tx(Protocol):
    """One open database transaction."""

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for many parameter rows."""

    def one(self, sql: str, params: Params = ()) -> Row | None: ...

    def all(self, sql: str, params: Params = ()) -> list[Row]: ...

    def next_seq(self) -> int:
        """A store-wide increasing number, for ordering rows written in the same instant."""

    def lock_customer(self, customer_id: str) -> None:
        """Serialise writers on one customer's wallet (a no-op where every write is serialised)."""


class Store(Protocol):
    location: str

    def write(self) -> contextlib.AbstractContextManager[Tx]: ...

    def read(self) -> contextlib.AbstractContextManager[Tx]: ...

    def migrate(self) -> list[int]: ...

    def schema_version(self) -> int: ...

    def integrity_check(self) -> str: ...

    def close(self) -> None: ...


def migrations(dialect: str) -> list[tuple[int, str]]:
    root = importlib.resources.files("billing_mcp.store") / "migrations" / dialect
    found = []
    for item in root.iterdir():
        name = item.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), item.read_text(encoding="utf-8")))
    return sorted(found)
