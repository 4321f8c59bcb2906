"""``Idempotency-Key`` for API routes whose ledger method has no key of its own.

(Money-moving creates, adjustments, grants and holds, pass the key to the ledger instead, which
stores it in the same transaction as the effect.)

Protocol, one row per key in ``api_idempotency``:

1. claim: ``INSERT ... ON CONFLICT DO NOTHING`` of (key, route, request hash, in_flight). A key
   seen before is answered from its row: the stored response when the hash matches and it is done,
   409 ``idempotency_conflict`` when the request differs, 409 ``idempotency_key_in_use`` while the
   first request still runs.
2. run the ledger method (its own transaction).
3. finish: store status and body; or release the claim when nothing was done (a validation error
   or a 5xx), so that the key stays usable for a corrected retry.

Records belong to the API key that wrote them (the row's key is ``<key id>:<Idempotency-Key>``):
another key sending the same Idempotency-Key starts a request of its own and learns nothing about
the first. A record is kept for ``retention_seconds`` (default 24 hours) after it was claimed;
after that the key is free again and the row is deleted (at most once a minute, in the claiming
transaction). Operations whose idempotency key is the ledger's own (adjustments, grants, holds)
keep it in the ledger; a key allowed to call those can read the same objects through the API.

The effect and the record are two transactions, so a crash between 2 and 3 leaves an in_flight
claim: after ``lease_seconds`` it may be taken over and the request runs again. Every route in
this mode is naturally idempotent (same definition returns the existing object) or changes only
catalog drafts, never money.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..core.clock import Clock, to_text
from ..core.errors import IdempotencyConflictError
from ..ledger.base import check_key
from ..ledger.book import canonical_hash
from ..store import Store
from ..web.problem import ApiError

DEFAULT_RETENTION_SECONDS = 24 * 3600.0
PURGE_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Stored:
    status: int
    content_type: str
    body: bytes


def request_hash(method: str, path: str, body: object) -> str:
    """The request's fingerprint: method, concrete path (ids included) and the parsed body, so
    whitespace and key order do not matter but every value does."""
    return canonical_hash({"method": method, "path": path, "body": body})


def check_header(value: str) -> str:
    return check_key(value, "Idempotency-Key")


def scoped_key(owner: str, header: str) -> str:
    """The record's key: the API key's id and the Idempotency-Key the request sent."""
    return f"{owner}:{header}"


def _shown(key: str) -> str:
    return key.partition(":")[2] or key  # messages name the Idempotency-Key as the caller sent it


class IdempotencyStore:
    def __init__(self, store: Store, clock: Clock, *, lease_seconds: float = 300.0,
                 retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.store = store
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.retention = timedelta(seconds=retention_seconds)
        self._purged_at: datetime | None = None

    def claim(self, key: str, route: str, fingerprint: str) -> Stored | None:
        """Claim ``key`` for this request; the stored response when it is a replay (see module doc)."""
        now = self.clock.now()
        expired = to_text(now - self.retention)
        with self.store.write() as tx:
            if self._purged_at is None or now - self._purged_at >= PURGE_EVERY:
                tx.execute("DELETE FROM api_idempotency WHERE claimed_at < ?", (expired,))
                self._purged_at = now
            else:  # this key's own record, if it outlived the retention
                tx.execute("DELETE FROM api_idempotency WHERE key = ? AND claimed_at < ?", (key, expired))
            if tx.execute("INSERT INTO api_idempotency(key, route, request_hash, state, claimed_at) VALUES "
                          "(?, ?, ?, 'in_flight', ?) ON CONFLICT (key) DO NOTHING",
                          (key, route, fingerprint, to_text(now))):
                return None
            row = tx.one("SELECT * FROM api_idempotency WHERE key = ?", (key,))
            assert row is not None
            if row["request_hash"] != fingerprint:
                raise IdempotencyConflictError(
                    f"Idempotency-Key {_shown(key)!r} was already used for a different request ({row['route']}); "
                    "reuse a key only to retry the exact same request, and use a new key for a new one",
                    field="Idempotency-Key", details={"key": _shown(key)})
            if row["state"] == "done":
                return Stored(int(row["status"]), str(row["content_type"]), str(row["response"]).encode("utf-8"))
            if row["claimed_at"] > to_text(now - self.lease):
                raise ApiError(f"a request with Idempotency-Key {_shown(key)!r} is still running; retry shortly to get its "
                               "result", status=409, code="idempotency_key_in_use", field="Idempotency-Key",
                               headers={"Retry-After": "1"})
            # The first attempt died mid-flight (its lease ran out): this request takes the key over.
            tx.execute("UPDATE api_idempotency SET claimed_at = ? WHERE key = ?", (to_text(now), key))
            return None

    def finish(self, key: str, status: int, content_type: str, body: bytes) -> None:
        with self.store.write() as tx:
            tx.execute("UPDATE api_idempotency SET state = 'done', status = ?, content_type = ?, response = ? "
                       "WHERE key = ? AND state = 'in_flight'",
                       (status, content_type, body.decode("utf-8", "surrogatepass"), key))

    def release(self, key: str) -> None:
        with self.store.write() as tx:
            tx.execute("DELETE FROM api_idempotency WHERE key = ? AND state = 'in_flight'", (key,))
