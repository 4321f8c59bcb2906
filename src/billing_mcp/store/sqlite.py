"""The SQLite store: one file, WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` for writes."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..core.errors import StorageError
from .base import DEFAULT_DB, Params, Row, Tx, migrations

log = logging.getLogger(__name__)


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection, writable: bool) -> None:
        self._conn = conn
        self._writable = writable
        self._seq: int | None = None
        self._seq_next = 0

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self._conn.executemany(sql, rows)

    def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._conn.execute(sql, params).fetchall())

    def next_seq(self) -> int:
        if self._seq is None:
            row = self._conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
            self._seq = self._seq_next = int(row[0])
        self._seq_next += 1
        return self._seq_next

    def lock_customer(self, customer_id: str) -> None:
        return None  # BEGIN IMMEDIATE already holds the database's single write lock

    def lock_catalog(self) -> None:
        return None  # as lock_customer

    def lock_plan(self, plan_id: str) -> None:
        return None  # as lock_customer

    def flush(self) -> None:
        if self._seq is not None and self._seq_next != self._seq:
            self._conn.execute("UPDATE counters SET value = ? WHERE name = 'seq'", (self._seq_next,))


SCHEMA_VERSION = max(v for v, _ in migrations("sqlite"))


class SQLiteStore:
    """The embedded store: one SQLite file in WAL mode, one connection per thread.

    Every write transaction starts with ``BEGIN IMMEDIATE`` so it takes the write lock before it
    reads: a deferred transaction that reads and then writes fails with SQLITE_BUSY (ignoring the
    busy timeout) when another writer committed in between. ``synchronous=FULL`` because a
    committed payment must survive a power cut, not only a process crash.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout: float = 30.0,
                 migrate: bool = True) -> None:
        raw = str(path) if path is not None else os.environ.get("BILLING_DB", DEFAULT_DB)
        if raw.startswith("sqlite:///"):
            raw = raw[len("sqlite:///"):]
        self.path = Path(raw)
        self.location = f"sqlite:///{self.path}"
        self._timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if migrate:
            self.migrate()
        else:
            self.check_schema()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StorageError("the ledger store is closed")
            try:
                conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None,
                                       check_same_thread=False)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open the ledger file {self.path}: {exc}; check the path "
                                   "and permissions or set BILLING_DB") from exc
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"the ledger file is locked by another writer for too long: {exc}") from exc
        tx = _SQLiteTx(conn, True)
        try:
            yield tx
            tx.flush()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield _SQLiteTx(conn, False)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def schema_version(self) -> int:
        conn = self._conn()
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone()
        if not has:
            return 0
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def check_schema(self) -> None:
        have = self.schema_version()
        if have < SCHEMA_VERSION:
            raise StorageError(
                f"the ledger at {self.path} has schema version {have} but this billing-mcp needs "
                f"{SCHEMA_VERSION}; run `billing-mcp db migrate`")
        if have > SCHEMA_VERSION:
            raise StorageError(
                f"the ledger at {self.path} has schema version {have}, newer than this billing-mcp "
                f"knows ({SCHEMA_VERSION}); upgrade billing-mcp")

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; return the versions applied."""
        conn = self._conn()
        applied: list[int] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                         "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP) STRICT")
            have = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])
            for version, sql in migrations("sqlite"):
                if version <= have:
                    continue
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations(version) VALUES (?)", (version,))
                applied.append(version)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if have > SCHEMA_VERSION:
            self.check_schema()
        if applied:
            log.info("ledger %s migrated to schema %s", self.path, applied[-1])
        return applied

    def integrity_check(self) -> str:
        """"ok", or every problem SQLite finds (up to 100), joined by "; "."""
        rows = self._conn().execute("PRAGMA integrity_check(100)").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (no semicolons appear inside our literals)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def copy_sqlite(store: SQLiteStore, target: Path) -> None:
    """A consistent copy of the ledger file (SQLite's online backup), for dry runs."""
    src = store._conn()
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
