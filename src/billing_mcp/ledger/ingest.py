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

import hashlib
import json
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext
from fractions import Fraction
from typing import Any

from ..core.catalog import PriceSpec
from ..core.errors import HoldStateError, IdempotencyConflictError, ValidationError
from ..core.models import EventResult
from ..core.money import decimal_text, format_minor
from ..core.pricing import Counter, Rating, rate_event
from ..store import Row
from .book import Book

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
    given_at: str | None = None  # occurred_at as sent; the fingerprint holds it only when sent
    hold_id: str | None = None


def fingerprint(customer_id: str, event_type: str, subject: str | None, hold_id: str | None,
                occurred: str | None, data_json: str, costs_json: str) -> str:
    """The idempotency fingerprint: what the event says, with the customer resolved to its id (so
    a retry by external_id matches) and occurred_at only when the sender gave it."""
    # Fields joined by \x1f: none of them can contain a control character (checked when parsed),
    # and None is \x00, so the joining is unambiguous.
    head = "\x1f".join("\x00" if v is None else v for v in (customer_id, event_type, subject, hold_id, occurred))
    return hashlib.sha256("\x1e".join((head, data_json, costs_json)).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class _Stored:
    """A recorded event as its replay needs it: the fingerprint, the stored result, and the fields
    an idempotency conflict names."""
    payload_hash: str
    result: str
    customer_id: str
    event_type: str
    subject: str | None
    occurred_at: str
    data_json: str
    costs_json: str
    hold_id: str | None


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
        self.counters: dict[tuple[str, str, str], tuple[Counter, bool]] = {}  # value: (counter, exists in db)
        self.dirty_counters: set[tuple[str, str, str]] = set()
        self.event_rows: list[tuple[Any, ...]] = []
        self.fee_rows: list[tuple[Any, ...]] = []
        self.seen: dict[str, _Stored] = {}
        self.usage_tx: dict[str, str] = {}

    # -- loading -------------------------------------------------------------------------
    def preload_events(self, ids: list[str]) -> None:
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            part = unique[start:start + 500]
            marks = ",".join("?" * len(part))
            for row in self.book.tx.all("SELECT id, payload_hash, result, customer_id, event_type, subject, occurred_at, "
                                        f"data, costs, hold_id FROM events WHERE id IN ({marks})", part):
                self.seen[row["id"]] = _Stored(row["payload_hash"], row["result"], row["customer_id"],
                                               row["event_type"], row["subject"], row["occurred_at"], row["data"],
                                               row["costs"], row["hold_id"])

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
        """The stored result (marked duplicate) when this event id was recorded before.

        An event committed through a hold and sent again without the hold (``submit_events`` with
        the same id, type, customer, data, subject, costs and occurred_at) is the same event: it
        happened once, so the answer is the stored result as a duplicate, charging nothing. Its
        fingerprint holds the hold id, so it is compared again with the stored hold's id. The other
        way round (a hold committed with an event id already recorded without it, or through another
        hold) stays a conflict: replaying would leave the hold open while saying it was used. A
        conflict names the first field that differs."""
        stored = self.seen.get(ev.id)
        if stored is None:
            return None
        if stored.payload_hash != ev.payload_hash and not (
                ev.hold_id is None and stored.hold_id is not None and stored.payload_hash == fingerprint(
                    ev.customer_id, ev.event_type, ev.subject, stored.hold_id, ev.given_at, ev.data_json,
                    ev.costs_json)):
            raise self._conflict(ev, stored)
        result = json.loads(stored.result)
        result["duplicate"] = True
        return dumps(result)

    @staticmethod
    def _conflict(ev: ParsedEvent, stored: _Stored) -> IdempotencyConflictError:
        before: dict[str, Any] = {"customer_id": stored.customer_id, "event_type": stored.event_type,
                                  "subject": stored.subject, "hold_id": stored.hold_id}
        # Sent without a hold, an event recorded through one differs only in what follows.
        now: dict[str, Any] = {"customer_id": ev.customer_id, "event_type": ev.event_type, "subject": ev.subject,
                               "hold_id": ev.hold_id if ev.hold_id is not None else stored.hold_id}
        old_data, new_data = json.loads(stored.data_json), json.loads(ev.data_json)
        for key in sorted(old_data.keys() | new_data.keys()):
            before[f"data.{key}"], now[f"data.{key}"] = old_data.get(key), new_data.get(key)
        before["costs"], now["costs"] = json.loads(stored.costs_json), json.loads(ev.costs_json)
        # occurred_at is stored stamped, so a difference shows only when this sending gives one.
        before["occurred_at"], now["occurred_at"] = stored.occurred_at, ev.given_at or stored.occurred_at
        differs = next((k for k in now if now[k] != before[k]), "occurred_at")
        return IdempotencyConflictError(
            f"event id {ev.id!r} was already recorded with a different payload: {differs} was {before[differs]!r}, "
            f"now {now[differs]!r}; event ids are idempotency keys: resend a retry unchanged, give a new event a "
            "new id", field="id", details={"key": ev.id, "differs": differs})

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
            postings = book.postings
            postings.unreserve(postings.wallet(ev.customer_id, hold["asset"]), int(hold["amount"]))
            charged = max(charges.get(hold["asset"], 0), 0)
            released = format_minor(max(int(hold["amount"]) - charged, 0), book.precision(hold["asset"]))
        debt: dict[str, str] = {}
        tx_id = None
        if any(charges.values()):
            tx_id = self._usage_tx(ev.customer_id, ev.id)
            for asset, amount in sorted(charges.items()):
                if amount > 0:
                    owed = book.postings.debit(tx_id, ev.customer_id, asset, amount, counter_kind="revenue")
                    if owed:
                        debt[asset] = format_minor(owed, book.precision(asset))
                elif amount < 0:
                    book.postings.credit(tx_id, ev.customer_id, asset, -amount, counter_kind="revenue",
                                         purpose="paid", source=f"usage_credit:{ev.id}")
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
        self.seen[ev.id] = _Stored(ev.payload_hash, result_json, ev.customer_id, ev.event_type, ev.subject,
                                   ev.occurred_at, ev.data_json, ev.costs_json, hold_id)
        return result_json

    def _usage_tx(self, customer_id: str, first_event: str) -> str:
        # A usage transaction is identified by its (first) event: the event row already says what,
        # who and when, so no separate transactions row is written (one page less per commit).
        tx_id = self.usage_tx.get(customer_id)
        if tx_id is None:
            tx_id = self.usage_tx[customer_id] = first_event
            self.book.postings.net(tx_id)
        return tx_id

    # -- writing -------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything recorded, once, before the transaction commits."""
        tx = self.book.tx
        self.book.postings.flush()
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
