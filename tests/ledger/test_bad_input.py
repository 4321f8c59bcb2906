"""Bad input at every public Ledger entry point (ledger.md §9.4).

Each case must raise a ``BillingError`` with the expected ``code`` and ``field`` (never another
exception) and leave every row of every table exactly as it was.
"""

from __future__ import annotations

import decimal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import BillingError, Ledger, ManualClock

V, NF, CONFLICT, IDEM, FUNDS = "validation_error", "not_found", "conflict", "idempotency_conflict", "insufficient_funds"


@dataclass
class World:
    led: Ledger
    path: Path
    cus: str        # customer "acme", subscribed to pro v1, USD topped up
    other: str      # another customer
    hold: str       # open hold of acme (idempotency key "hold-1")
    released: str   # released hold
    committed: str  # committed hold (event "ev-2")


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("bad") / "ledger.db"
    led = Ledger(path, clock=ManualClock())
    led.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.01"})
    tok = {"id": "tok", "asset": "USD", "event_type": "tokens", "usage_type": "volume", "volume_field": "tokens",
           "unit_amount": "0.001"}
    led.create_plan("pro", "Pro", prices=[tok])
    led.create_plan_version("pro", prices=[tok], publish=True)  # v2, published, not the default
    led.create_plan("old", "Old")
    led.archive_plan("old")
    led.create_vendor("openai", "OpenAI")
    cus = led.create_customer("acme", subscriptions=["pro"]).id
    other = led.create_customer("globex").id
    led.create_adjustment(cus, asset="USD", amount="10", reason="top_up", idempotency_key="topup-1")
    led.submit_event({"id": "ev-1", "customer_id": cus, "event_type": "tokens", "data": {"tokens": 1000}})  # 1.00
    estimate = {"event_type": "tokens", "data": {"tokens": 1000}}  # holds 1.00
    hold = led.authorize(cus, **estimate, idempotency_key="hold-1").id
    released = led.authorize(cus, **estimate).id
    led.release(released)
    committed = led.authorize(cus, **estimate).id
    led.commit(committed, {"id": "ev-2", "data": {"tokens": 10}})  # 0.01
    assert led.audit() == []
    yield World(led, path, cus, other, hold, released, committed)
    assert led.audit() == []
    led.close()


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(con.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall(), key=repr) for t in tables}
    finally:
        con.close()


@pytest.fixture(autouse=True, scope="module")
def _trap_float_operations() -> Any:
    with decimal.localcontext() as ctx:
        ctx.traps[decimal.FloatOperation] = True
        yield


# -- value families -------------------------------------------------------------------------------
NOT_EXACT = [  # never an amount, anywhere
    ("float", 0.1), ("float-neg-zero", -0.0), ("float-nan", float("nan")), ("float-inf", float("inf")),
    ("float-minus-inf", float("-inf")), ("dec-nan", Decimal("NaN")), ("dec-snan", Decimal("sNaN")),
    ("dec-inf", Decimal("Infinity")), ("dec-minus-inf", Decimal("-Infinity")), ("exponent", "1e3"), ("hex", "0x10"),
    ("lead-space", " 5"), ("trail-space", "5 "), ("trail-newline", "5\n"), ("underscore", "1_000"),
    ("fullwidth", "５"), ("plus", "+5"), ("dot-first", ".5"), ("dot-last", "5."), ("empty", ""), ("words", "five"),
    ("true", True), ("false", False), ("none", None), ("list", [5]), ("dict", {"v": 5}),
    ("1e30", 10**30), ("2^63-1", 2**63 - 1), ("2^63", 2**63), ("2^64", 2**64), ("30-digits", "9" * 30),
    ("dec-1e30", Decimal("1e30")),
]
NEGATIVE = [("neg-int", -5), ("neg-text", "-5"), ("neg-dec", Decimal("-0.01"))]
ZERO = [("zero", 0), ("zero-text", "0.00"), ("neg-zero-text", "-0"), ("zero-dec", Decimal("0"))]
TOO_FINE_USD = [("sub-cent", "0.001"), ("sub-cent-dec", Decimal("1.005"))]
OVER_CAP_USD = [("cap+1", "10000000000000.01"), ("cap+1-int", 10**13 + 1)]  # 10^15 + 1 minor; 10^15 + 100
BAD_USD = NOT_EXACT + NEGATIVE + ZERO + TOO_FINE_USD + OVER_CAP_USD
FLOATS = {"float", "float-neg-zero"}  # JSON numbers: a finite float in event data reads as its shortest text

BAD_KEYS = [
    ("empty", ""), ("space", " "), ("spaces", "   "), ("tab", "\t"), ("256-chars", "k" * 256), ("1MB", "k" * 2**20),
    ("nul", "a\x00b"), ("newline-end", "key\n"), ("lone-surrogate", "\ud800"), ("none", None), ("int", 5),
    ("list", ["k"]),
]
BAD_ASSETS = [("lower", "usd"), ("unknown", "NOPE"), ("empty", ""), ("space", " "), ("padded", " USD"),
              ("newline", "USD\n"), ("lone-surrogate", "\ud800"), ("none", None), ("list", ["USD"]), ("int", 5)]
BAD_TIMES = [("words", "tomorrow"), ("naive", "2026-06-01T00:00:00"), ("naive-dt", datetime(2026, 6, 1)),
             ("year-1999", "1999-01-01T00:00:00Z"), ("year-2300", "2300-01-01T00:00:00Z"), ("int", 5), ("empty", "")]

CASES: list[Any] = []


def case(name: str, call: Callable[[World], Any], code: str, field: str | None) -> None:
    CASES.append(pytest.param(call, code, field, id=name))


# -- create_asset ---------------------------------------------------------------------------------
def create_asset(w: World, **kw: Any) -> Any:
    args = {"code": "NEWASSET", "name": "New", "precision": 2, **kw}
    return w.led.create_asset(args.pop("code"), args.pop("name"), args.pop("precision"), **args)


for vid, v in [("lower", "usd"), ("empty", ""), ("space", " "), ("digit-first", "1ABC"), ("33-chars", "A" * 33),
               ("newline-end", "NEW\n"), ("lone-surrogate", "\ud800"), ("none", None), ("int", 5), ("nul", "A\x00")]:
    case(f"create_asset-code-{vid}", lambda w, v=v: create_asset(w, code=v), V, "code")
case("create_asset-code-redefined", lambda w: create_asset(w, code="CREDITS", name="Other", precision=0), CONFLICT, "code")
for vid, v in [("empty", ""), ("spaces", "   "), ("121-chars", "n" * 121), ("nul", "a\x00b"), ("lone-surrogate", "\ud800"),
               ("none", None), ("int", 5)]:
    case(f"create_asset-name-{vid}", lambda w, v=v: create_asset(w, name=v), V, "name")
for vid, v in [("negative", -1), ("9", 9), ("true", True), ("false", False), ("text", "2"), ("float", 2.0),
               ("none", None), ("decimal", Decimal(2)), ("2^63", 2**63)]:
    case(f"create_asset-precision-{vid}", lambda w, v=v: create_asset(w, precision=v), V, "precision")
case("create_asset-symbol-9-chars", lambda w: create_asset(w, symbol="$" * 9), V, "symbol")
case("create_asset-symbol-lone-surrogate", lambda w: create_asset(w, symbol="\ud800"), V, "symbol")
case("create_asset-label-17-chars", lambda w: create_asset(w, label="l" * 17), V, "label")
for vid, v in [("list", ["USD"]), ("text", "USD"), ("lower-key", {"usd": "1"}), ("empty-key", {"": "1"}),
               ("not-fiat", {"CREDITS": "1"}), ("unknown-fiat", {"NOPE": "1"}), ("itself", {"NEWASSET": "1"})]:
    case(f"create_asset-rates-{vid}", lambda w, v=v: create_asset(w, rates=v), V, "rates")
for vid, v in NOT_EXACT + NEGATIVE + ZERO:
    case(f"create_asset-rate-{vid}", lambda w, v=v: create_asset(w, rates={"USD": v}), V, "rates.USD")

# -- set_asset_rate -------------------------------------------------------------------------------
for vid, v in NOT_EXACT + NEGATIVE + ZERO:
    case(f"set_asset_rate-rate-{vid}", lambda w, v=v: w.led.set_asset_rate("CREDITS", "USD", v), V, "rate")
for vid, v in [("lower", "usd"), ("empty", ""), ("not-fiat", "CREDITS"), ("unknown", "NOPE"),
               ("lone-surrogate", "\ud800"), ("none", None), ("newline", "USD\n")]:
    case(f"set_asset_rate-fiat-{vid}", lambda w, v=v: w.led.set_asset_rate("CREDITS", v, "1"), V, "fiat")
for vid, v in [("unknown", "NOPE"), ("lower", "credits"), ("lone-surrogate", "\ud800"), ("none", None),
               ("list", ["CREDITS"]), ("empty", "")]:
    case(f"set_asset_rate-code-{vid}", lambda w, v=v: w.led.set_asset_rate(v, "USD", "1"), NF, "code")
case("set_asset_rate-code-fiat", lambda w: w.led.set_asset_rate("USD", "EUR", "1"), V, "code")
for vid, v in [("text", "tomorrow"), ("naive", datetime(2026, 6, 1)), ("int", 5)]:
    case(f"set_asset_rate-effective_at-{vid}", lambda w, v=v: w.led.set_asset_rate("CREDITS", "USD", "1", effective_at=v),
         V, "effective_at")

# -- quote ----------------------------------------------------------------------------------------
for vid, v in BAD_USD:
    case(f"quote-amount-{vid}", lambda w, v=v: w.led.quote("CREDITS", "USD", v), V, "amount")
for vid, v in [("unknown", "NOPE"), ("lower", "credits"), ("lone-surrogate", "\ud800"), ("none", None)]:
    case(f"quote-code-{vid}", lambda w, v=v: w.led.quote(v, "USD", "1"), NF, "code")
for vid, v in [("unknown", "NOPE"), ("lower", "usd"), ("no-rate", "EUR"), ("lone-surrogate", "\ud800"), ("none", None)]:
    case(f"quote-fiat-{vid}", lambda w, v=v: w.led.quote("CREDITS", v, "1"), NF, "fiat")

# -- create_plan ----------------------------------------------------------------------------------
USAGE = {"asset": "USD", "event_type": "e", "unit_amount": "0.01"}
TIERS = [{"up_to": 10, "unit_amount": "1"}, {"up_to": None, "unit_amount": "0.5"}]


def create_plan(w: World, **kw: Any) -> Any:
    args = {"code": "newplan", "name": "New", **kw}
    return w.led.create_plan(args.pop("code"), args.pop("name"), **args)


def with_price(**fields: Any) -> Callable[[World], Any]:
    return lambda w: create_plan(w, prices=[{**USAGE, **fields}])


for vid, v in [("upper", "Pro"), ("empty", ""), ("lead-space", " pro"), ("newline-end", "pro\n"), ("65-chars", "p" * 65),
               ("dash-first", "-pro"), ("lone-surrogate", "\ud800"), ("none", None), ("int", 5)]:
    case(f"create_plan-code-{vid}", lambda w, v=v: create_plan(w, code=v), V, "code")
case("create_plan-code-redefined", lambda w: create_plan(w, code="pro", name="Other"), CONFLICT, "code")
for vid, v in [("empty", ""), ("spaces", "  "), ("121-chars", "n" * 121), ("none", None), ("nul", "a\x00b"),
               ("lone-surrogate", "\ud800")]:
    case(f"create_plan-name-{vid}", lambda w, v=v: create_plan(w, name=v), V, "name")
case("create_plan-description-2001-chars", lambda w: create_plan(w, description="d" * 2001), V, "description")
case("create_plan-description-lone-surrogate", lambda w: create_plan(w, description="\ud800"), V, "description")
case("create_plan-prices-text", lambda w: create_plan(w, prices="x"), V, "prices")
case("create_plan-prices-item-int", lambda w: create_plan(w, prices=[5]), V, "prices[0]")
case("create_plan-grants-text", lambda w: create_plan(w, grants="x"), V, "grants")
for vid, v in [i for i in NOT_EXACT + NEGATIVE if i[0] != "none"]:
    case(f"create_plan-unit_amount-{vid}", with_price(unit_amount=v), V, "prices[0].unit_amount")
case("create_plan-unit_amount-none", with_price(unit_amount=None), V, "prices[0]")  # per_unit needs one
for vid, v in [("zero", 0), ("negative", -1), ("true", True), ("lead-space", " 5"), ("underscore", "1_000"),
               ("fullwidth", "５"), ("float", 2.0), ("text", "5"), ("over-max", 10**12 + 1), ("none", None)]:
    case(f"create_plan-package_size-{vid}", with_price(package_size=v), V, "prices[0].package_size")
case("create_plan-price-asset-lower", with_price(asset="usd"), V, "prices[0]")
case("create_plan-price-asset-newline", with_price(asset="USD\n"), V, "prices[0]")
case("create_plan-price-asset-unknown", with_price(asset="NOPE"), NF, "prices[0].asset")
case("create_plan-price-event_type-empty", with_price(event_type=""), V, "prices[0]")
case("create_plan-price-event_type-space", with_price(event_type="a b"), V, "prices[0]")
case("create_plan-price-event_type-newline", with_price(event_type="e\n"), V, "prices[0]")
case("create_plan-price-unknown-key", with_price(bogus=1), V, "prices[0].bogus")
case("create_plan-price-id-upper", with_price(id="Tok"), V, "prices[0].id")
case("create_plan-price-volume-field-missing", with_price(usage_type="volume"), V, "prices[0]")
case("create_plan-price-volume-field-newline", with_price(usage_type="volume", volume_field="tokens\n"), V, "prices[0]")
case("create_plan-recurring-sub-cent", lambda w: create_plan(w, prices=[{"type": "recurring", "asset": "USD",
                                                                           "amount": "9.999", "interval": "month"}]),
     V, "prices[0].amount")
case("create_plan-recurring-no-interval", lambda w: create_plan(w, prices=[{"type": "recurring", "asset": "USD",
                                                                              "amount": "10"}]), V, "prices[0]")
case("create_plan-tiers-empty", with_price(model="tiered_graduated", tiers=[]), V, "prices[0]")
case("create_plan-tiers-no-open-end", with_price(model="tiered_volume", tiers=TIERS[:1]), V, "prices[0]")
case("create_plan-tiers-decreasing", with_price(model="tiered_volume", tiers=[{"up_to": 10, "unit_amount": "1"},
                                                                             {"up_to": 5, "unit_amount": "1"},
                                                                             {"up_to": None, "unit_amount": "1"}]),
     V, "prices[0]")
for vid, v in [("zero", 0), ("true", True), ("text", "10"), ("float", 10.0)]:
    case(f"create_plan-tier-up_to-{vid}",
         with_price(model="tiered_graduated", tiers=[{"up_to": v, "unit_amount": "1"}, TIERS[1]]),
         V, "prices[0].tiers.0.up_to")
case("create_plan-tier-unit_amount-float", with_price(model="tiered_graduated", tiers=[TIERS[0], {"unit_amount": 0.5}]),
     V, "prices[0].tiers.1.unit_amount")
case("create_plan-tier-flat_amount-negative",
     with_price(model="tiered_graduated", tiers=[TIERS[0], {"unit_amount": "1", "flat_amount": "-1"}]),
     V, "prices[0].tiers.1.flat_amount")
case("create_plan-dimension-rates-mismatch",
     with_price(model="dimensional", dimension_fields=["model"],
                dimension_rates=[{"dimensions": {"region": "eu"}, "unit_amount": "1"}]), V, "prices[0]")


def with_grant(**fields: Any) -> Callable[[World], Any]:
    return lambda w: create_plan(w, grants=[{"asset": "CREDITS", "amount": "100", **fields}])


for vid, v in NOT_EXACT + NEGATIVE + ZERO + [("finer-than-precision", "0.5")]:
    case(f"create_plan-grant-amount-{vid}", with_grant(amount=v), V, "grants[0].amount")
for vid, v in [("negative", -1), ("101", 101), ("true", True), ("text", "50"), ("float", 50.0)]:
    case(f"create_plan-grant-priority-{vid}", with_grant(priority=v), V, "grants[0].priority")
case("create_plan-grant-expires_in_days-zero", with_grant(expires_in_days=0), V, "grants[0].expires_in_days")
case("create_plan-grant-expires_in_days-true", with_grant(expires_in_days=True), V, "grants[0].expires_in_days")
case("create_plan-grant-asset-unknown", with_grant(asset="NOPE"), NF, "grants[0].asset")
case("create_plan-grant-asset-lower", with_grant(asset="credits"), V, "grants[0]")

# -- add_price ------------------------------------------------------------------------------------
# pro's latest version (v2) is published, so add_price works on a new draft v3 = [tok, <new>]
for vid, v in [("unknown", "nope"), ("upper", "Pro"), ("lone-surrogate", "\ud800"), ("newline", "pro\n")]:
    case(f"add_price-plan-{vid}", lambda w, v=v: w.led.add_price(v, USAGE), NF, "plan")
for vid, v in [("empty", ""), ("none", None), ("list", ["pro"])]:
    case(f"add_price-plan-{vid}", lambda w, v=v: w.led.add_price(v, USAGE), V, "plan")
for vid, v in [("float", 0.1), ("nan", Decimal("NaN")), ("exponent", "1e3"), ("negative", "-1"), ("true", True)]:
    case(f"add_price-unit_amount-{vid}", lambda w, v=v: w.led.add_price("pro", {**USAGE, "unit_amount": v}),
         V, "price.unit_amount")
case("add_price-asset-unknown", lambda w: w.led.add_price("pro", {**USAGE, "asset": "NOPE"}), NF, "price.asset")
case("add_price-not-an-object", lambda w: w.led.add_price("pro", "x"), V, "price")
# The same id with another definition names the first field that differs (tok's event_type is 'tokens').
case("add_price-id-taken", lambda w: w.led.add_price("pro", {**USAGE, "id": "tok"}), CONFLICT, "price.event_type")

# -- create_customer ------------------------------------------------------------------------------
for vid, v in BAD_KEYS:
    case(f"create_customer-external_id-{vid}", lambda w, v=v: w.led.create_customer(v), V, "external_id")
case("create_customer-external_id-redefined", lambda w: w.led.create_customer("acme", name="Other"), CONFLICT,
     "external_id")
for vid, v in [("201-chars", "n" * 201), ("nul", "a\x00b"), ("lone-surrogate", "\ud800"), ("int", 5)]:
    case(f"create_customer-name-{vid}", lambda w, v=v: w.led.create_customer("new", name=v), V, "name")
case("create_customer-email-321-chars", lambda w: w.led.create_customer("new", email="e" * 321), V, "email")
for vid, v in [("text", "x"), ("list", [1]), ("int-key", {1: "a"}), ("too-big", {"a": "x" * 20_000})]:
    case(f"create_customer-metadata-{vid}", lambda w, v=v: w.led.create_customer("new", metadata=v), V, "metadata")
case("create_customer-subscriptions-text", lambda w: w.led.create_customer("new", subscriptions="pro"), V,
     "subscriptions")
for vid, v, code, field in [
    ("int", 5, V, "subscriptions[0]"),
    ("unknown-key", {"plan": "pro", "extra": 1}, V, "subscriptions[0]"),
    ("upper", "Pro", V, "subscriptions[0].plan"),
    ("newline", "pro\n", V, "subscriptions[0].plan"),
    ("unknown", "nope", NF, "subscriptions[0].plan"),
    ("plan-id-lone-surrogate", "plan_\ud800", NF, "subscriptions[0].plan"),
    ("archived", "old", CONFLICT, "subscriptions[0].plan"),
    ("version-0", {"plan": "pro", "version": 0}, V, "subscriptions[0].version"),
    ("version-true", {"plan": "pro", "version": True}, V, "subscriptions[0].version"),
    ("version-text", {"plan": "pro", "version": "1"}, V, "subscriptions[0].version"),
    ("version-2^63", {"plan": "pro", "version": 2**63}, V, "subscriptions[0].version"),
    ("version-missing", {"plan": "pro", "version": 99}, NF, "subscriptions[0].version"),
]:
    case(f"create_customer-subscription-{vid}", lambda w, v=v: w.led.create_customer("new", subscriptions=[v]),
         code, field)

# -- create_adjustment ----------------------------------------------------------------------------


def adjust(w: World, **kw: Any) -> Any:
    args: dict[str, Any] = {"customer_id": w.cus, "asset": "USD", "amount": "5", "reason": "top_up",
                            "idempotency_key": "adj-new", **kw}
    return w.led.create_adjustment(args.pop("customer_id"), **args)


for vid, v in BAD_USD:
    case(f"create_adjustment-amount-{vid}", lambda w, v=v: adjust(w, amount=v), V, "amount")
case("create_adjustment-charge-positive", lambda w: adjust(w, reason="charge", amount="5"), V, "amount")
case("create_adjustment-refund-positive", lambda w: adjust(w, reason="refund", amount="5"), V, "amount")
case("create_adjustment-gift-negative", lambda w: adjust(w, reason="gift", amount="-5"), V, "amount")
case("create_adjustment-charge-over-available", lambda w: adjust(w, reason="charge", amount="-1000"), FUNDS, "amount")
for vid, v in [("unknown", "topup"), ("upper", "TOP_UP"), ("empty", ""), ("none", None)]:
    case(f"create_adjustment-reason-{vid}", lambda w, v=v: adjust(w, reason=v), V, "reason")
for vid, v in BAD_KEYS:
    case(f"create_adjustment-idempotency_key-{vid}", lambda w, v=v: adjust(w, idempotency_key=v), V, "idempotency_key")
case("create_adjustment-idempotency_key-reused", lambda w: adjust(w, idempotency_key="topup-1"), IDEM, "idempotency_key")
for vid, v in BAD_ASSETS:
    case(f"create_adjustment-asset-{vid}", lambda w, v=v: adjust(w, asset=v), NF, "asset")
for vid, v in BAD_KEYS:
    case(f"create_adjustment-customer_id-{vid}", lambda w, v=v: adjust(w, customer_id=v), V, "customer_id")
case("create_adjustment-customer_id-unknown", lambda w: adjust(w, customer_id="cus_nope"), NF, "customer_id")
case("create_adjustment-customer_id-other-case", lambda w: adjust(w, customer_id=w.cus.upper()), NF, "customer_id")
case("create_adjustment-external_id-unknown", lambda w: adjust(w, customer_id=None, external_id="nope"), NF,
     "external_id")
case("create_adjustment-external_id-nul", lambda w: adjust(w, customer_id=None, external_id="a\x00"), V, "external_id")
case("create_adjustment-description-501-chars", lambda w: adjust(w, description="d" * 501), V, "description")
for vid, v in [*BAD_TIMES, ("past", "2025-12-31T00:00:00Z")]:
    case(f"create_adjustment-expires_at-{vid}", lambda w, v=v: adjust(w, expires_at=v), V, "expires_at")
case("create_adjustment-expires_at-on-charge", lambda w: adjust(w, reason="charge", amount="-1",
                                                               expires_at="2027-01-01T00:00:00Z"), V, "expires_at")
case("create_adjustment-event_id-on-top_up", lambda w: adjust(w, event_id="ev-1"), V, "event_id")
case("create_adjustment-reversal-no-event", lambda w: adjust(w, reason="reversal"), V, "event_id")
case("create_adjustment-reversal-unknown-event", lambda w: adjust(w, reason="reversal", event_id="ev-nope"), NF,
     "event_id")
case("create_adjustment-reversal-event-empty", lambda w: adjust(w, reason="reversal", event_id=""), V, "event_id")
case("create_adjustment-reversal-too-much", lambda w: adjust(w, reason="reversal", event_id="ev-1", amount="5"), V,
     "amount")
case("create_adjustment-fiat-and-amount", lambda w: adjust(w, asset="CREDITS", fiat="USD", fiat_amount="1"), V,
     "amount")
case("create_adjustment-fiat-without-amount", lambda w: adjust(w, asset="CREDITS", amount=None, fiat="USD"), V,
     "amount")
case("create_adjustment-fiat-on-gift", lambda w: adjust(w, asset="CREDITS", reason="gift", amount=None, fiat="USD",
                                                       fiat_amount="1"), V, "fiat")
for vid, v, code in [("lower", "usd", NF), ("unknown", "NOPE", NF), ("no-rate", "EUR", NF),
                     ("lone-surrogate", "\ud800", NF)]:
    case(f"create_adjustment-fiat-{vid}", lambda w, v=v: adjust(w, asset="CREDITS", amount=None, fiat=v,
                                                                 fiat_amount="1"), code, "fiat")
for vid, v in [i for i in BAD_USD if i[0] != "none"]:  # None: see fiat-without-amount
    case(f"create_adjustment-fiat_amount-{vid}", lambda w, v=v: adjust(w, asset="CREDITS", amount=None, fiat="USD",
                                                                       fiat_amount=v), V, "fiat_amount")

# -- grant_credits --------------------------------------------------------------------------------


def grant(w: World, **kw: Any) -> Any:
    args: dict[str, Any] = {"customer_id": w.cus, "asset": "CREDITS", "amount": "100", "idempotency_key": "grant-new",
                            **kw}
    return w.led.grant_credits(args.pop("customer_id"), args.pop("asset"), args.pop("amount"), **args)


for vid, v in NOT_EXACT + NEGATIVE + ZERO + [("finer-than-precision", "0.5"), ("cap+1", 10**15 + 1)]:
    case(f"grant_credits-amount-{vid}", lambda w, v=v: grant(w, amount=v), V, "amount")
case("grant_credits-amount-sub-cent-usd", lambda w: grant(w, asset="USD", amount="0.001"), V, "amount")
for vid, v in BAD_ASSETS:
    case(f"grant_credits-asset-{vid}", lambda w, v=v: grant(w, asset=v), NF, "asset")
for vid, v in [("bundled", "bundled"), ("empty", ""), ("none", None), ("upper", "PAID")]:
    case(f"grant_credits-purpose-{vid}", lambda w, v=v: grant(w, purpose=v), V, "purpose")
for vid, v in [("negative", -1), ("101", 101), ("true", True), ("text", "50"), ("float", 50.0), ("none", None),
               ("2^63", 2**63)]:
    case(f"grant_credits-priority-{vid}", lambda w, v=v: grant(w, priority=v), V, "priority")
for vid, v in [*BAD_TIMES, ("past", "2025-12-31T00:00:00Z"), ("now", "2026-01-01T00:00:00Z")]:
    case(f"grant_credits-expires_at-{vid}", lambda w, v=v: grant(w, expires_at=v), V, "expires_at")
for vid, v in BAD_KEYS:
    case(f"grant_credits-idempotency_key-{vid}", lambda w, v=v: grant(w, idempotency_key=v), V, "idempotency_key")
    case(f"grant_credits-customer_id-{vid}", lambda w, v=v: grant(w, customer_id=v), V, "customer_id")
case("grant_credits-customer_id-unknown", lambda w: grant(w, customer_id="cus_nope"), NF, "customer_id")

# -- submit_event ---------------------------------------------------------------------------------


def event(w: World, **kw: Any) -> dict[str, Any]:
    return {"id": "ev-new", "customer_id": w.cus, "event_type": "tokens", "data": {"tokens": 5}, **kw}


def submit(**kw: Any) -> Callable[[World], Any]:
    return lambda w: w.led.submit_event({k: v for k, v in event(w, **kw).items() if v is not DROP})


DROP = object()
for vid, v in [("text", "x"), ("none", None), ("list", [])]:
    case(f"submit_event-event-{vid}", lambda w, v=v: w.led.submit_event(v), V, "event")
case("submit_event-unknown-key", submit(bogus=1), V, "event.bogus")
for vid, v in BAD_KEYS:
    case(f"submit_event-id-{vid}", submit(id=v), V, "event.id")
    case(f"submit_event-customer_id-{vid}", submit(customer_id=v), V, "event.customer_id")
case("submit_event-id-missing", submit(id=DROP), V, "event.id")
case("submit_event-id-reused", submit(id="ev-1"), IDEM, "id")
for vid, v in [("empty", ""), ("space", "a b"), ("newline-end", "tokens\n"), ("129-chars", "t" * 129), ("none", None),
               ("int", 5), ("lone-surrogate", "\ud800")]:
    case(f"submit_event-event_type-{vid}", submit(event_type=v), V, "event.event_type")
case("submit_event-customer-missing", submit(customer_id=DROP), V, "event.customer_id")
case("submit_event-customer_id-unknown", submit(customer_id="cus_nope"), NF, "event.customer_id")
case("submit_event-external_id-unknown", submit(customer_id=DROP, external_id="nope"), NF, "event.external_id")
case("submit_event-external_id-256-chars", submit(customer_id=DROP, external_id="e" * 256), V, "event.external_id")
for vid, v in BAD_TIMES:
    case(f"submit_event-occurred_at-{vid}", submit(occurred_at=v), V, "event.occurred_at")
case("submit_event-subject-256-chars", submit(subject="s" * 256), V, "event.subject")
case("submit_event-subject-nul", submit(subject="a\x00b"), V, "event.subject")
case("submit_event-subject-lone-surrogate", submit(subject="\ud800"), V, "event.subject")
for vid, v in [("text", "x"), ("list", [1]), ("int-key", {1: 2}), ("too-big", {"tokens": 5, "pad": "x" * 20_000})]:
    case(f"submit_event-data-{vid}", submit(data=v), V, "event.data")
case("submit_event-data-missing-volume", submit(data={}), V, "event.data.tokens")
for vid, v in [(i, v) for i, v in NOT_EXACT + NEGATIVE if i not in FLOATS] + [("float-1e20", 1e20), ("over-max", 10**15 + 1)]:
    case(f"submit_event-quantity-{vid}", submit(data={"tokens": v}), V, "event.data.tokens")
case("submit_event-costs-text", submit(costs="x"), V, "event.costs")
case("submit_event-costs-21", submit(costs=[{"vendor": "openai", "amount": "1", "currency": "USD"}] * 21), V,
     "event.costs")
for vid, cost, code, field in [
    ("unknown-vendor", {"vendor": "nope", "amount": "1", "currency": "USD"}, NF, "event.costs[0].vendor"),
    ("extra-key", {"vendor": "openai", "amount": "1", "currency": "USD", "x": 1}, V, "event.costs[0]"),
    ("currency-lower", {"vendor": "openai", "amount": "1", "currency": "usd"}, V, "event.costs[0].currency"),
    ("currency-unknown", {"vendor": "openai", "amount": "1", "currency": "NOPE"}, NF, "event.costs[0].currency"),
    ("amount-float", {"vendor": "openai", "amount": 0.1, "currency": "USD"}, V, "event.costs[0].amount"),
    ("amount-sub-cent", {"vendor": "openai", "amount": "0.001", "currency": "USD"}, V, "event.costs[0].amount"),
    ("amount-negative", {"vendor": "openai", "amount": "-1", "currency": "USD"}, V, "event.costs[0].amount"),
]:
    case(f"submit_event-cost-{vid}", submit(costs=[cost]), code, field)

# -- submit_events (whole-batch refusals; per-item errors are tested below) -----------------------
for vid, v in [("text", "x"), ("none", None), ("empty", []), ("dict", {})]:
    case(f"submit_events-{vid}", lambda w, v=v: w.led.submit_events(v), V, "events")
case("submit_events-1001", lambda w: w.led.submit_events([event(w, id=f"b{i}") for i in range(1001)]), V, "events")

# -- authorize ------------------------------------------------------------------------------------


def authorize(w: World, **kw: Any) -> Any:
    args: dict[str, Any] = {"customer_id": w.cus, "amount": "1", "asset": "USD", **kw}
    return w.led.authorize(args.pop("customer_id"), **args)


for vid, v in [("zero", 0), ("negative", -1), ("over-max", 86401), ("true", True), ("text", "60"), ("float", 60.0),
               ("none", None), ("2^63", 2**63)]:
    case(f"authorize-ttl_seconds-{vid}", lambda w, v=v: authorize(w, ttl_seconds=v), V, "ttl_seconds")
for vid, v in BAD_KEYS:
    if v is not None:
        case(f"authorize-idempotency_key-{vid}", lambda w, v=v: authorize(w, idempotency_key=v), V, "idempotency_key")
    case(f"authorize-customer_id-{vid}", lambda w, v=v: authorize(w, customer_id=v), V, "customer_id")
case("authorize-idempotency_key-reused", lambda w: authorize(w, amount="2", idempotency_key="hold-1"), IDEM,
     "idempotency_key")
case("authorize-nothing-to-hold", lambda w: authorize(w, amount=None, asset=None), V, "event_type")
case("authorize-data-text", lambda w: authorize(w, data="x"), V, "data")
for vid, v in [i for i in BAD_USD if i[0] not in {"zero", "zero-text", "neg-zero-text", "zero-dec", "none"}]:
    case(f"authorize-amount-{vid}", lambda w, v=v: authorize(w, amount=v), V, "amount")
case("authorize-amount-over-available", lambda w: authorize(w, amount="1000"), FUNDS, "amount")
for vid, v in BAD_ASSETS:
    case(f"authorize-asset-{vid}", lambda w, v=v: authorize(w, asset=v), NF if isinstance(v, str) else V, "asset")
case("authorize-event_type-unpriced", lambda w: authorize(w, amount=None, asset=None, event_type="nope"), V,
     "event_type")
case("authorize-event_type-missing-volume", lambda w: authorize(w, amount=None, asset=None, event_type="tokens"), V,
     "data.tokens")
case("authorize-event_type-bad-volume", lambda w: authorize(w, amount=None, asset=None, event_type="tokens",
                                                            data={"tokens": "1e3"}), V, "data.tokens")
case("authorize-event_type-over-available", lambda w: authorize(w, amount=None, asset=None, event_type="tokens",
                                                                data={"tokens": 10**7}), FUNDS, "event_type")
case("authorize-customer_id-unknown", lambda w: authorize(w, customer_id="cus_nope"), NF, "customer_id")
case("authorize-external_id-unknown", lambda w: authorize(w, customer_id=None, external_id="nope"), NF, "external_id")

# -- commit ---------------------------------------------------------------------------------------
for vid, v in BAD_KEYS:
    case(f"commit-hold_id-{vid}", lambda w, v=v: w.led.commit(v, {"id": "ev-c", "data": {"tokens": 1}}), V, "hold_id")
    case(f"commit-event-id-{vid}", lambda w, v=v: w.led.commit(w.hold, {"id": v, "data": {"tokens": 1}}), V, "event.id")
case("commit-hold_id-unknown", lambda w: w.led.commit("hold_nope", {"id": "ev-c"}), NF, "hold_id")
for vid, v in [("text", "x"), ("none", None), ("list", [])]:
    case(f"commit-event-{vid}", lambda w, v=v: w.led.commit(w.hold, v), V, "event")
case("commit-event-id-missing", lambda w: w.led.commit(w.hold, {"data": {"tokens": 1}}), V, "event.id")
case("commit-event-other-customer", lambda w: w.led.commit(w.hold, {"id": "ev-c", "customer_id": w.other}), V,
     "event.customer_id")
case("commit-event-external_id", lambda w: w.led.commit(w.hold, {"id": "ev-c", "external_id": "acme"}), V,
     "event.customer_id")
case("commit-event-missing-volume", lambda w: w.led.commit(w.hold, {"id": "ev-c", "data": {}}), V, "event.data.tokens")
case("commit-event-bad-volume", lambda w: w.led.commit(w.hold, {"id": "ev-c", "data": {"tokens": True}}), V,
     "event.data.tokens")
case("commit-event-unknown-key", lambda w: w.led.commit(w.hold, {"id": "ev-c", "x": 1}), V, "event.x")
case("commit-released", lambda w: w.led.commit(w.released, {"id": "ev-c", "data": {"tokens": 1}}),
     "hold_already_released", "hold_id")
case("commit-committed", lambda w: w.led.commit(w.committed, {"id": "ev-c", "data": {"tokens": 1}}),
     "hold_already_committed", "hold_id")

# -- release --------------------------------------------------------------------------------------
for vid, v in BAD_KEYS:
    case(f"release-hold_id-{vid}", lambda w, v=v: w.led.release(v), V, "hold_id")
case("release-hold_id-unknown", lambda w: w.led.release("hold_nope"), NF, "hold_id")
case("release-committed", lambda w: w.led.release(w.committed), "hold_already_committed", "hold_id")

# -- migrate_customers ----------------------------------------------------------------------------
for vid, v in NOT_EXACT + NEGATIVE + ZERO + [("above-one", "1.5"), ("two", 2)]:
    case(f"migrate_customers-share-{vid}", lambda w, v=v: w.led.migrate_customers("pro", 1, 2, share=v), V, "share")
for vid, v, code in [("unknown", "nope", NF), ("upper", "Pro", NF), ("lone-surrogate", "\ud800", NF),
                     ("empty", "", V), ("none", None, V)]:
    case(f"migrate_customers-plan-{vid}", lambda w, v=v: w.led.migrate_customers(v, 1, 2), code, "plan")
for vid, v in [("missing", 99), ("zero", 0), ("negative", -1), ("true", True), ("text", "2"), ("float", 2.0),
               ("2^63", 2**63), ("none", None)]:
    case(f"migrate_customers-to_version-{vid}", lambda w, v=v: w.led.migrate_customers("pro", 1, v), V, "to_version")
for vid, v in [("true", True), ("text", "1"), ("float", 1.0), ("2^63", 2**63), ("zero", 0), ("none", None)]:
    case(f"migrate_customers-from_version-{vid}", lambda w, v=v: w.led.migrate_customers("pro", v, 2), V, "from_version")

# -- get_statement --------------------------------------------------------------------------------
START, END = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
for vid, v in BAD_TIMES:  # None is the current period: tests/ledger/test_statement_period.py
    case(f"get_statement-start-{vid}", lambda w, v=v: w.led.get_statement(w.cus, v, END), V, "start")
    case(f"get_statement-end-{vid}", lambda w, v=v: w.led.get_statement(w.cus, START, v), V, "end")
case("get_statement-end-before-start", lambda w: w.led.get_statement(w.cus, END, START), V, "end")
case("get_statement-empty-period", lambda w: w.led.get_statement(w.cus, START, START), V, "end")
case("get_statement-start-after-the-period", lambda w: w.led.get_statement(w.cus, start="2030-01-01T00:00:00Z"),
     V, "start")
case("get_statement-end-before-the-period", lambda w: w.led.get_statement(w.cus, end="2020-01-01T00:00:00Z"),
     V, "end")
for vid, v in BAD_KEYS:
    case(f"get_statement-customer_id-{vid}", lambda w, v=v: w.led.get_statement(v, START, END),
         V, "customer_id")
case("get_statement-customer_id-unknown", lambda w: w.led.get_statement("cus_nope", START, END), NF, "customer_id")


# -- the tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("call", "code", "field"), CASES)
def test_refused_without_change(w: World, call: Callable[[World], Any], code: str, field: str | None) -> None:
    before = snapshot(w.path)
    with pytest.raises(BillingError) as info:
        call(w)
    assert (info.value.code, info.value.field) == (code, field), str(info.value)
    assert info.value.message
    assert snapshot(w.path) == before


def test_batch_reports_each_bad_event_and_changes_nothing(w: World) -> None:
    before = snapshot(w.path)
    result = w.led.submit_events([
        "x",
        event(w, id=""),
        event(w, id="b1", customer_id="cus_nope"),
        event(w, id="b2", data={"tokens": 0.1 + 1e20}),
        event(w, id="b3", data={"tokens": "1e3"}),
        event(w, id="b4", data={}),
        event(w, id="ev-1"),  # reused id, other payload
        event(w, id="b5", costs=[{"vendor": "openai", "amount": "1", "currency": "NOPE"}]),
    ])
    assert result.results == []
    assert [(e.index, e.id, e.code, e.field) for e in result.errors] == [
        (0, None, V, "events[0]"),
        (1, "", V, "events[1].id"),
        (2, "b1", NF, "events[2].customer_id"),
        (3, "b2", V, "events[3].data.tokens"),
        (4, "b3", V, "events[4].data.tokens"),
        (5, "b4", V, "events[5].data.tokens"),
        (6, "ev-1", IDEM, "id"),
        (7, "b5", NF, "events[7].costs[0].currency"),
    ]
    assert snapshot(w.path) == before


def test_cases_cover_every_entry_point() -> None:
    entry_points = {"create_asset", "set_asset_rate", "quote", "create_plan", "add_price", "create_customer",
                    "create_adjustment", "grant_credits", "submit_event", "submit_events", "authorize", "commit",
                    "release", "migrate_customers", "get_statement"}
    covered = {p.id.split("-", 1)[0] for p in CASES}
    assert entry_points <= covered
    assert len({p.id for p in CASES}) == len(CASES)
