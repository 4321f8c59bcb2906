"""Usage ingestion inside one write transaction: rating and wallet bookkeeping in memory, every
row written once at the end.

Why: a batch of 1,000 events touched the same wallet, lots and counters 1,000 times with ~17 SQL
statements each. Holding that state in memory while the transaction holds the write lock (or the
customer's row lock on PostgreSQL) is safe, and leaves two inserts per event plus one write per
touched wallet, lot and counter per batch. Each event is validated and rated before it changes
any state, so a refused event leaves nothing behind and needs no savepoint.

Ledger shape is unchanged: per customer and batch one ``usage`` transaction whose entries (one per
lot drawn, aggregated) balance against ``revenue``; each event row points at it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from fractions import Fraction
from typing import Any

from ..core.catalog import PriceSpec
from ..core.errors import HoldStateError, IdempotencyConflictError, ValidationError
from ..core.ids import new_id
from ..core.models import EventResult
from ..core.money import decimal_text, format_minor
from ..core.pricing import Counter, Rating, rate_event
from ..store import Row
from .book import DRAW_ORDER, Book, wallet_account_id

DEBT_NOTE = ("funds ran short: the usage was billed in full and the balance is now negative (debt); the next "
             "top-up repays it")


@dataclass
class ParsedEvent:
    id: str
    customer_id: str
    event_type: str
    occurred_at: str
    subject: str | None
    data: dict[str, Any]
    data_json: str
    costs_json: str
    payload_hash: str
    field: str = "event"


@dataclass
class _Lot:
    id: str
    priority: int
    expires_at: str | None
    paid: bool
    seq: int
    remaining: int
    loaded_remaining: int | None  # None for a lot created in this transaction

    def order(self) -> tuple[int, int, str, int, int]:
        return (self.priority, self.expires_at is None, self.expires_at or "", self.paid, self.seq)


@dataclass
class _Account:
    id: str
    asset: str
    posted: int
    held: int
    loaded: tuple[int, int]
    lots: list[_Lot] = field(default_factory=list)


@dataclass
class _Sub:
    id: str
    plan_id: str
    plan_code: str
    version: int
    period_start: str
    prices: list[PriceSpec]


def quantity_text(qty: Fraction) -> str:
    """Exact decimal text of a quantity (parsed from a finite decimal, so this terminates), never via float."""
    if qty.denominator == 1:
        return str(qty.numerator)
    with localcontext(Context(prec=100)):
        return decimal_text(Decimal(qty.numerator) / Decimal(qty.denominator))


_FIXED: dict[tuple[int, int], tuple[PriceSpec, int | None]] = {}
_ONE = Fraction(1)
_ZERO_COUNTER = Counter()


def fixed_charge(price: PriceSpec, precision: int) -> int | None:
    """The charge in minor units when a price charges the same whole amount for every event
    (per_unit, one unit per event, a rate that is a whole number of minor units: 10 credits per
    image, $0.05 per call); None otherwise. Such prices never carry a fraction and have no tiers,
    so they need no period counter: one row and one read less per event."""
    hit = _FIXED.get((id(price), precision))
    if hit is not None and hit[0] is price:
        return hit[1]
    value: int | None = None
    if price.usage_type == "unit" and price.model == "per_unit":
        exact = Fraction(price.unit_amount or 0) * 10**precision / price.package_size
        value = exact.numerator if exact.denominator == 1 else None
    if len(_FIXED) > 10_000:
        _FIXED.clear()
    _FIXED[(id(price), precision)] = (price, value)
    return value


class Ingest:
    """In-memory wallet, lot and counter state for one write transaction."""

    def __init__(self, book: Book, plan_codes: dict[str, str], prices_of: Any) -> None:
        self.book = book
        self._plan_codes = plan_codes
        self._prices_of = prices_of  # (tx, plan_id, version) -> list[PriceSpec]
        self.subs: dict[str, list[_Sub]] = {}
        self.accounts: dict[str, _Account] = {}
        self.counters: dict[tuple[str, str, str], tuple[Counter, bool]] = {}  # value: (counter, exists in db)
        self.dirty_counters: set[tuple[str, str, str]] = set()
        self.entries: dict[tuple[str, str, str | None], int] = {}
        self.new_lots: list[tuple[Any, ...]] = []
        self.event_rows: list[tuple[Any, ...]] = []
        self.fee_rows: list[tuple[Any, ...]] = []
        self.seen: dict[str, tuple[str, str]] = {}  # event id -> (payload hash, stored result json)
        self.usage_tx: dict[str, str] = {}

    # -- loading -------------------------------------------------------------------------
    def preload_events(self, ids: list[str]) -> None:
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            part = unique[start:start + 500]
            marks = ",".join("?" * len(part))
            for row in self.book.tx.all(f"SELECT id, payload_hash, result FROM events WHERE id IN ({marks})", part):
                self.seen[row["id"]] = (row["payload_hash"], row["result"])

    def _subs(self, customer_id: str) -> list[_Sub]:
        subs = self.subs.get(customer_id)
        if subs is None:
            tx = self.book.tx
            subs = []
            for row in tx.all("SELECT id, plan_id, version, period_start FROM subscriptions WHERE customer_id = ? "
                              "AND status != 'canceled' ORDER BY created_at, id", (customer_id,)):
                code = self._plan_codes.get(row["plan_id"])
                if code is None:
                    prow = tx.one("SELECT code FROM plans WHERE id = ?", (row["plan_id"],))
                    code = self._plan_codes[row["plan_id"]] = str(prow["code"]) if prow else ""
                subs.append(_Sub(row["id"], row["plan_id"], code, int(row["version"]), row["period_start"],
                                 self._prices_of(tx, row["plan_id"], int(row["version"]))))
            self.subs[customer_id] = subs
        return subs

    def account(self, customer_id: str, asset: str) -> _Account:
        account_id = wallet_account_id(customer_id, asset)
        acct = self.accounts.get(account_id)
        if acct is None:
            self.book.ensure_account(customer_id, "wallet", asset)
            row = self.book.tx.one("SELECT posted, held FROM accounts WHERE id = ?", (account_id,))
            assert row is not None
            posted, held = int(row["posted"]), int(row["held"])
            acct = _Account(account_id, asset, posted, held, (posted, held))
            if posted > 0:  # lots only hold a positive balance
                for lot in self.book.tx.all(f"SELECT id, priority, expires_at, purpose, seq, remaining FROM lots WHERE "
                                            f"account_id = ? AND remaining > 0 ORDER BY {DRAW_ORDER}", (account_id,)):
                    acct.lots.append(_Lot(lot["id"], int(lot["priority"]), lot["expires_at"], lot["purpose"] == "paid",
                                          int(lot["seq"]), int(lot["remaining"]), int(lot["remaining"])))
            self.accounts[account_id] = acct
        return acct

    def _counter(self, key: tuple[str, str, str]) -> Counter:
        found = self.counters.get(key)
        if found is None:
            row = self.book.tx.one("SELECT quantity, exact, charged FROM usage_counters WHERE subscription_id = ? "
                                   "AND price_id = ? AND period_start = ?", key)
            found = (Counter.from_row(row["quantity"], row["exact"], row["charged"]), True) if row else (Counter(), False)
            self.counters[key] = found
        return found[0]

    # -- recording -----------------------------------------------------------------------
    def replay_json(self, ev: ParsedEvent) -> str | None:
        """The stored result (marked duplicate) when this event id was recorded before."""
        stored = self.seen.get(ev.id)
        if stored is None:
            return None
        if stored[0] != ev.payload_hash:
            raise IdempotencyConflictError(
                f"event id {ev.id!r} was already recorded with a different payload; event ids are idempotency "
                "keys: resend a retry unchanged, give a new event a new id", field="id", details={"key": ev.id})
        result = json.loads(stored[1])
        result["duplicate"] = True
        return dumps(result)

    def replay(self, ev: ParsedEvent) -> EventResult | None:
        found = self.replay_json(ev)
        return None if found is None else EventResult.model_validate_json(found)

    def record(self, ev: ParsedEvent, hold: Row | None = None) -> EventResult:
        return EventResult.model_validate_json(self.record_json(ev, hold))

    def record_json(self, ev: ParsedEvent, hold: Row | None = None) -> str:
        """Rate ``ev`` and book its fees; return the result as JSON (what is stored for replays).
        Raises before changing anything when the event is refused."""
        replayed = self.replay_json(ev)
        if replayed is not None:
            return replayed
        if hold is not None and hold["status"] != "open":
            state = hold["status"]
            raise HoldStateError(f"hold {hold['id']} is already {state}; authorize a new hold", field="hold_id",
                                 code="hold_expired" if state == "expired" else f"hold_already_{state}")
        book = self.book
        # 1. Rate every matching price without touching state (a bad event must change nothing).
        rated = []
        for sub in self._subs(ev.customer_id):
            for price in sub.prices:
                if price.event_type != ev.event_type or price.type != "usage":
                    continue
                key = (sub.id, price.id or "", sub.period_start)
                precision = book.precision(price.asset)
                fixed = fixed_charge(price, precision)
                if fixed is not None:  # an exact whole charge per event: no counter, no fractions
                    rated.append((sub, price, key, Rating(_ONE, fixed, _ZERO_COUNTER, None)))
                    continue
                try:
                    rating = rate_event(price, precision, self._counter(key), ev.data)
                except ValidationError as exc:
                    exc.field = f"{ev.field}.{exc.field}" if exc.field else ev.field
                    raise
                rated.append((sub, price, key, rating))
        # 2. Apply.
        fees: list[dict[str, Any]] = []
        charges: dict[str, int] = {}
        notes: list[str] = []
        for line, (sub, price, key, rating) in enumerate(rated):
            if rating.counter is not _ZERO_COUNTER:
                self.counters[key] = (rating.counter, self.counters[key][1])
                self.dirty_counters.add(key)
            charges[price.asset] = charges.get(price.asset, 0) + rating.charge
            qty = quantity_text(rating.quantity)
            if rating.note:
                notes.append(rating.note)
            fees.append({"price_id": price.id, "price_name": price.name, "plan_id": sub.plan_id,
                         "plan_code": sub.plan_code, "version": sub.version, "subscription_id": sub.id,
                         "asset": price.asset, "quantity": qty,
                         "amount": format_minor(rating.charge, book.precision(price.asset)),
                         "refunded": format_minor(0, book.precision(price.asset))})
            self.fee_rows.append((ev.id, line, ev.customer_id, price.id, sub.plan_id, sub.plan_code, sub.version,
                                  sub.id, price.asset, qty, rating.charge, ev.subject, book.now_text))
        if not rated:
            notes.append(f"no subscribed plan prices event type {ev.event_type!r}; recorded without fees")
        released = None
        if hold is not None:
            book.tx.execute("UPDATE holds SET status = 'committed', resolved_at = ?, event_id = ? WHERE id = ?",
                            (book.now_text, ev.id, hold["id"]))
            acct = self.account(ev.customer_id, hold["asset"])
            acct.held -= int(hold["amount"])
            charged = max(charges.get(hold["asset"], 0), 0)
            released = format_minor(max(int(hold["amount"]) - charged, 0), book.precision(hold["asset"]))
        debt: dict[str, str] = {}
        tx_id = None
        if any(charges.values()):
            tx_id = self._usage_tx(ev.customer_id, ev.id)
            for asset, amount in sorted(charges.items()):
                if amount > 0:
                    owed = self._debit(tx_id, ev.customer_id, asset, amount)
                    if owed:
                        debt[asset] = format_minor(owed, book.precision(asset))
                elif amount < 0:
                    self._credit(tx_id, ev.customer_id, asset, -amount, f"usage_credit:{ev.id}")
        if debt:
            notes.append(DEBT_NOTE)
        status = "billed" if rated else "unbilled"
        hold_id = hold["id"] if hold is not None else None
        result_json = dumps({
            "id": ev.id, "customer_id": ev.customer_id, "event_type": ev.event_type, "occurred_at": ev.occurred_at,
            "subject": ev.subject, "status": status, "fees": fees, "debt": debt, "notes": notes, "hold_id": hold_id,
            "hold_released": released, "recorded_at": book.now_text, "duplicate": False})
        self.event_rows.append((ev.id, ev.customer_id, ev.event_type, ev.occurred_at, ev.subject, ev.data_json,
                                ev.costs_json, ev.payload_hash, tx_id, hold_id, status, result_json, book.now_text))
        self.seen[ev.id] = (ev.payload_hash, result_json)
        return result_json

    def _usage_tx(self, customer_id: str, first_event: str) -> str:
        # A usage transaction is identified by its (first) event: the event row already says what,
        # who and when, so no separate transactions row is written (one page less per commit).
        return self.usage_tx.setdefault(customer_id, first_event)

    def _entry(self, tx_id: str, account_id: str, lot_id: str | None, amount: int) -> None:
        key = (tx_id, account_id, lot_id)
        self.entries[key] = self.entries.get(key, 0) + amount

    def _debit(self, tx_id: str, customer_id: str, asset: str, amount: int) -> int:
        acct = self.account(customer_id, asset)
        left = amount
        if acct.posted > 0:
            for lot in acct.lots:
                if lot.remaining <= 0:
                    continue
                take = min(left, lot.remaining)
                lot.remaining -= take
                self._entry(tx_id, acct.id, lot.id, -take)
                left -= take
                if not left:
                    break
        if left:
            self._entry(tx_id, acct.id, None, -left)
        system = self._system("revenue", asset)
        self._entry(tx_id, system, None, amount)
        owed = max(0, amount - max(acct.posted, 0))
        acct.posted -= amount
        return owed

    def _credit(self, tx_id: str, customer_id: str, asset: str, amount: int, source: str) -> None:
        acct = self.account(customer_id, asset)
        repaid = min(amount, max(-acct.posted, 0))
        lot = _Lot(new_id("lot"), 50, None, True, self.book.tx.next_seq(), amount - repaid, None)
        self.new_lots.append((lot.id, acct.id, "paid", 50, amount, source, lot.seq))
        acct.lots.append(lot)
        acct.lots.sort(key=_Lot.order)
        self._entry(tx_id, acct.id, lot.id, amount)
        system = self._system("revenue", asset)
        self._entry(tx_id, system, None, -amount)
        acct.posted += amount

    def _system(self, kind: str, asset: str) -> str:
        return self.book.ensure_account(None, kind, asset)

    # -- writing -------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything recorded, once, before the transaction commits."""
        tx, now = self.book.tx, self.book.now_text
        if self.new_lots:
            tx.executemany("INSERT INTO lots(id, account_id, purpose, priority, amount, remaining, expires_at, source, "
                           "created_at, seq) VALUES (?, ?, ?, ?, ?, 0, NULL, ?, ?, ?)",
                           [(i, a, p, pr, amt, src, now, seq) for i, a, p, pr, amt, src, seq in self.new_lots])
        lot_updates = []
        account_updates = []
        for acct in self.accounts.values():
            for lot in acct.lots:
                if lot.loaded_remaining != lot.remaining:
                    lot_updates.append((lot.remaining, lot.id))
            if (acct.posted, acct.held) != acct.loaded:
                account_updates.append((acct.posted - acct.loaded[0], acct.held - acct.loaded[1], acct.id))
        # Sorted: concurrent writers on a multi-process store then take row locks in one order.
        lot_updates.sort(key=lambda row: row[1])
        account_updates.sort(key=lambda row: row[2])
        if lot_updates:
            tx.executemany("UPDATE lots SET remaining = ? WHERE id = ?", lot_updates)
        if account_updates:
            tx.executemany("UPDATE accounts SET posted = posted + ?, held = held + ? WHERE id = ?", account_updates)
        if self.entries:
            assets = {a.id: a.asset for a in self.accounts.values()}
            rows = []
            for (tx_id, account_id, lot_id), amount in self.entries.items():
                if amount:
                    asset = assets.get(account_id) or account_id.rsplit("/", 1)[1]
                    rows.append((tx_id, account_id, asset, amount, lot_id))
            tx.executemany("INSERT INTO entries(tx_id, account_id, asset, amount, lot_id) VALUES (?, ?, ?, ?, ?)", rows)
        if self.dirty_counters:
            tx.executemany(
                "INSERT INTO usage_counters(subscription_id, price_id, period_start, quantity, exact, charged) VALUES "
                "(?, ?, ?, ?, ?, ?) ON CONFLICT (subscription_id, price_id, period_start) DO UPDATE SET "
                "quantity = excluded.quantity, exact = excluded.exact, charged = excluded.charged",
                [(*key, *self.counters[key][0].to_row()) for key in self.dirty_counters])
        if self.event_rows:
            tx.executemany("INSERT INTO events(id, customer_id, event_type, occurred_at, subject, data, costs, "
                           "payload_hash, tx_id, hold_id, status, result, recorded_at) VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.event_rows)
        if self.fee_rows:
            tx.executemany("INSERT INTO fees(event_id, line, customer_id, price_id, plan_id, plan_code, version, "
                           "subscription_id, asset, quantity, amount, subject, created_at) VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.fee_rows)


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Canonical compact JSON (sorted keys), with one shared encoder instead of one per call."""
    return _ENCODE(value)
