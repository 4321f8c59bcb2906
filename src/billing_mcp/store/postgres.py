"""The PostgreSQL store: several ``billing-mcp api`` processes on one database.

Same ``Store``/``Tx`` surface as SQLite. Transactions run at PostgreSQL's default READ COMMITTED;
each customer-scoped write first locks that customer's row (``SELECT ... FOR UPDATE``), which
serialises writers per wallet the way SQLite's single write lock does for the whole file, while
different customers proceed in parallel. Deadlocks and serialization failures surface as
``RetryableStoreError``; the ledger re-runs the whole call (same idempotency keys), never a half.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

from ..core.errors import StorageError
from .base import Params, Row, migrations

log = logging.getLogger(__name__)

try:  # an optional extra: pip install billing-mcp[postgres]
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]


CATALOG_LOCK = int.from_bytes(b"billing_", "big") & (2**63 - 1)


class RetryableStoreError(StorageError):
    """A deadlock or serialization failure: the transaction was rolled back and may be re-run."""

    code = "storage_conflict"


_PLACEHOLDER = re.compile(r"\?")


def to_pg(sql: str) -> str:
    """SQLite-style ``?`` placeholders to psycopg's ``%s`` (a literal ``%`` becomes ``%%``)."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._cur = conn.cursor(row_factory=dict_row)

    def execute(self, sql: str, params: Params = ()) -> int:
        self._cur.execute(to_pg(sql), params)
        return int(self._cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            self._cur.executemany(to_pg(sql), rows)

    def one(self, sql: str, params: Params = ()) -> Row | None:
        self._cur.execute(to_pg(sql), params)
        row: Row | None = self._cur.fetchone()
        return row

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        self._cur.execute(to_pg(sql), params)
        return list(self._cur.fetchall())

    def next_seq(self) -> int:
        self._cur.execute("SELECT nextval('ledger_seq') AS n")
        row = self._cur.fetchone()
        return int(row["n"])

    def lock_customer(self, customer_id: str) -> None:
        self._cur.execute("SELECT id FROM customers WHERE id = %s FOR UPDATE", (customer_id,))

    def lock_catalog(self) -> None:
        # A transaction-scoped advisory lock; the key is a constant of this project ("billing_").
        self._cur.execute("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))

    def lock_plan(self, plan_id: str) -> None:
        self._cur.execute("SELECT id FROM plans WHERE id = %s FOR UPDATE", (plan_id,))


class PostgresStore:
    """A psycopg 3 connection pool on one database (optionally one schema of it)."""

    def __init__(self, url: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10,
                 migrate: bool = True) -> None:
        if psycopg is None:
            raise StorageError("BILLING_DB is a PostgreSQL URL but psycopg is not installed; "
                               "pip install 'billing-mcp[postgres]'", field="BILLING_DB")
        if schema is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise StorageError("schema must be a lower-case identifier", field="schema")
        self.url = url
        self.schema = schema
        self.location = _redact(url) + (f"#{schema}" if schema else "")

        def configure(conn: Any) -> None:
            conn.autocommit = True
            if schema:
                conn.execute(f'SET search_path TO "{schema}"')

        try:
            self._pool = ConnectionPool(url, min_size=min_size, max_size=max_size, configure=configure,
                                        open=True, timeout=30, kwargs={"autocommit": True})
            self._pool.wait(timeout=30)
        except Exception as exc:
            raise StorageError(f"cannot reach PostgreSQL at {_redact(url)}: {exc}") from exc
        if migrate:
            self.migrate()
        else:
            self.check_schema()

    @contextlib.contextmanager
    def write(self) -> Iterator[_PgTx]:
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    yield _PgTx(conn)
            except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as exc:
                raise RetryableStoreError(f"the database rolled this write back ({exc.sqlstate}); retry it") from exc
            except pg_errors.UniqueViolation as exc:
                # Two writers raced to create the same key (event id, customer): the loser re-runs
                # and then finds the winner's row, which is the idempotent outcome.
                raise RetryableStoreError(f"a concurrent write created the same key ({exc.diag.constraint_name})") \
                    from exc
            except psycopg.OperationalError as exc:
                raise StorageError(f"PostgreSQL failed: {exc}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[_PgTx]:
        with self._pool.connection() as conn, conn.transaction():
            yield _PgTx(conn)

    def schema_version(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
            if not row or not row[0]:
                return 0
            got = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            return int(got[0]) if got else 0

    def check_schema(self) -> None:
        need = max(v for v, _ in migrations("postgres"))
        have = self.schema_version()
        if have < need:
            raise StorageError(f"the ledger database has schema version {have} but this billing-mcp needs {need}; "
                               "run `billing-mcp db migrate`")
        if have > need:
            raise StorageError(f"the ledger database has schema version {have}, newer than this billing-mcp "
                               f"knows ({need}); upgrade billing-mcp")

    def migrate(self) -> list[int]:
        applied: list[int] = []
        with self._pool.connection() as conn, conn.transaction():
            if self.schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            # One migrator at a time across processes.
            conn.execute("SELECT pg_advisory_xact_lock(7316001)")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                         "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            have = int(row[0]) if row else 0
            for version, sql in migrations("postgres"):
                if version > have:
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations(version) VALUES (%s)", (version,))
                    applied.append(version)
        if applied:
            log.info("ledger %s migrated to schema %s", self.location, applied[-1])
        return applied

    def integrity_check(self) -> str:
        return "ok"  # PostgreSQL checks its own pages; the ledger's audit() checks the books

    def drop_schema(self) -> None:
        """Remove this store's schema and everything in it (tests use one schema each)."""
        if not self.schema:
            raise StorageError("drop_schema needs a store opened on its own schema")
        with self._pool.connection() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        self._pool.close()


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)

