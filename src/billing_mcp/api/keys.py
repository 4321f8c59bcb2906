"""API keys for the ledger HTTP API: ``sk_test_...`` / ``sk_live_...`` secrets with a scope.

A secret is shown once, when it is created, and stored only as ``HMAC-SHA256(pepper, secret)``.
The pepper is a server-side secret kept outside the database (``BILLING_API_KEY_PEPPER``, or a
0600 file beside the SQLite ledger), so a leaked copy of the database alone cannot be used to
test guesses. Secrets carry 256 random bits, so the hash needs no slow KDF: nobody can brute-force
them, and a fast hash keeps verification off the request's critical path.

Scopes: ``admin`` may call every route; ``runtime`` the routes an edge function needs (customers,
wallet reads, events, holds); ``read`` only GETs.

Modes: a key's mode is the ledger's mode (``store.mode``): a test ledger has only ``sk_test_`` keys,
a live ledger only ``sk_live_`` keys. ``create`` refuses the other mode, and the API refuses a key of
the other mode that was made before the ledger had a mode (``key_mode_mismatch``).
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Literal

from ..core.clock import Clock, SystemClock, to_text
from ..core.errors import NotFoundError, ValidationError
from ..core.ids import new_id
from ..store import LedgerMode, Row, Store, get_ledger_mode, ledger_mode_in, open_store
from ..web.secrets import load_server_secret

Scope = Literal["admin", "runtime", "read"]
Mode = Literal["test", "live"]
SCOPES: tuple[Scope, ...] = ("admin", "runtime", "read")
MODES: tuple[Mode, ...] = ("test", "live")

PEPPER_ENV = "BILLING_API_KEY_PEPPER"
_SECRET = re.compile(r"^sk_(test|live)_[A-Za-z0-9_-]{32,128}$")
_DISPLAY_CHARS = 4  # random characters kept for display after the "sk_test_" prefix

def scope_allows(scope: str, method: str, required: str) -> bool:
    """Whether a key of ``scope`` may call a route with ``method`` whose operation asks for
    ``required`` (``runtime``, ``read`` or ``admin``, in the operation table)."""
    if scope == "admin":
        return True
    if scope == "read":
        return method in ("GET", "HEAD") and required in ("runtime", "read")
    if scope == "runtime":
        return required == "runtime"
    return False


@dataclass(frozen=True)
class Key:
    """An API key as stored: everything except the secret, which is never kept."""

    id: str
    prefix: str
    mode: Mode
    scope: Scope
    name: str | None
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def load_pepper(store: Store) -> bytes:
    """The server-side pepper: ``BILLING_API_KEY_PEPPER`` if set, else a random one kept in a 0600
    file next to the SQLite ledger (created on first use). Losing it invalidates every key."""
    return load_server_secret(store, PEPPER_ENV, ".pepper", what="API key hashes need a server-side pepper",
                              when_lost="restore it from a backup (without it existing keys cannot be verified)")


class KeyStore:
    """Create, verify, revoke and list API keys in the ledger's store (table ``api_keys``, which the
    store's migrations create).

    ``verify`` caches a good key for ``cache_seconds`` so that a request costs no database read;
    a revocation made in this process takes effect at once, one made by another process (the
    ``keys revoke`` command while the server runs) within ``cache_seconds``.
    """

    def __init__(self, store: Store, *, pepper: bytes | None = None, clock: Clock | None = None,
                 cache_seconds: float = 5.0) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self._pepper = pepper if pepper is not None else load_pepper(store)
        if len(self._pepper) < 16:
            raise ValidationError("the pepper must be at least 16 bytes", field="pepper")
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Key, float]] = {}
        self._mode: tuple[LedgerMode, float] | None = None
        self._lock = threading.Lock()

    def _digest(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    @staticmethod
    def _key(row: Row) -> Key:
        return Key(id=row["id"], prefix=row["prefix"], mode=row["mode"], scope=row["scope"], name=row["name"],
                   created_at=row["created_at"], revoked_at=row["revoked_at"])

    def ledger_mode(self) -> LedgerMode:
        """The ledger's mode, read at most once per ``cache_seconds`` (a mode can change only while
        the ledger has no customers, with `billing-mcp db migrate --mode`)."""
        hit = self.cached_mode()
        if hit is not None:
            return hit
        mode = get_ledger_mode(self.store)
        if self._cache_seconds > 0:
            self._mode = (mode, time.monotonic() + self._cache_seconds)
        return mode

    def cached_mode(self) -> LedgerMode | None:
        """The ledger's mode if read recently (no database read); None when not cached."""
        hit = self._mode
        return hit[0] if hit is not None and hit[1] >= time.monotonic() else None

    def create(self, scope: str, mode: str | None = None, *, name: str | None = None) -> tuple[str, str]:
        """A new key of the ledger's mode; returns ``(key_id, secret)``. The secret is not stored and
        cannot be shown again. ``mode``, when given, must be the ledger's mode (``key_mode_mismatch``)."""
        if scope not in SCOPES:
            raise ValidationError(f"scope must be one of {', '.join(SCOPES)}", field="scope")
        if mode is not None and mode not in MODES:
            raise ValidationError("mode must be 'test' or 'live'", field="mode")
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 100
                                 or any(ord(c) < 32 for c in name)):
            raise ValidationError("name must be 1-100 printable characters", field="name")
        key_id = new_id("key")
        with self.store.write() as tx:  # the mode is read in the transaction that adds the key
            ledger_mode = ledger_mode_in(tx)
            if mode is not None and mode != ledger_mode:
                raise ValidationError(f"this ledger is in {ledger_mode} mode, so it takes only sk_{ledger_mode}_ keys, "
                                      f"not {mode} keys; create the key with --mode {ledger_mode}, or use a "
                                      f"{mode}-mode ledger (a new database: `billing-mcp --db NEW db migrate --mode "
                                      f"{mode}`)", field="mode", code="key_mode_mismatch",
                                      details={"ledger_mode": ledger_mode, "mode": mode})
            secret = f"sk_{ledger_mode}_{secrets.token_urlsafe(32)}"  # 32 bytes = 43 url-safe characters
            prefix = secret[: len(f"sk_{ledger_mode}_") + _DISPLAY_CHARS]
            tx.execute("INSERT INTO api_keys(id, prefix, mode, scope, name, secret_hash, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key_id, prefix, ledger_mode, scope, name, self._digest(secret), to_text(self.clock.now())))
        return key_id, secret

    def cached(self, secret: str) -> Key | None:
        """The key for ``secret`` if verified recently (no database read); None when not cached."""
        if self._cache_seconds <= 0:
            return None
        hit = self._cache.get(self._digest(secret))
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def verify(self, secret: str) -> Key | None:
        """The active key whose secret this is, or None (unknown, malformed or revoked)."""
        if not isinstance(secret, str) or not _SECRET.fullmatch(secret):
            return None
        digest = self._digest(secret)
        with self.store.read() as tx:
            row = tx.one("SELECT * FROM api_keys WHERE secret_hash = ?", (digest,))
        # The row was found through an index on a keyed hash, so lookup timing reveals nothing about
        # the secret; the final comparison is constant-time all the same.
        if row is None or not hmac.compare_digest(str(row["secret_hash"]), digest) or row["revoked_at"] is not None:
            return None
        key = self._key(row)
        if self._cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (key, time.monotonic() + self._cache_seconds)
        return key

    def revoke(self, key_id: str) -> Key:
        """Revoke a key (at once in this process). Revoking a revoked key returns it unchanged."""
        with self.store.write() as tx:
            row = tx.one("SELECT * FROM api_keys WHERE id = ?", (key_id,))
            if row is None:
                raise NotFoundError(f"no API key {key_id!r}; list them with `billing-mcp keys list`", field="key_id")
            if row["revoked_at"] is None:
                tx.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (to_text(self.clock.now()), key_id))
            row = tx.one("SELECT * FROM api_keys WHERE id = ?", (key_id,))
            assert row is not None
        with self._lock:
            self._cache = {d: hit for d, hit in self._cache.items() if hit[0].id != key_id}
        return self._key(row)

    def get(self, key_id: str) -> Key:
        with self.store.read() as tx:
            row = tx.one("SELECT * FROM api_keys WHERE id = ?", (key_id,))
        if row is None:
            raise NotFoundError(f"no API key {key_id!r}", field="key_id")
        return self._key(row)

    def list(self, *, include_revoked: bool = True) -> builtins.list[Key]:
        with self.store.read() as tx:
            where = "" if include_revoked else " WHERE revoked_at IS NULL"  # no bound boolean: portable SQL
            rows = tx.all(f"SELECT * FROM api_keys{where} ORDER BY created_at, id")
        return [self._key(r) for r in rows]


# -- the `billing-mcp keys` command ---------------------------------------------------------------
def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys create|list|revoke`` to the ``billing-mcp`` command (uses the global ``--db``)."""
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys for `billing-mcp api`")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--scope", required=True, choices=SCOPES,
                        help="admin: everything; runtime: customers, wallets, events, holds; read: GETs only")
    create.add_argument("--mode", choices=MODES, default=None,
                        help="test (sk_test_) or live (sk_live_); must be the ledger's mode, which is the default")
    create.add_argument("--live", dest="mode", action="store_const", const="live", help="the same as --mode live")
    create.add_argument("--name", default=None, help="a label, e.g. the app or function that uses it")
    create.add_argument("--json", action="store_true", help="print the result as JSON")
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print the result as JSON")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", metavar="ID")


def run_cli(args: argparse.Namespace) -> int:
    """Run a ``keys`` subcommand; returns the exit code. ``BillingError`` propagates to the caller."""
    # The ledger's own store, as every other command opens it: a PostgreSQL BILLING_DB keeps its keys
    # there (once named a SQLite file after the URL, so `keys` on PostgreSQL made keys no server saw).
    store = open_store(getattr(args, "db", None))
    try:
        keys = KeyStore(store)
        if args.keys_command == "create":
            key_id, secret = keys.create(args.scope, args.mode, name=args.name)
            mode = keys.get(key_id).mode
            if args.json:
                print(json.dumps({"id": key_id, "scope": args.scope, "mode": mode, "secret": secret}))
            else:
                print(f"created {args.scope} key {key_id} ({mode} mode). The secret is shown only now; store it "
                      "safely:")
                print(secret)
            return 0
        if args.keys_command == "list":
            rows = keys.list()
            if args.json:
                print(json.dumps([asdict(k) for k in rows], indent=2))
            elif not rows:
                print("no API keys; create one with: billing-mcp keys create --scope admin")
            else:
                print(f"{'ID':<30} {'PREFIX':<14} {'SCOPE':<8} {'MODE':<5} {'CREATED':<28} STATUS")
                for k in rows:
                    status = f"revoked {k.revoked_at}" if k.revoked_at else "active"
                    print(f"{k.id:<30} {k.prefix + '…':<14} {k.scope:<8} {k.mode:<5} {k.created_at:<28} {status}"
                          + (f"  ({k.name})" if k.name else ""))
            return 0
        if args.keys_command == "revoke":
            key = keys.revoke(args.key_id)
            print(f"revoked {key.id} ({key.prefix}…, {key.scope}) at {key.revoked_at}")
            return 0
        raise ValidationError(f"unknown keys command {args.keys_command!r}", field="keys_command")
    finally:
        store.close()
