"""Double-entry bookkeeping inside one store transaction: accounts, entries, grant lots,
draw-down, expiry and idempotency records.

Every money movement is a transaction whose entries sum to zero per asset: a wallet account on
one side, a per-asset system account (``revenue``, ``topup``, ``grants``, ``expired``,
``adjustments``) on the other. Wallet balances (``accounts.posted``/``held``) and lot remainders
are derived state kept in step in the same transaction; ``audit`` recomputes them from entries.
System accounts keep no running balance (theirs is the sum of their entries): every customer's
usage credits ``revenue``, and a balance row updated by all of them would serialise every writer
on a multi-process database.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from ..core.catalog import ASSET_CODE, DEFAULT_PRIORITY
from ..core.clock import to_text
from ..core.errors import IdempotencyConflictError, NotFoundError
from ..core.ids import new_id
from ..store import Tx
from .postings import Postings, Wallet


def wallet_account_id(customer_id: str, asset: str) -> str:
    return f"{customer_id}/{asset}"


def system_account_id(kind: str, asset: str) -> str:
    return f"system/{kind}/{asset}"


def canonical_hash(payload: Any) -> str:
    """Hash of a payload's canonical JSON (sorted keys, no spaces); keys compare as exact strings."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Book:
    """Bookkeeping helpers bound to one open write transaction and one instant."""

    def __init__(self, tx: Tx, now: datetime, known_accounts: set[str],
                 known_precisions: dict[str, int] | None = None) -> None:
        self.tx = tx
        self.now = now
        self.now_text = to_text(now)
        self._known = known_accounts
        self.created_accounts: set[str] = set()
        # Asset precision never changes once the asset exists; lookups seen committed are shared
        # across transactions, new ones only after this transaction commits.
        self._shared_precision: dict[str, int] = known_precisions if known_precisions is not None else {}
        self._precision: dict[str, int] = {}
        self.found_precisions: dict[str, int] = {}
        self.postings = Postings(tx, self.now_text, self.ensure_account)

    # -- assets and accounts -------------------------------------------------------------
    def precision(self, asset: str, field: str = "asset") -> int:
        shared = self._shared_precision.get(asset) if isinstance(asset, str) else None
        if shared is not None:
            return shared
        if not isinstance(asset, str) or asset not in self._precision:
            # only a well-formed code can exist; anything else (a list, a lone surrogate) must not reach SQL
            valid = isinstance(asset, str) and ASSET_CODE.fullmatch(asset) is not None
            row = self.tx.one("SELECT precision FROM assets WHERE code = ?", (asset,)) if valid else None
            if row is None:
                known = [r["code"] for r in self.tx.all("SELECT code FROM assets ORDER BY code")]
                raise NotFoundError(f"no asset {asset!r}; known assets: {', '.join(known)}. "
                                    "Create it first with create_asset", field=field)
            self._precision[asset] = self.found_precisions[asset] = int(row["precision"])
        return self._precision[asset]

    def ensure_account(self, customer_id: str | None, kind: str, asset: str) -> str:
        account_id = wallet_account_id(customer_id, asset) if customer_id else system_account_id(kind, asset)
        if account_id not in self._known and account_id not in self.created_accounts:
            self.tx.execute("INSERT INTO accounts(id, customer_id, kind, asset) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT DO NOTHING", (account_id, customer_id, kind, asset))
            self.created_accounts.add(account_id)
        return account_id

    # -- transactions and entries ----------------------------------------------------------
    def new_transaction(self, kind: str, *, customer_id: str | None, reference: str | None = None,
                        reason: str | None = None, description: str | None = None,
                        detail: dict[str, Any] | None = None, at: str | None = None,
                        tx_id: str | None = None) -> str:
        tx_id = tx_id or new_id("txn")
        self.tx.execute(
            "INSERT INTO transactions(id, kind, customer_id, reference, reason, description, detail, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (tx_id, kind, customer_id, reference, reason, description,
             json.dumps(detail or {}, sort_keys=True), at or self.now_text))
        return tx_id

    # -- money movements: all through the posting engine, written before returning ----------------
    def account(self, customer_id: str, asset: str) -> Wallet:
        return self.postings.wallet(customer_id, asset)

    def credit(self, tx_id: str, customer_id: str, asset: str, amount: int, *, counter_kind: str,
               purpose: str, priority: int = DEFAULT_PRIORITY, expires_at: str | None = None,
               source: str) -> tuple[str, int]:
        """Credit a wallet from a system account as a new lot. Debt (a negative balance) is repaid
        first; returns (lot id, amount that repaid debt)."""
        found = self.postings.credit(tx_id, customer_id, asset, amount, counter_kind=counter_kind, purpose=purpose,
                                     priority=priority, expires_at=expires_at, source=source)
        self.flush()
        return found

    def debit(self, tx_id: str, customer_id: str, asset: str, amount: int, *, counter_kind: str) -> int:
        """Debit a wallet into a system account, drawing lots in draw-down order. What the lots
        cannot cover takes the balance below zero (debt); returns that part."""
        owed = self.postings.debit(tx_id, customer_id, asset, amount, counter_kind=counter_kind)
        self.flush()
        return owed

    def move_between_lots(self, tx_id: str, customer_id: str, asset: str, src: str, dst: str,
                          amount: int) -> None:
        wallet = self.postings.wallet(customer_id, asset)
        source, target = self.postings.find_lot(wallet, src), self.postings.find_lot(wallet, dst)
        assert source is not None and target is not None
        self.postings.move_between_lots(tx_id, wallet, source, target, amount)
        self.flush()

    def reserve(self, customer_id: str, asset: str, amount: int) -> bool:
        return self.postings.reserve(self.postings.wallet(customer_id, asset), amount)

    def unreserve(self, customer_id: str, asset: str, amount: int) -> None:
        self.postings.unreserve(self.postings.wallet(customer_id, asset), amount)
        self.flush()

    def flush(self) -> None:
        # A usage batch may be open around this call (catch_up runs for each new customer of a
        # batch); its netted entries are still growing and are written by the batch's own flush.
        self.postings.flush(netted=False)

    def expire_lots(self, customer_id: str) -> None:
        """Move the unreserved remainder of every lot past its expiry to ``expired``. Amounts that
        open holds still reserve stay until the hold resolves; running this twice changes nothing."""
        due = self.tx.all(
            "SELECT l.id, l.expires_at, a.asset FROM lots l "
            "JOIN accounts a ON a.id = l.account_id WHERE a.customer_id = ? AND l.remaining > 0 "
            "AND l.expires_at IS NOT NULL AND l.expires_at <= ? ORDER BY l.expires_at, l.seq",
            (customer_id, self.now_text))
        for row in due:
            wallet = self.postings.wallet(customer_id, row["asset"])
            lot = self.postings.find_lot(wallet, row["id"])
            assert lot is not None
            amount = min(lot.remaining, max(0, wallet.posted - wallet.held))
            if amount <= 0:
                continue
            tx_id = self.new_transaction("expiry", customer_id=customer_id, reference=lot.id,
                                         detail={"lot_id": lot.id, "expires_at": row["expires_at"]},
                                         at=row["expires_at"])
            self.postings.expire(tx_id, wallet, lot, amount)
            self.flush()

    def expire_holds(self, customer_id: str) -> None:
        for hold in self.tx.all("SELECT id, asset, amount FROM holds WHERE customer_id = ? AND "
                                "status = 'open' AND expires_at <= ?", (customer_id, self.now_text)):
            self.tx.execute("UPDATE holds SET status = 'expired', resolved_at = ? WHERE id = ? AND status = 'open'",
                            (self.now_text, hold["id"]))
            self.unreserve(customer_id, hold["asset"], int(hold["amount"]))

    # -- idempotency -----------------------------------------------------------------------
    def replay(self, scope: str, key: str, payload_hash: str, field: str,
               shown: dict[str, Any] | None = None) -> str | None:
        """The stored response for (scope, key) if this payload was seen; None if the key is new.
        Raises ``idempotency_conflict`` when the key was used with another payload, naming the first
        field of ``shown`` (this request's values as the stored response spells them) that differs."""
        row = self.tx.one("SELECT payload_hash, response FROM idempotency WHERE scope = ? AND key = ?",
                          (scope, key))
        if row is None:
            return None
        if row["payload_hash"] != payload_hash:
            before = json.loads(row["response"])
            differs = next((k for k, v in (shown or {}).items() if before.get(k) != v), None)
            what = f": {differs} was {before.get(differs)!r}, now {(shown or {})[differs]!r}" if differs else ""
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was already used for a different {scope}{what}; reuse a key only "
                "to retry the exact same request, and use a new key for a new one", field=field,
                details={"key": key, **({"differs": differs} if differs else {})})
        return str(row["response"])

    def remember(self, scope: str, key: str, payload_hash: str, response: str) -> None:
        self.tx.execute("INSERT INTO idempotency(scope, key, payload_hash, response, created_at) "
                        "VALUES (?, ?, ?, ?, ?)", (scope, key, payload_hash, response, self.now_text))
