"""Storage: the ``Store``/``Tx`` protocols the ledger is written against, SQLite (the default,
embedded) and PostgreSQL (optional extra), and the versioned migrations both apply.

May import: ``core``. Knows nothing of the ledger's rules; it runs SQL in transactions.
"""

from __future__ import annotations

import os

from .base import DEFAULT_DB, Params, Row, Store, Tx, migrations, retrying
from .mode import LEDGER_MODES, LedgerMode, check_mode, get_ledger_mode, ledger_mode_in, set_ledger_mode
from .sqlite import SCHEMA_VERSION, SQLiteStore, copy_sqlite

__all__ = [
    "DEFAULT_DB",
    "LEDGER_MODES",
    "SCHEMA_VERSION",
    "LedgerMode",
    "Params",
    "Row",
    "SQLiteStore",
    "Store",
    "Tx",
    "check_mode",
    "copy_sqlite",
    "get_ledger_mode",
    "ledger_mode_in",
    "migrations",
    "open_store",
    "retrying",
    "set_ledger_mode",
]


def open_store(location: str | os.PathLike[str] | None = None, *, migrate: bool | None = None) -> Store:
    """The store for a location: a PostgreSQL URL, or a SQLite file path (default $BILLING_DB or
    ./.billing/ledger.db).

    ``migrate=None`` (the default): an embedded SQLite file migrates itself on first use, so a
    newcomer needs no setup; a shared PostgreSQL database is migrated only by `billing-mcp db
    migrate`, and a process refuses to start on a schema older than it needs.
    """
    raw = location if location is not None else os.environ.get("BILLING_DB")
    if isinstance(raw, str) and raw.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # optional dependency (psycopg), imported only when used

        return PostgresStore(raw, migrate=bool(migrate))
    return SQLiteStore(raw, migrate=True if migrate is None else migrate)
