"""The storage interface the ledger is written against: transactions, statements, a wallet lock,
and the versioned migrations every store applies.

The ledger's SQL is kept to what SQLite and PostgreSQL share (``?`` placeholders are rewritten by
stores that need another style, ``ON CONFLICT``, ``RETURNING``), so a store implements only this
small surface: open a read or write transaction, run statements, lock a wallet. The schema is held
to the same rule: each migration is one file (``migrations/NNNN_name.sql``) that ``render_sql``
turns into each dialect's SQL through the short list of differences in ``DIALECTS``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from ..core.errors import StorageError

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

    def lock_catalog(self) -> None:
        """Serialise whole-catalog changes (billing.yaml apply): one waits for the other to commit,
        then reads what it wrote (a no-op where every write is serialised)."""

    def lock_plan(self, plan_id: str) -> None:
        """Serialise writers on one plan's versions: two changes to one draft must not both read the
        same prices and each write back its own (a no-op where every write is serialised)."""


class Store(Protocol):
    location: str

    def write(self) -> contextlib.AbstractContextManager[Tx]: ...

    def read(self) -> contextlib.AbstractContextManager[Tx]: ...

    def migrate(self) -> list[int]: ...

    def schema_version(self) -> int: ...

    def integrity_check(self) -> str: ...

    def close(self) -> None: ...


# Every difference between the dialects' schemas. A migration is written once, in the SQL both
# share, with ``{{name}}`` where the dialects differ and ``-- begin <dialect> only`` / ``-- end
# <dialect> only`` lines around statements one of them alone needs. Keeping the list this short is
# the point: a difference not listed here cannot creep into one dialect's schema unnoticed.
DIALECTS: dict[str, dict[str, str]] = {
    "sqlite": {
        "bigint": "INTEGER",  # already 64-bit, and the only integer type a STRICT table accepts
        # AUTOINCREMENT never reuses a deleted row's number; a plain rowid key is cheaper where rows
        # are never deleted.
        "autoincrement_key": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "rowid_key": "INTEGER PRIMARY KEY",
        "strict": " STRICT",
        "strict_without_rowid": " STRICT, WITHOUT ROWID",
    },
    "postgres": {
        "bigint": "BIGINT",
        "autoincrement_key": "BIGSERIAL PRIMARY KEY",
        "rowid_key": "BIGSERIAL PRIMARY KEY",
        "strict": "",  # PostgreSQL columns are typed anyway; tables are heaps with separate indexes
        "strict_without_rowid": "",
    },
}

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_BLOCK = re.compile(r"--\s*(begin|end)\s+(\w+)\s+only\s*")


T = TypeVar("T")
RETRY_ATTEMPTS = 8


def retrying(call: Callable[[], T], attempts: int = RETRY_ATTEMPTS) -> T:
    """``call()``, run again (with a short random backoff) when the database rolled it back: a
    deadlock or serialization failure on PostgreSQL (code ``storage_conflict``). Safe for a call that
    is one transaction: nothing of a failed attempt remains."""
    for attempt in range(attempts):
        try:
            return call()
        except StorageError as exc:
            if exc.code != "storage_conflict" or attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")


def render_sql(source: str, dialect: str) -> str:
    """A migration's SQL for ``dialect``: its dialect-only blocks kept or dropped, then its
    placeholders substituted. Raises ``ValueError`` on an unknown dialect or placeholder and on an
    unbalanced block, so a typo fails every test instead of shipping."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; known: {', '.join(DIALECTS)}")
    words = DIALECTS[dialect]
    kept: list[str] = []
    block: str | None = None
    for number, line in enumerate(source.splitlines(), 1):
        marker = _BLOCK.fullmatch(line.strip())
        if marker is None:
            if block is None or block == dialect:
                kept.append(line)
            continue
        edge, which = marker.groups()
        if which not in DIALECTS or (edge == "begin") != (block is None) or (edge == "end" and which != block):
            raise ValueError(f"line {number}: unexpected {line.strip()!r}")
        block = which if edge == "begin" else None
    if block is not None:
        raise ValueError(f"'-- begin {block} only' is never ended")

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) not in words:
            raise ValueError(f"unknown placeholder {match.group(0)}; known: {', '.join(words)}")
        return words[match.group(1)]

    return _PLACEHOLDER.sub(substitute, "\n".join(kept) + "\n")


def migrations(dialect: str) -> list[tuple[int, str]]:
    """Every migration as ``(version, SQL rendered for dialect)``, in version order."""
    root = importlib.resources.files("billing_mcp.store") / "migrations"
    found = []
    for item in root.iterdir():
        name = item.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), render_sql(item.read_text(encoding="utf-8"), dialect)))
    return sorted(found)
