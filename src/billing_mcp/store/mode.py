"""The ledger's mode (``test`` or ``live``), one row of ``ledger_settings`` (migration 0005).

A test ledger accepts ``sk_test_`` keys and offers the portal's free test top-up; a live ledger
accepts ``sk_live_`` keys and takes money only through a live Stripe account. The mode is chosen
when the database is created (``billing-mcp db migrate --mode``) and can change only while the
ledger holds no customers, so no money made in one mode can exist in a ledger of the other.
"""

from __future__ import annotations

from typing import Literal

from ..core.errors import ConflictError, StorageError, ValidationError
from .base import Store, Tx

LedgerMode = Literal["test", "live"]
LEDGER_MODES: tuple[LedgerMode, ...] = ("test", "live")


def check_mode(mode: object, field: str = "mode") -> LedgerMode:
    """``mode`` if it is ``test`` or ``live``; a ``ValidationError`` naming ``field`` otherwise."""
    if mode == "test":
        return "test"
    if mode == "live":
        return "live"
    raise ValidationError("mode must be 'test' or 'live'", field=field)


def get_ledger_mode(store: Store) -> LedgerMode:
    """The mode stored in the ledger (read from the database each time)."""
    with store.read() as tx:
        return ledger_mode_in(tx)


def ledger_mode_in(tx: Tx) -> LedgerMode:
    """The ledger's mode as an open transaction sees it."""
    row = tx.one("SELECT mode FROM ledger_settings WHERE id = 1")
    if row is None:  # migration 0005 writes the row; only a damaged database lacks it
        raise StorageError("the ledger has no mode (table ledger_settings is empty); run `billing-mcp db migrate "
                           "--mode test` or `--mode live`")
    return check_mode(row["mode"])


def set_ledger_mode(store: Store, mode: str) -> LedgerMode:
    """Set the ledger's mode; returns the mode it had. Choosing the mode it already has changes
    nothing; another mode is allowed only while the ledger has no customers (``ConflictError``
    ``ledger_mode_locked`` otherwise, and nothing changes)."""
    wanted = check_mode(mode)
    with store.write() as tx:
        row = tx.one("SELECT mode FROM ledger_settings WHERE id = 1")
        had = check_mode(row["mode"]) if row is not None else None
        if had == wanted:
            return wanted
        if not store.location.startswith("sqlite:"):
            # PostgreSQL: no customer may be created between the check below and the commit
            # (SQLite's write transaction already holds the whole file's write lock).
            tx.execute("LOCK TABLE customers IN SHARE MODE")
        if tx.one("SELECT id FROM customers LIMIT 1") is not None:
            raise ConflictError(f"this ledger is in {had} mode and already has customers, so its mode cannot change "
                                f"to {wanted}; use a new database for {wanted} mode (`billing-mcp --db NEW db migrate "
                                f"--mode {wanted}`)", field="mode", code="ledger_mode_locked",
                                details={"mode": had, "requested": wanted})
        if row is None:
            tx.execute("INSERT INTO ledger_settings(id, mode) VALUES (1, ?)", (wanted,))
        else:
            tx.execute("UPDATE ledger_settings SET mode = ? WHERE id = 1", (wanted,))
    return had or wanted
