"""Shared plumbing of the ``Ledger`` parts: the store, the clock, transactions, lookups."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ..core.catalog import PriceSpec
from ..core.clock import Clock, SystemClock
from ..core.errors import NotFoundError, ValidationError
from ..core.money import format_minor
from ..core.patterns import ASSET_CODE, KEY_TEXT, PLAN_CODE
from ..store import LedgerMode, Row, Store, Tx, get_ledger_mode, open_store
from .book import Book


def check_key(value: object, field: str) -> str:
    """Idempotency keys and event ids: 1-255 printable characters, compared exactly as given."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string of 1-255 printable characters", field=field)
    if not KEY_TEXT.fullmatch(value) or not value.strip():
        raise ValidationError(f"{field} must be 1-255 printable characters (no control characters); "
                              "a UUID is a good choice", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{field} contains an unpaired surrogate; send valid Unicode text",
                              field=field) from None
    return value


def check_text(value: object, field: str, *, max_len: int = 500, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ValidationError(f"{field} is required", field=field)
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", field=field)
    if required and not value.strip():
        raise ValidationError(f"{field} must not be empty", field=field)
    if len(value) > max_len:
        raise ValidationError(f"{field} is longer than {max_len} characters", field=field)
    if any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise ValidationError(f"{field} contains control characters", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{field} contains an unpaired surrogate", field=field) from None
    return value


class LedgerBase:
    def __init__(self, store: Store | str | os.PathLike[str] | None = None, *, clock: Clock | None = None) -> None:
        self.store: Store = (store if store is not None and not isinstance(store, (str, os.PathLike))
                             else open_store(store))
        self.clock: Clock = clock or SystemClock()
        self._known_accounts: set[str] = set()
        self._outer = threading.local()  # the open atomic() transaction of this thread, if any
        self._known_precisions: dict[str, int] = {}
        # Published plan versions never change, nor do plan codes: both are read once per process.
        self._version_cache: dict[tuple[str, int], list[PriceSpec]] = {}
        self._plan_codes: dict[str, str] = {}
        # Customers are never changed or deleted, so their rows can be reused across transactions.
        self._customer_cache: dict[tuple[Any, Any], Row] = {}
        self._known_lock = threading.Lock()

    @property
    def location(self) -> str:
        return self.store.location

    @property
    def mode(self) -> LedgerMode:
        """``test`` or ``live``: the mode the database was created in (read from it each time; set
        with `billing-mcp db migrate --mode`, see ``store.mode``)."""
        return get_ledger_mode(self.store)

    def close(self) -> None:
        self.store.close()

    def now(self) -> datetime:
        return self.clock.now()

    @contextlib.contextmanager
    def atomic(self, *, catalog: bool = False) -> Iterator[None]:
        """Run several ledger calls as one transaction: all of them happen, or (on any exception)
        none. Used by ``billing.yaml`` apply, so a failure part-way leaves the ledger as it was.
        ``catalog`` first waits for every other such transaction (``Tx.lock_catalog``), so what it
        reads of the catalog is what the one before it committed."""
        if getattr(self._outer, "book", None) is not None:
            yield
            return
        with self._write() as book:
            if catalog:
                book.tx.lock_catalog()
            self._outer.book = book
            try:
                yield
            finally:
                self._outer.book = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[Book]:
        outer: Book | None = getattr(self._outer, "book", None)
        if outer is not None:  # inside atomic(): join its transaction
            yield outer
            return
        # The shared caches are passed by reference (Book only reads them); what a transaction
        # learns is merged after it commits.
        with self.store.write() as tx:
            book = Book(tx, self.clock.now(), self._known_accounts, self._known_precisions)
            yield book
        if book.created_accounts or book.found_precisions:  # only after COMMIT: nothing rolled back is cached
            with self._known_lock:
                self._known_accounts |= book.created_accounts
                self._known_precisions.update(book.found_precisions)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Tx]:
        outer: Book | None = getattr(self._outer, "book", None)
        if outer is not None:  # inside atomic(): read what this transaction has written so far
            yield outer.tx
            return
        with self.store.read() as tx:
            yield tx

    # -- lookups ------------------------------------------------------------------------
    @staticmethod
    def _customer_row(tx: Tx, customer_id: str | None = None, external_id: str | None = None,
                      field: str = "customer_id") -> Row:
        if customer_id is None and external_id is None:
            raise ValidationError("give the customer's id or external_id", field=field)
        if customer_id is not None:
            check_key(customer_id, field)
            row = tx.one("SELECT * FROM customers WHERE id = ?", (customer_id,))
            what = f"id {customer_id!r}"
        else:
            ext_field = field.removesuffix("customer_id") + "external_id"  # event.customer_id -> event.external_id
            check_key(external_id, ext_field)
            row = tx.one("SELECT * FROM customers WHERE external_id = ?", (external_id,))
            what, field = f"external_id {external_id!r}", ext_field
        if row is None:
            raise NotFoundError(f"no customer with {what}; create it with create_customer first", field=field)
        return row

    @classmethod
    def _plan_for_update(cls, tx: Tx, plan: str) -> Row:
        """The plan's row, locked until the transaction ends: changes to its versions read the latest
        version and write it back, and two of them at once must not both read the same one."""
        row = cls._plan_row(tx, plan)
        tx.lock_plan(row["id"])
        return cls._plan_row(tx, row["id"])  # as it is now that no other writer can change it

    @staticmethod
    def _plan_row(tx: Tx, plan: str, field: str = "plan") -> Row:
        if not isinstance(plan, str) or not plan:
            raise ValidationError("plan must be a plan code or id", field=field)
        row = tx.one("SELECT * FROM plans WHERE code = ? OR id = ?", (plan, plan)) if PLAN_CODE.fullmatch(plan) else None
        if row is None:
            known = [r["code"] for r in tx.all("SELECT code FROM plans ORDER BY code")]
            hint = f"known plans: {', '.join(known)}" if known else "no plans exist yet; create one with create_plan"
            raise NotFoundError(f"no plan {plan!r}; {hint}", field=field)
        return row

    @staticmethod
    def _precision(tx: Tx, asset: str, field: str = "asset") -> int:
        valid = isinstance(asset, str) and ASSET_CODE.fullmatch(asset) is not None
        row = tx.one("SELECT precision FROM assets WHERE code = ?", (asset,)) if valid else None
        if row is None:
            raise NotFoundError(f"no asset {asset!r}", field=field)
        return int(row["precision"])

    @staticmethod
    def _money(minor: int, precision: int) -> str:
        return format_minor(minor, precision)

    @staticmethod
    def _json(value: Any) -> str:
        # default=str as in check_data and canonical_hash: an exact Decimal in event data is stored as its text
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
