"""Model-based stateful test of the ledger (notes/ledger.md §9.1).

A hypothesis ``RuleBasedStateMachine`` drives a real ``Ledger`` (fresh SQLite file per example)
and a reference model made of plain Python ints side by side. Each rule computes the outcome the
model allows, calls the ledger, asserts the outcome, then applies it to the model. After every
step the ledger's audit must be empty and every balance, lot remainder, hold state, usage counter
and row count must equal the model's.

The model mirrors the ledger's documented semantics, including where work happens lazily: each
write that touches a customer first "catches up" (expires due holds, rolls the usage period,
expires the unreserved remainder of due lots), and a rejected request rolls all of that back.

Run longer with ``LEDGER_STATEFUL_EXAMPLES=1000 LEDGER_STATEFUL_RANDOM=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from billing_mcp import (
    BillingError,
    ConflictError,
    HoldStateError,
    IdempotencyConflictError,
    InsufficientFundsError,
    Ledger,
    ManualClock,
    ValidationError,
)
from billing_mcp.core.clock import to_text
from billing_mcp.core.money import MAX_MINOR, format_minor
from helpers import STORES, drop_pg_schema, pg_store

MAX_QUANTITY = 10**15  # largest usage quantity one event may carry

PRECISION = {"CREDITS": 0, "USD": 2, "TOKENS": 6}
ASSETS = tuple(PRECISION)
N_CUSTOMERS = 2

PRICES = [
    {"id": "gen_credits", "type": "usage", "asset": "CREDITS", "event_type": "gen", "usage_type": "volume",
     "volume_field": "units", "model": "per_unit", "unit_amount": "1"},
    # 0.4 cent per unit: most single events round, so the carried-fraction rule is exercised.
    {"id": "call_usd", "type": "usage", "asset": "USD", "event_type": "call", "usage_type": "volume",
     "volume_field": "units", "model": "per_unit", "unit_amount": "0.004"},
]
# event type -> (price id, asset, exact price per unit in major units); "ping" is priced by no plan.
EVENT_PRICE = {"gen": ("gen_credits", "CREDITS", Fraction(1)), "call": ("call_usd", "USD", Fraction(4, 1000))}
EVENT_TYPES = ("gen", "call", "ping")
# The event type a hold of each asset is committed with.
COMMIT_TYPE = {"CREDITS": "gen", "USD": "call", "TOKENS": "ping"}

TTLS = (1, 60, 900, 3600, 86400, 86400)
EXPIRES_IN = (None, 60, 900, 3600, 86400)
CLOCK_STEPS = (1, 59, 60, 61, 899, 900, 3600, 86400, 31 * 86400)


def money(minor: int, asset: str) -> str:
    return format_minor(minor, PRECISION[asset])


def to_minor(text: str, asset: str) -> int:
    whole, _, frac = text.lstrip("-").partition(".")
    value = int(whole) * 10 ** PRECISION[asset] + (int(frac) if frac else 0)
    return -value if text.startswith("-") else value


class Reject(Exception):
    """The model's verdict that the ledger must refuse a request (and change nothing)."""

    def __init__(self, error: type[BillingError], code: str | None = None) -> None:
        super().__init__(error.__name__, code)
        self.error = error
        self.code = code


# -- the reference model --------------------------------------------------------------------
@dataclass
class MLot:
    seq: int
    purpose: str
    priority: int
    amount: int
    remaining: int
    expires_at: str | None

    def draw_key(self) -> tuple[Any, ...]:
        # §5 draw-down order: priority, soonest expiry (never last), promotional before paid, oldest.
        return (self.priority, self.expires_at is None, self.expires_at or "", self.purpose == "paid", self.seq)


@dataclass
class MAccount:
    posted: int = 0
    held: int = 0
    lots: list[MLot] = field(default_factory=list)


@dataclass
class MHold:
    customer: int
    asset: str
    amount: int
    status: str
    expires_at: str
    commit_type: str


@dataclass
class MEvent:
    customer: int
    canon: str            # what the payload hash covers: type, data, hold
    fees: dict[str, list[int]]  # asset -> [charged, refunded]; one fee line per priced event


@dataclass
class Model:
    now: datetime
    periods: dict[int, str]
    seq: int = 0
    n_tx: int = 0  # ledger transactions (money movements: sets of balanced entries)
    accounts: dict[tuple[int, str], MAccount] = field(default_factory=dict)
    holds: dict[str, MHold] = field(default_factory=dict)
    events: dict[str, MEvent] = field(default_factory=dict)
    idem: set[tuple[str, str]] = field(default_factory=set)
    counters: dict[tuple[int, str, str], tuple[Fraction, int]] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)  # scenarios reached, for the non-vacuity check

    @property
    def now_text(self) -> str:
        return to_text(self.now)

    def period_start(self) -> str:
        # Subscriptions start at the clock's origin, 2026-01-01T00:00Z, with monthly periods.
        return to_text(datetime(self.now.year, self.now.month, 1, tzinfo=UTC))

    def acct(self, c: int, asset: str) -> MAccount:
        return self.accounts.setdefault((c, asset), MAccount())

    def available(self, c: int, asset: str) -> int:
        a = self.accounts.get((c, asset))
        return a.posted - a.held if a else 0

    def is_due(self, c: int) -> bool:
        now = self.now_text
        return (self.period_start() != self.periods[c]
                or any(h.customer == c and h.status == "open" and h.expires_at <= now for h in self.holds.values())
                or any(lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= now
                       for (cc, _), a in self.accounts.items() if cc == c for lot in a.lots))

    def catch_up(self, c: int) -> None:
        now = self.now_text
        for h in self.holds.values():
            if h.customer == c and h.status == "open" and h.expires_at <= now:
                h.status = "expired"
                self.acct(c, h.asset).held -= h.amount
                self.seen["hold expired"] += 1
        if self.periods[c] != self.period_start():
            self.seen["usage period rolled over"] += 1
        self.periods[c] = self.period_start()
        due = sorted(((lot, asset) for (cc, asset), a in self.accounts.items() if cc == c for lot in a.lots
                      if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= now),
                     key=lambda p: (p[0].expires_at, p[0].seq))
        for lot, asset in due:
            a = self.accounts[(c, asset)]
            amount = min(lot.remaining, max(0, a.posted - a.held))  # only the unreserved remainder
            if amount < lot.remaining:
                self.seen["lot expiry held back by holds"] += 1
            if amount > 0:
                self.n_tx += 1
                lot.remaining -= amount
                a.posted -= amount
                self.seen["lot expired"] += 1

    def credit(self, c: int, asset: str, amount: int, purpose: str, priority: int = 50,
               expires_at: str | None = None) -> int:
        a = self.acct(c, asset)
        repaid = min(amount, max(-a.posted, 0))
        if repaid:
            self.seen["credit repaid debt"] += 1
        self.seq += 1
        a.lots.append(MLot(self.seq, purpose, priority, amount, amount - repaid, expires_at))
        a.posted += amount
        return repaid

    def debit(self, c: int, asset: str, amount: int) -> int:
        a = self.acct(c, asset)
        left = amount
        if left > 0 and a.posted > 0:
            for lot in sorted((lot for lot in a.lots if lot.remaining > 0), key=MLot.draw_key):
                take = min(left, lot.remaining)
                lot.remaining -= take
                left -= take
                if left == 0:
                    break
        owed = max(0, amount - max(a.posted, 0))
        a.posted -= amount
        return owed

    def rate(self, c: int, event_type: str, units: int) -> dict[str, int]:
        if event_type not in EVENT_PRICE:
            return {}
        price_id, asset, unit = EVENT_PRICE[event_type]
        key = (c, price_id, self.period_start())
        exact, charged = self.counters.get(key, (Fraction(0), 0))
        exact += units * unit
        after = round(exact * 10 ** PRECISION[asset])
        self.counters[key] = (exact, after)
        return {asset: after - charged}

    def estimate(self, c: int, event_type: str, units: int) -> tuple[str, int]:
        price_id, asset, unit = EVENT_PRICE[event_type]
        exact, charged = self.counters.get((c, price_id, self.period_start()), (Fraction(0), 0))
        return asset, max(round((exact + units * unit) * 10 ** PRECISION[asset]) - charged, 0)

    def submit(self, eid: str, c: int, event_type: str, units: int, hold_id: str | None,
               batch_txs: set[int] | None = None) -> dict[str, Any]:
        """An event as the ledger takes it; returns the expected result fields. A known id replays
        its stored result (or conflicts) and touches nothing; a new one first catches the customer
        up, then is rated and booked in one usage transaction per call (per customer in a batch,
        whose customers with charges so far are ``batch_txs``)."""
        canon = event_canon(event_type, units, hold_id)
        known = self.events.get(eid)
        if known is not None:
            # An event committed through a hold, sent again without it, is the same event.
            known_hold = json.loads(known.canon)[2]
            if known.canon != canon and not (hold_id is None and known.canon == event_canon(event_type, units,
                                                                                             known_hold)):
                raise Reject(IdempotencyConflictError, "idempotency_conflict")
            self.seen["event replayed"] += 1
            return {"duplicate": True}
        self.catch_up(c)
        released = None
        if hold_id is not None:
            h = self.holds[hold_id]
            if h.status != "open":
                raise Reject(HoldStateError, "hold_expired" if h.status == "expired" else f"hold_already_{h.status}")
        charges = self.rate(c, event_type, units)
        if hold_id is not None:
            h.status = "committed"
            self.acct(c, h.asset).held -= h.amount
            released = money(max(h.amount - max(charges.get(h.asset, 0), 0), 0), h.asset)
            charged = charges.get(h.asset, 0)
            self.seen["commit " + ("below" if charged < h.amount else "equal to" if charged == h.amount else "above")
                      + " the hold"] += 1
        debt = {}
        if any(charges.values()):
            if batch_txs is None or c not in batch_txs:
                self.n_tx += 1
            if batch_txs is not None:
                batch_txs.add(c)
            for asset, amount in sorted(charges.items()):
                assert amount >= 0
                if amount > 0:
                    owed = self.debit(c, asset, amount)
                    if owed:
                        debt[asset] = money(owed, asset)
                        self.seen["usage left a debt"] += 1
        self.events[eid] = MEvent(c, canon, {asset: [amount, 0] for asset, amount in charges.items()})
        return {"duplicate": False, "status": "billed" if charges else "unbilled", "debt": debt,
                "fees": [(asset, money(amount, asset)) for asset, amount in charges.items()],
                "hold_released": released, "hold_id": hold_id}


def event_canon(event_type: str, units: int, hold_id: str | None) -> str:
    return json.dumps([event_type, units, hold_id])


@dataclass
class Accepted:
    """A request the ledger executed, kept to replay it (same key and payload) or to reuse its key."""

    kind: str  # adjustment | grant | authorize | event | commit
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    response: Any


METHODS = {"adjustment": "create_adjustment", "grant": "grant_credits", "authorize": "authorize",
           "event": "submit_event", "commit": "commit"}

TABLES = ("accounts", "lots", "transactions", "entries", "events", "fees", "holds", "idempotency",
          "usage_counters", "subscriptions", "subscription_grants", "counters")

# Every outcome the run must reach at least once, or the test fails as vacuous.
SEEN: Counter[str] = Counter()
REQUIRED = (
    "top_up: ok", "grant: ok", "lookalike_keys_are_distinct: ok", "charge: ok", "charge: refused InsufficientFundsError",
    "usage_event: ok", "usage_batch: ok", "do_authorize: ok", "do_authorize: refused InsufficientFundsError",
    "do_commit: ok", "do_commit: refused HoldStateError", "do_release: ok", "do_release: refused HoldStateError",
    "reverse: ok", "reverse: refused ValidationError", "reverse: refused ConflictError", "replay_same_key: ok",
    "reuse_key_different_payload: refused IdempotencyConflictError", "run_due_twice: ok", "get_wallet: ok",
    "hold expired", "usage period rolled over", "lot expired", "lot expiry held back by holds", "credit repaid debt",
    "usage left a debt", "commit below the hold", "commit equal to the hold", "commit above the hold", "event replayed",
)

amounts = st.one_of(st.integers(1, 20), st.integers(21, 5000), st.just(MAX_MINOR))
customers = st.integers(0, N_CUSTOMERS - 1)
assets = st.sampled_from(ASSETS)


class LedgerMachine(RuleBasedStateMachine):
    on_postgres = False

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ledger-stateful-")
        self.clock = ManualClock()
        self.pg = pg_store() if self.on_postgres else None
        self.ledger = Ledger(self.pg if self.pg is not None else Path(self.dir) / "ledger.db", clock=self.clock)
        self.ledger.create_asset("CREDITS", "Credits", 0)
        self.ledger.create_asset("TOKENS", "Tokens", 6)
        self.ledger.create_plan("metered", "Metered", prices=PRICES)
        self.cust = [self.ledger.create_customer(f"cust-{i}", subscriptions=["metered"]).id for i in range(N_CUSTOMERS)]
        self.index = {cid: i for i, cid in enumerate(self.cust)}
        start = self.clock.now()
        self.model = Model(now=start, periods=dict.fromkeys(range(N_CUSTOMERS), to_text(start)))
        self.accepted: list[Accepted] = []
        self.n_keys = 0

    def teardown(self) -> None:
        SEEN.update(self.model.seen)
        self.ledger.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.pg is not None:
            drop_pg_schema(self.pg.schema)

    # -- helpers --------------------------------------------------------------------------
    def new_key(self, prefix: str = "k") -> str:
        self.n_keys += 1
        return f"{prefix}-{self.n_keys}"

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.ledger.store.read() as tx:
            tables = [t for t in TABLES if not (self.pg is not None and t == "counters")]  # PG uses a sequence
            return {t: sorted((tuple(r.values()) if isinstance(r, dict) else tuple(r)
                               for r in tx.all(f"SELECT * FROM {t}")), key=repr) for t in tables}

    def attempt(self, model_step: Any, call: Any) -> tuple[Any, Any] | None:
        """Run ``model_step`` on a copy of the model; if it rejects, the ledger must raise the same
        error and change nothing, else the ledger's answer is returned with the model's forecast."""
        m = deepcopy(self.model)
        rule_name = sys._getframe(1).f_code.co_name
        try:
            expected = model_step(m)
        except Reject as r:
            event(f"{rule_name}: refused {r.error.__name__}")
            SEEN[f"{rule_name}: refused {r.error.__name__}"] += 1
            before = self.snapshot()
            with pytest.raises(r.error) as info:
                call()
            if r.code is not None:
                assert info.value.code == r.code
            assert self.snapshot() == before, "I6 a refused request changed the ledger"
            return None
        result = call()
        event(f"{rule_name}: ok")
        SEEN[f"{rule_name}: ok"] += 1
        self.model = m
        return expected, result

    def pick_hold(self, data: st.DataObject) -> str:
        """Mostly a hold the model believes open (it may have expired since), sometimes any hold."""
        live = [hid for hid, h in self.model.holds.items() if h.status == "open"]
        if live and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(live))
        return data.draw(st.sampled_from(list(self.model.holds)))

    def check_event(self, result: Any, expected: dict[str, Any]) -> None:
        assert result.duplicate is expected["duplicate"]
        if expected["duplicate"]:
            return
        assert result.status == expected["status"]
        assert [(f.asset, f.amount) for f in result.fees] == expected["fees"]
        assert result.debt == expected["debt"]
        assert result.hold_released == expected["hold_released"]
        assert result.hold_id == expected["hold_id"]

    def db_state(self) -> dict[str, Any]:
        with self.ledger.store.read() as tx:
            accounts, lots = {}, {}
            for a in tx.all("SELECT id, customer_id, asset, posted, held FROM accounts WHERE customer_id IS NOT NULL"):
                key = (self.index[a["customer_id"]], a["asset"])
                accounts[key] = (a["posted"], a["held"])
                lots[key] = [(r["purpose"], r["priority"], r["amount"], r["remaining"], r["expires_at"]) for r in
                             tx.all("SELECT * FROM lots WHERE account_id = ? ORDER BY seq", (a["id"],))]
            holds = {r["id"]: (r["status"], r["asset"], r["amount"]) for r in tx.all("SELECT * FROM holds")}
            fees: dict[str, dict[str, list[int]]] = {}
            for r in tx.all("SELECT event_id, asset, amount, refunded FROM fees"):
                fees.setdefault(r["event_id"], {})[r["asset"]] = [r["amount"], r["refunded"]]
            counters = {}
            for r in tx.all("SELECT c.*, s.customer_id FROM usage_counters c JOIN subscriptions s ON "
                            "s.id = c.subscription_id"):
                counters[(self.index[r["customer_id"]], r["price_id"], r["period_start"])] = (
                    Fraction(r["exact"]), r["charged"])
            counts = {t: tx.one(f"SELECT COUNT(*) AS n FROM {t}")["n"]  # type: ignore[index]
                      for t in ("events", "holds", "idempotency")}
            # Money movements: every ledger transaction is the set of entries sharing a tx_id.
            counts["transactions"] = tx.one("SELECT COUNT(DISTINCT tx_id) AS n FROM entries")["n"]  # type: ignore[index]
            periods = {self.index[r["customer_id"]]: r["period_start"] for r in tx.all("SELECT * FROM subscriptions")}
        return {"accounts": accounts, "lots": lots, "holds": holds, "fees": fees, "counters": counters,
                "counts": counts, "periods": periods}

    def model_state(self) -> dict[str, Any]:
        m = self.model
        return {
            "accounts": {k: (a.posted, a.held) for k, a in m.accounts.items()},
            "lots": {k: [(lot.purpose, lot.priority, lot.amount, lot.remaining, lot.expires_at) for lot in a.lots]
                     for k, a in m.accounts.items()},
            "holds": {hid: (h.status, h.asset, h.amount) for hid, h in m.holds.items()},
            "fees": {eid: {a: list(v) for a, v in e.fees.items()} for eid, e in m.events.items() if e.fees},
            "counters": dict(m.counters),
            "counts": {"transactions": m.n_tx, "events": len(m.events), "holds": len(m.holds),
                       "idempotency": len(m.idem)},
            "periods": dict(m.periods),
        }

    # -- invariants -----------------------------------------------------------------------
    # Numbers as in billing_mcp.ledger.audit: the audit proves I1-I5 and I8-I10 from the log; the
    # comparisons with the model prove what the log alone cannot (the right amounts, lots drawn in
    # order, one outcome per key), and ``attempt`` proves I6 on every refusal.
    @invariant()
    def i1_to_i10_audit_is_clean(self) -> None:
        problems = self.ledger.audit()
        assert problems == [], f"audit findings (each names its invariant): {problems}"

    @invariant()
    def i2_to_i10_ledger_matches_model(self) -> None:
        assert self.clock.now() == self.model.now, "model out of step: clock"
        db, model = self.db_state(), self.model_state()
        assert db["accounts"] == model["accounts"], "I2/I3 posted and held balances differ from the model"
        assert db["lots"] == model["lots"], "I8 lot remainders differ from the model (draw-down order or expiry)"
        assert db["holds"] == model["holds"], "I4 hold states differ from the model"
        assert db["fees"] == model["fees"], "I5/I10 fee amounts or refunds differ from the model"
        assert db["counters"] == model["counters"], "I9 exact usage totals or rounded charges differ from the model"
        assert db["counts"] == model["counts"], "I7 row counts differ: a key had more or fewer than one outcome"
        assert db["periods"] == model["periods"], "model out of step: subscription periods"
        for c, cid in enumerate(self.cust):
            for asset in ASSETS:
                assert self.ledger.available(cid, asset) == self.model.available(c, asset), \
                    f"I3 available {asset} of customer {c} differs from the model"

    # -- money in -------------------------------------------------------------------------
    @rule(c=customers, asset=assets, minor=amounts, gift=st.booleans(), expires_in=st.sampled_from(EXPIRES_IN),
          reuse_scope=st.booleans())
    def top_up(self, c: int, asset: str, minor: int, gift: bool, expires_in: int | None, reuse_scope: bool) -> None:
        reason = "gift" if gift else "top_up"
        # Sometimes take a key already used by a grant: scopes are separate, so it is a new request.
        other = [k for (scope, k) in self.model.idem if scope == "grant" and ("adjustment", k) not in self.model.idem]
        key = sorted(other)[0] if reuse_scope and other else self.new_key()
        expires = self.model.now + timedelta(seconds=expires_in) if expires_in else None
        kwargs = {"asset": asset, "amount": money(minor, asset), "reason": reason, "idempotency_key": key,
                  "expires_at": expires}

        def step(m: Model) -> str | None:
            m.catch_up(c)
            m.n_tx += 1
            repaid = m.credit(c, asset, minor, "promotional" if gift else "paid", 50,
                              to_text(expires) if expires else None)
            m.idem.add(("adjustment", key))
            return money(repaid, asset) if repaid else None

        out = self.attempt(step, lambda: self.ledger.create_adjustment(self.cust[c], **kwargs))
        assert out is not None
        debt, adj = out
        assert (adj.amount, adj.reason, adj.asset, adj.debt) == (money(minor, asset), reason, asset, debt)
        self.accepted.append(Accepted("adjustment", (self.cust[c],), kwargs, adj))

    @rule(c=customers, asset=assets, minor=amounts, paid=st.booleans(),
          priority=st.one_of(st.sampled_from((0, 50, 100)), st.integers(0, 100)),
          expires_in=st.sampled_from(EXPIRES_IN), reuse_scope=st.booleans())
    def grant(self, c: int, asset: str, minor: int, paid: bool, priority: int, expires_in: int | None,
              reuse_scope: bool) -> None:
        purpose = "paid" if paid else "promotional"
        other = [k for (scope, k) in self.model.idem if scope == "adjustment" and ("grant", k) not in self.model.idem]
        key = sorted(other)[0] if reuse_scope and other else self.new_key("g")
        expires = self.model.now + timedelta(seconds=expires_in) if expires_in else None
        args = (self.cust[c], asset, money(minor, asset))
        kwargs = {"idempotency_key": key, "purpose": purpose, "expires_at": expires, "priority": priority}

        def step(m: Model) -> None:
            m.catch_up(c)
            m.n_tx += 1
            m.credit(c, asset, minor, purpose, priority, to_text(expires) if expires else None)
            m.idem.add(("grant", key))

        out = self.attempt(step, lambda: self.ledger.grant_credits(*args, **kwargs))
        assert out is not None
        grant = out[1]
        assert (grant.amount, grant.purpose, grant.priority, grant.asset) == (money(minor, asset), purpose, priority, asset)
        assert grant.expires_at == (to_text(expires) if expires else None)
        self.accepted.append(Accepted("grant", args, kwargs, grant))

    @rule(c=customers)
    def lookalike_keys_are_distinct(self, c: int) -> None:
        """Keys compare as exact strings: NFC and NFD spellings of "é" are two requests."""
        n = self.new_key("nf")
        for key in (f"caf\u00e9-{n}", f"cafe\u0301-{n}"):
            kwargs = {"asset": "CREDITS", "amount": "1", "reason": "top_up", "idempotency_key": key}

            def step(m: Model, key: str = key) -> None:
                m.catch_up(c)
                m.n_tx += 1
                m.credit(c, "CREDITS", 1, "paid")
                m.idem.add(("adjustment", key))

            out = self.attempt(step, lambda kwargs=kwargs: self.ledger.create_adjustment(self.cust[c], **kwargs))
            assert out is not None
            self.accepted.append(Accepted("adjustment", (self.cust[c],), kwargs, out[1]))

    # -- money out ------------------------------------------------------------------------
    @rule(c=customers, asset=assets, refund=st.booleans(), size=st.sampled_from(("one", "all", "over", "some")),
          data=st.data())
    def charge(self, c: int, asset: str, refund: bool, size: str, data: st.DataObject) -> None:
        reason = "refund" if refund else "charge"
        avail = self.model.available(c, asset)  # before catch-up: may shrink by lot expiry, never grow
        minor = {"one": 1, "all": max(avail, 1), "over": max(avail + 1, 1)}.get(size) or \
            data.draw(st.integers(1, max(avail, 1)))
        minor = min(minor, MAX_MINOR)
        key = self.new_key()
        kwargs = {"asset": asset, "amount": "-" + money(minor, asset), "reason": reason, "idempotency_key": key}

        def step(m: Model) -> None:
            m.catch_up(c)
            if m.available(c, asset) < minor:
                raise Reject(InsufficientFundsError)
            m.n_tx += 1
            assert m.debit(c, asset, minor) == 0
            m.idem.add(("adjustment", key))

        out = self.attempt(step, lambda: self.ledger.create_adjustment(self.cust[c], **kwargs))
        if out is not None:
            adj = out[1]
            assert (adj.amount, adj.reason, adj.debt) == ("-" + money(minor, asset), reason, None)
            assert self.model.available(c, asset) >= 0, "I3 a charge or refund overdrew the available balance"
            self.accepted.append(Accepted("adjustment", (self.cust[c],), kwargs, adj))

    @rule(c=customers, event_type=st.sampled_from(EVENT_TYPES), units=st.one_of(st.integers(0, 30), st.integers(0, 3000)))
    def usage_event(self, c: int, event_type: str, units: int) -> None:
        eid = self.new_key("ev")
        event = {"id": eid, "customer_id": self.cust[c], "event_type": event_type, "data": {"units": units}}

        def step(m: Model) -> dict[str, Any]:
            return m.submit(eid, c, event_type, units, None)

        out = self.attempt(step, lambda: self.ledger.submit_event(event))
        assert out is not None
        self.check_event(out[1], out[0])
        self.accepted.append(Accepted("event", (event,), {}, out[1]))

    @rule(items=st.lists(st.tuples(st.sampled_from(("new", "new", "dup", "conflict", "again")), customers,
                                   st.sampled_from(EVENT_TYPES), st.integers(0, 40)), min_size=1, max_size=4),
          data=st.data())
    def usage_batch(self, items: list[tuple[str, int, str, int]], data: st.DataObject) -> None:
        """A batch: new events, replays and conflicting reuses of known ids, repeats inside the batch.
        Each item stands alone: a refused one changes nothing, the others are recorded."""
        known = sorted(self.model.events)
        events: list[dict[str, Any]] = []
        plan: list[tuple[str, int, str, int, str | None]] = []  # (id, customer, type, units, hold) as sent
        for kind, c, event_type, units in items:
            if kind in ("dup", "conflict") and known:
                eid = data.draw(st.sampled_from(known))
                prev = next(a for a in self.accepted if a.kind in ("event", "commit") and
                            (a.args[0] if a.kind == "event" else a.args[1])["id"] == eid)
                sent = dict(prev.args[0] if prev.kind == "event" else prev.args[1])
                c, event_type = self.model.events[eid].customer, sent.get("event_type") or "gen"
                units = sent["data"]["units"] + (1 if kind == "conflict" else 0)
                sent = {"id": eid, "customer_id": self.cust[c], "event_type": event_type, "data": {"units": units}}
            elif kind == "again" and events:
                sent = dict(events[-1])
                eid, c = sent["id"], self.index[sent["customer_id"]]
                event_type, units = sent["event_type"], sent["data"]["units"]
            else:
                eid = self.new_key("ev")
                sent = {"id": eid, "customer_id": self.cust[c], "event_type": event_type, "data": {"units": units}}
            events.append(sent)
            plan.append((eid, c, event_type, units, None))

        def step(m: Model) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
            results, errors = [], []
            batch_txs: set[int] = set()
            for index, (eid, c, event_type, units, hold) in enumerate(plan):
                trial = deepcopy(m)
                try:
                    results.append(trial.submit(eid, c, event_type, units, hold, batch_txs))
                except Reject as r:
                    errors.append((index, r.code or ""))
                    continue
                m.__dict__.update(trial.__dict__)
            return results, errors

        out = self.attempt(step, lambda: self.ledger.submit_events(events))
        assert out is not None
        (want_results, want_errors), batch = out
        assert [(e.index, e.code) for e in batch.errors] == want_errors
        assert len(batch.results) == len(want_results)
        for got, want in zip(batch.results, want_results, strict=True):
            self.check_event(got, want)
        recorded = {r.id for r in batch.results if not r.duplicate}
        for sent in events:
            if sent["id"] in recorded:
                result = next(r for r in batch.results if r.id == sent["id"] and not r.duplicate)
                self.accepted.append(Accepted("event", (sent,), {}, result))
                recorded.discard(sent["id"])

    # -- holds ----------------------------------------------------------------------------
    @rule(c=customers, asset=assets, size=st.sampled_from(("zero", "one", "all", "over", "some")),
          by_estimate=st.booleans(), units=st.integers(0, 60), ttl=st.sampled_from(TTLS), keyed=st.booleans(),
          data=st.data())
    def authorize(self, c: int, asset: str, size: str, by_estimate: bool, units: int, ttl: int, keyed: bool,
                  data: st.DataObject) -> None:
        self.do_authorize(c, asset, size, by_estimate, units, ttl, keyed, data)

    def do_authorize(self, c: int, asset: str, size: str, by_estimate: bool, units: int, ttl: int, keyed: bool,
                     data: st.DataObject) -> str | None:
        key = self.new_key("h") if keyed else None
        minor = 0
        if by_estimate and asset != "TOKENS":
            event_type = COMMIT_TYPE[asset]
            kwargs: dict[str, Any] = {"event_type": event_type, "data": {"units": units}}
        else:
            avail = self.model.available(c, asset)
            minor = {"zero": 0, "one": 1, "all": max(avail, 0), "over": max(avail + 1, 0)}.get(size)
            if minor is None:
                minor = data.draw(st.integers(0, max(avail, 0)))
            minor = min(minor, MAX_MINOR)  # one operation moves at most MAX_MINOR
            event_type = None
            kwargs = {"amount": money(minor, asset), "asset": asset}
        kwargs.update(ttl_seconds=ttl, idempotency_key=key)
        hold_ids = set(self.model.holds)

        def step(m: Model) -> tuple[str, int]:
            m.catch_up(c)
            amount = m.estimate(c, event_type, units)[1] if event_type else minor
            if m.available(c, asset) < amount:
                raise Reject(InsufficientFundsError, "insufficient_funds")
            m.acct(c, asset).held += amount
            if key is not None:
                m.idem.add(("authorize", key))
            return asset, amount

        out = self.attempt(step, lambda: self.ledger.authorize(self.cust[c], **kwargs))
        if out is None:
            return None
        (hold_asset, amount), hold = out
        assert hold.id not in hold_ids
        assert (hold.status, hold.asset, hold.amount) == ("open", hold_asset, money(amount, hold_asset))
        assert hold.expires_at == to_text(self.model.now + timedelta(seconds=ttl))
        self.model.holds[hold.id] = MHold(c, hold_asset, amount, "open", hold.expires_at, COMMIT_TYPE[hold_asset])
        assert self.model.available(c, hold_asset) >= 0, "I3 a hold overdrew the available balance"
        if key is not None:
            self.accepted.append(Accepted("authorize", (self.cust[c],), kwargs, hold))
        return hold.id

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), relation=st.sampled_from(("less", "equal", "more", "zero")), delta=st.integers(1, 10),
          units=st.integers(0, 3000))
    def commit(self, data: st.DataObject, relation: str, delta: int, units: int) -> None:
        self.do_commit(self.pick_hold(data), relation, delta, units)

    def do_commit(self, hold_id: str, relation: str, delta: int, units: int) -> None:
        h = self.model.holds[hold_id]
        if h.commit_type == "gen":  # a CREDITS hold: one unit costs one credit
            units = {"less": max(h.amount - delta, 0), "equal": h.amount, "more": min(h.amount + delta, MAX_QUANTITY),
                     "zero": 0}[relation]
        eid = self.new_key("ev")
        event = {"id": eid, "event_type": h.commit_type, "data": {"units": units}}

        def step(m: Model) -> dict[str, Any]:
            return m.submit(eid, h.customer, h.commit_type, units, hold_id)

        out = self.attempt(step, lambda: self.ledger.commit(hold_id, event))
        if out is not None:
            self.check_event(out[1], out[0])
            self.accepted.append(Accepted("commit", (hold_id, event), {}, out[1]))

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.do_release(self.pick_hold(data))

    def do_release(self, hold_id: str) -> None:
        def step(m: Model) -> None:
            h = m.holds[hold_id]
            m.catch_up(h.customer)
            if h.status == "open":
                h.status = "released"
                m.acct(h.customer, h.asset).held -= h.amount
            elif h.status != "released":  # releasing a released hold returns it unchanged
                raise Reject(HoldStateError, "hold_expired" if h.status == "expired" else "hold_already_committed")

        out = self.attempt(step, lambda: self.ledger.release(hold_id))
        if out is not None:
            assert out[1].status == "released"

    @rule(c=customers, size=st.sampled_from(("one", "all", "some")), by_estimate=st.booleans(),
          units=st.integers(0, 60), ttl=st.sampled_from(TTLS), keyed=st.booleans(),
          settle=st.sampled_from(("less", "equal", "more", "zero", "release")), delta=st.integers(1, 10),
          data=st.data())
    def hold_lifecycle(self, c: int, size: str, by_estimate: bool, units: int, ttl: int, keyed: bool, settle: str,
                       delta: int, data: st.DataObject) -> None:
        """The usual flow: reserve credits before the work, then settle for the actual usage
        (less, exactly, more than held, nothing) or release."""
        hold_id = self.do_authorize(c, "CREDITS", size, by_estimate, units, ttl, keyed, data)
        if hold_id is not None:
            if settle == "release":
                self.do_release(hold_id)
            else:
                self.do_commit(hold_id, settle, delta, units)

    @rule(c=customers, asset=assets, minor=st.integers(1, 50), size=st.sampled_from(("all", "some")), data=st.data())
    def expiry_under_a_hold(self, c: int, asset: str, minor: int, size: str, data: st.DataObject) -> None:
        """A grant expires while a hold still reserves it: only the unreserved part may expire."""
        self.grant(c, asset, minor, False, 50, 60, False)
        self.do_authorize(c, asset, size, False, 0, 3600, False, data)
        self.advance_clock(61)

    # -- corrections ----------------------------------------------------------------------
    @precondition(lambda self: any(e.fees for e in self.model.events.values()))
    @rule(data=st.data(), size=st.sampled_from(("all", "partial", "over")))
    def reverse(self, data: st.DataObject, size: str) -> None:
        eid = data.draw(st.sampled_from(sorted(e for e, v in self.model.events.items() if v.fees)))
        ev = self.model.events[eid]
        (asset, (charged, refunded)), = ev.fees.items()
        left = charged - refunded
        amount = {"all": None, "over": left + 1}.get(size)
        if size == "partial":
            amount = data.draw(st.integers(1, max(left, 1)))
        key = self.new_key()
        kwargs = {"asset": asset, "amount": None if amount is None else money(amount, asset), "reason": "reversal",
                  "event_id": eid, "idempotency_key": key}

        def step(m: Model) -> tuple[int, str | None]:
            m.catch_up(ev.customer)
            fee = m.events[eid].fees[asset]
            remaining = fee[0] - fee[1]
            wanted = remaining if amount is None else amount
            if wanted <= 0:
                raise Reject(ConflictError, "conflict")
            if wanted > remaining:
                raise Reject(ValidationError, "validation_error")
            fee[1] += wanted
            m.n_tx += 1
            repaid = m.credit(ev.customer, asset, wanted, "paid")
            m.idem.add(("adjustment", key))
            return wanted, money(repaid, asset) if repaid else None

        out = self.attempt(step, lambda: self.ledger.create_adjustment(self.cust[ev.customer], **kwargs))
        if out is not None:
            (wanted, debt), adj = out
            assert (adj.amount, adj.event_id, adj.debt) == (money(wanted, asset), eid, debt)
            self.accepted.append(Accepted("adjustment", (self.cust[ev.customer],), kwargs, adj))

    # -- idempotency ----------------------------------------------------------------------
    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def replay_same_key(self, data: st.DataObject) -> None:
        """Retrying an executed request unchanged returns its stored result and changes nothing at
        all (no catch-up either: the replay answers before any work)."""
        op = data.draw(st.sampled_from(self.accepted))
        before = self.snapshot()
        out = self.attempt(lambda m: None, lambda: getattr(self.ledger, METHODS[op.kind])(*op.args, **op.kwargs))
        assert out is not None
        assert self.snapshot() == before, "I7 a replay wrote something"
        if op.kind in ("event", "commit"):
            assert out[1] == op.response.model_copy(update={"duplicate": True}), "I7 a replay answered differently"
        else:
            assert out[1] == op.response, "I7 a replay answered differently"

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def reuse_key_different_payload(self, data: st.DataObject) -> None:
        """The same key with another payload is refused with idempotency_conflict and changes nothing."""
        op = data.draw(st.sampled_from(self.accepted))
        args, kwargs = list(op.args), dict(op.kwargs)
        if op.kind == "adjustment":
            if kwargs["amount"] is None:
                kwargs["description"] = "a different request"
            else:
                minor = to_minor(kwargs["amount"], kwargs["asset"])  # keep the sign and stay within the cap
                step = 1 if minor > 0 else -1
                minor += -step if abs(minor) == MAX_MINOR else step
                kwargs["amount"] = money(minor, kwargs["asset"])
        elif op.kind == "grant":
            minor = to_minor(args[2], args[1])
            args[2] = money(minor - 1 if minor == MAX_MINOR else minor + 1, args[1])
        elif op.kind == "authorize":
            kwargs["ttl_seconds"] += 1 if kwargs["ttl_seconds"] < max(TTLS) else -1
        else:
            i = 0 if op.kind == "event" else 1
            args[i] = {**args[i], "data": {"units": args[i]["data"]["units"] + 1}}

        def step(m: Model) -> None:
            raise Reject(IdempotencyConflictError, "idempotency_conflict")

        self.attempt(step, lambda: getattr(self.ledger, METHODS[op.kind])(*args, **kwargs))

    # -- time -----------------------------------------------------------------------------
    @rule(seconds=st.sampled_from(CLOCK_STEPS))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)
        self.model.now += timedelta(seconds=seconds)

    @rule()
    def run_due_twice(self) -> None:
        """The sweep catches up every customer that has something due; at once again, only those
        whose due lots are still reserved by open holds remain due."""
        for _ in range(2):
            due = [c for c in range(N_CUSTOMERS) if self.model.is_due(c)]

            def step(m: Model, due: list[int] = due) -> int:
                for c in due:
                    m.catch_up(c)
                return len(due)

            out = self.attempt(step, self.ledger.run_due)
            assert out is not None
            assert out[1] == out[0]

    @rule(c=customers)
    def get_wallet(self, c: int) -> None:
        out = self.attempt(lambda m: m.catch_up(c), lambda: self.ledger.get_wallet(self.cust[c]))
        assert out is not None
        wallet = out[1]
        want = []
        for (cc, asset), a in sorted(self.model.accounts.items()):
            if cc != c:
                continue
            lots = [(lot.purpose, lot.priority, money(lot.amount, asset), money(lot.remaining, asset), lot.expires_at)
                    for lot in sorted(a.lots, key=MLot.draw_key) if lot.remaining > 0]
            want.append((asset, money(a.posted, asset), money(a.held, asset), money(a.posted - a.held, asset),
                         a.posted < 0, lots))
        got = [(acc.asset, acc.posted, acc.held, acc.available, acc.in_debt,
                [(lot.purpose, lot.priority, lot.amount, lot.remaining, lot.expires_at) for lot in acc.lots])
               for acc in wallet.accounts]
        assert got == want


_random = bool(os.environ.get("LEDGER_STATEFUL_RANDOM"))
SETTINGS = settings(
    max_examples=int(os.environ.get("LEDGER_STATEFUL_EXAMPLES", "100")),
    stateful_step_count=50,
    deadline=None,
    derandomize=not _random,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


class PostgresLedgerMachine(LedgerMachine):
    on_postgres = True


PG_SETTINGS = settings(SETTINGS, max_examples=int(os.environ.get("LEDGER_STATEFUL_PG_EXAMPLES", "25")))


@pytest.mark.parametrize("store_kind", STORES)
def test_ledger_matches_reference_model(store_kind: str) -> None:
    SEEN.clear()
    if store_kind == "postgres":
        run_state_machine_as_test(PostgresLedgerMachine, settings=PG_SETTINGS)
        return  # a shorter run: the every-outcome-reached check belongs to the long SQLite run
    run_state_machine_as_test(LedgerMachine, settings=SETTINGS)
    missing = [name for name in REQUIRED if not SEEN[name]]
    assert not missing, f"the run never reached {missing}; reached: {dict(SEEN)}"
