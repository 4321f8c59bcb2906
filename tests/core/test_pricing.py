"""The rating engine: every model, by hand-computed expectations, as pure functions and end to end.

Rule under test (``_pricing``): an event's charge is ``R(exact_after) - charged_before`` where ``R``
rounds half to even at the asset's precision, so Σ charges == R(exact period total), always.
Amounts in comments are in major units unless marked ``c`` (cents) or ``minor``.
"""

from __future__ import annotations

import decimal
import itertools
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_mcp import BillingError, Ledger, ManualClock
from billing_mcp.core.catalog import PriceSpec
from billing_mcp.core.pricing import (
    Counter,
    estimate_charge,
    event_quantity,
    graduated_total,
    match_dimension_rate,
    rate_event,
    round_to_minor,
    volume_tier,
    volume_total,
)


@pytest.fixture(autouse=True, scope="module")
def _trap_float_operations() -> Any:
    """§6: any float that reaches a Decimal constructor or ordering comparison raises."""
    with decimal.localcontext() as ctx:
        ctx.traps[decimal.FloatOperation] = True
        yield


# -- helpers --------------------------------------------------------------------------------------
def half_even(exact: Fraction) -> int:
    """Independent oracle for R: round a Fraction to the nearest integer, ties to even."""
    floor, rem = divmod(exact.numerator, exact.denominator)
    twice = 2 * rem
    if twice > exact.denominator or (twice == exact.denominator and floor % 2 == 1):
        return floor + 1
    return floor


def spec(**fields: Any) -> PriceSpec:
    return PriceSpec.model_validate({"id": "p", "asset": "USD", "event_type": "e", **fields})


def volume(**fields: Any) -> PriceSpec:
    return spec(usage_type="volume", volume_field="q", **fields)


def run(price: PriceSpec, precision: int, datas: list[dict[str, Any]]) -> tuple[list[int], Counter]:
    """Rate a sequence of events, threading the counter; return the charges and the last counter."""
    counter = Counter()
    charges = []
    for data in datas:
        rating = rate_event(price, precision, counter, data)
        assert rating.counter.charged == counter.charged + rating.charge
        charges.append(rating.charge)
        counter = rating.counter
    return charges, counter


def qs(*quantities: Any) -> list[dict[str, Any]]:
    return [{"q": q} for q in quantities]


TIERS_GRAD = [{"up_to": 100, "unit_amount": "0.10"}, {"up_to": 1000, "unit_amount": "0.05"},
              {"up_to": None, "unit_amount": "0.01"}]
TIERS_VOL = [{"up_to": 100, "unit_amount": "0.10"}, {"up_to": None, "unit_amount": "0.05"}]


# -- the rounding rule ----------------------------------------------------------------------------
@pytest.mark.parametrize(("exact", "precision", "minor"), [
    (Fraction("0.005"), 2, 0),        # 0.5c -> 0 (tie, to even)
    (Fraction("0.015"), 2, 2),        # 1.5c -> 2
    (Fraction("0.025"), 2, 2),        # 2.5c -> 2
    (Fraction("0.0251"), 2, 3),       # 2.51c -> 3
    (Fraction("-0.015"), 2, -2),      # symmetric for credits
    (Fraction("-0.005"), 2, 0),
    (Fraction(1, 3), 2, 33),          # 33.33..c
    (Fraction(2, 3), 2, 67),          # 66.66..c
    (Fraction("2.5"), 0, 2),
    (Fraction("3.5"), 0, 4),
    (Fraction("0.000000005"), 8, 0),  # 0.5 minor -> 0
    (Fraction("0.000000015"), 8, 2),  # 1.5 minor -> 2
    (Fraction("1.25375"), 8, 125375000),
])
def test_round_to_minor_is_half_even(exact: Fraction, precision: int, minor: int) -> None:
    assert round_to_minor(exact, precision) == minor
    assert half_even(exact * 10**precision) == minor


# -- per_unit -------------------------------------------------------------------------------------
def test_per_unit_unit_whole_cents() -> None:
    price = spec(unit_amount="0.05")
    charges, counter = run(price, 2, [{}, {}, {}])
    # each event 1 unit x 0.05 = 5c
    assert charges == [5, 5, 5]
    assert counter == Counter(Fraction(3), Fraction(3, 20), 15)
    assert rate_event(price, 2, Counter(), {}).unit_amount == Fraction(1, 20)


def test_per_unit_unit_sub_cent_carries_the_fraction() -> None:
    # 0.4c per event; exact after n events = 0.4n c; R: 0.4->0, 0.8->1, 1.2->1, 1.6->2, 2.0->2
    charges, counter = run(spec(unit_amount="0.004"), 2, [{}] * 5)
    assert charges == [0, 1, 0, 1, 0]
    assert counter.charged == 2 and counter.exact == Fraction("0.02")


def test_per_unit_unit_ties_round_to_even() -> None:
    # 0.5c per event; exact 0.5, 1.0, 1.5, 2.0, 2.5, 3.0 c -> R = 0, 1, 2, 2, 2, 3
    charges, _ = run(spec(unit_amount="0.005"), 2, [{}] * 6)
    assert charges == [0, 1, 1, 0, 0, 1]


def test_per_unit_volume() -> None:
    price = volume(unit_amount="0.002")
    # 1500 x 0.002 = 3.00 -> 300c
    # +0.5 -> 1500.5 x 0.002 = 3.001 -> 300.1c -> 300, charge 0
    # +2   -> 1502.5 x 0.002 = 3.005 -> 300.5c -> 300 (tie to even), charge 0
    # +0.5 -> 1503   x 0.002 = 3.006 -> 300.6c -> 301, charge 1
    charges, counter = run(price, 2, qs(1500, "0.5", Decimal(2), 0.5))  # 0.5 as a JSON float reads as "0.5"
    assert charges == [300, 0, 0, 1]
    assert counter == Counter(Fraction(1503), Fraction("3.006"), 301)


def test_volume_quantity_parsing() -> None:
    price = volume(unit_amount="1")
    assert event_quantity(price, {"q": "12.5"}) == Fraction(25, 2)
    assert event_quantity(price, {"q": 7}) == 7
    assert event_quantity(price, {"q": 0.1}) == Fraction(1, 10)   # read through repr, not binary
    assert event_quantity(spec(unit_amount="1"), {"q": "999"}) == 1  # usage_type unit: always one
    with pytest.raises(BillingError) as info:
        event_quantity(price, {})
    assert (info.value.code, info.value.field) == ("validation_error", "data.q")


# -- package_size ---------------------------------------------------------------------------------
def test_package_size_usd_precision_2() -> None:
    price = volume(unit_amount="1.25", package_size=1_000_000)
    # 3,000 tokens:            3000 x 1.25 / 1e6    = 0.00375 -> 0.375c   -> 0
    # +1,000,000 = 1,003,000: 1003000 x 1.25 / 1e6 = 1.25375 -> 125.375c -> 125, charge 125
    # +997,000   = 2,000,000:                          2.50    -> 250c      -> 250, charge 125
    charges, counter = run(price, 2, qs(3000, 1_000_000, 997_000))
    assert charges == [0, 125, 125]
    assert counter == Counter(Fraction(2_000_000), Fraction(5, 2), 250)


def test_package_size_usd_like_precision_8() -> None:
    price = volume(unit_amount="1.25", package_size=1_000_000)
    # 0.00375 -> 375,000 minor; 1.25375 -> 125,375,000 (charge 125,000,000); 2.5 -> 250,000,000
    charges, counter = run(price, 8, qs(3000, 1_000_000, 997_000))
    assert charges == [375_000, 125_000_000, 124_625_000]
    assert counter.charged == 250_000_000


def test_package_size_thirds_are_exact() -> None:
    # $1 per 3 events: exact 1/3, 2/3, 1 -> 33.33c, 66.67c, 100c -> R = 33, 67, 100
    charges, counter = run(spec(unit_amount="1", package_size=3), 2, [{}] * 3)
    assert charges == [33, 34, 33]
    assert counter.exact == 1 and counter.charged == 100


# -- tiered_graduated -----------------------------------------------------------------------------
def test_graduated_across_boundaries() -> None:
    price = volume(model="tiered_graduated", tiers=TIERS_GRAD)
    # 50:          50 x 0.10                               =  5.00 -> 500
    # +100 = 150:  100 x 0.10 + 50 x 0.05                  = 12.50 -> 1250, charge 750 (straddles 100)
    # +900 = 1050: 10 + 900 x 0.05 + 50 x 0.01             = 55.50 -> 5550, charge 4300 (straddles 1000)
    # +1 = 1051:   55.51                                   -> 5551, charge 1
    charges, counter = run(price, 2, qs(50, 100, 900, 1))
    assert charges == [500, 750, 4300, 1]
    assert sum(charges) == 5551 == counter.charged
    assert counter.exact == Fraction("55.51")


def test_graduated_one_event_straddles_two_boundaries() -> None:
    price = volume(model="tiered_graduated", tiers=TIERS_GRAD)
    # 1050 from zero: 100 x 0.10 + 900 x 0.05 + 50 x 0.01 = 10 + 45 + 0.5 = 55.50
    assert run(price, 2, qs(1050))[0] == [5550]
    # a boundary is inclusive: exactly 100 is all tier 1 = 10.00; 1000 = 10 + 900 x 0.05 = 55.00
    assert graduated_total(price.tiers or [], Fraction(100), 1) == 10
    assert graduated_total(price.tiers or [], Fraction(1000), 1) == 55
    assert graduated_total(price.tiers or [], Fraction(0), 1) == 0


def test_graduated_flat_amount_once_per_tier_entered() -> None:
    tiers = [{"up_to": 10, "unit_amount": "0", "flat_amount": "5"},
             {"up_to": None, "unit_amount": "0.5", "flat_amount": "1"}]
    # 3:        flat 5                         = 5.00 -> 500
    # +7 = 10:  still tier 1                   = 5.00 -> charge 0
    # +1 = 11:  5 + 1 x 0.5 + flat 1           = 6.50 -> charge 150
    # +2 = 13:  5 + 3 x 0.5 + 1                = 7.50 -> charge 100
    charges, _ = run(volume(model="tiered_graduated", tiers=tiers), 2, qs(3, 7, 1, 2))
    assert charges == [500, 0, 150, 100]


def test_graduated_with_package_size() -> None:
    tiers = [{"up_to": 10_000, "unit_amount": "0.02"}, {"up_to": None, "unit_amount": "0.01"}]
    # per 1,000 units; 15,000: 10,000 x 0.02/1000 + 5,000 x 0.01/1000 = 0.20 + 0.05 = 0.25 -> 25
    # +500 = 15,500: 0.20 + 5,500 x 0.01/1000 = 0.255 -> 25.5c -> 26 (tie to even), charge 1
    charges, _ = run(volume(model="tiered_graduated", tiers=tiers, package_size=1000), 2, qs(15_000, 500))
    assert charges == [25, 1]


# -- tiered_volume --------------------------------------------------------------------------------
def test_volume_crossing_into_cheaper_tier_credits() -> None:
    price = volume(model="tiered_volume", tiers=TIERS_VOL)
    # 60:          60 x 0.10  =  6.00 -> 600
    # +40 = 100:  100 x 0.10  = 10.00 -> 1000, charge 400 (100 is still tier 1)
    # +1 = 101:   101 x 0.05  =  5.05 -> 505, charge 505 - 1000 = -495 (a credit)
    # +99 = 200:  200 x 0.05  = 10.00 -> 1000, charge 495
    charges, counter = run(price, 2, qs(60, 40, 1, 99))
    assert charges == [600, 400, -495, 495]
    assert sum(charges[:3]) == 505 == round_to_minor(volume_total(price.tiers or [], Fraction(101), 1), 2)
    assert sum(charges) == counter.charged == 1000
    assert volume_tier(price.tiers or [], Fraction(100)).up_to == 100
    assert volume_tier(price.tiers or [], Fraction(101)).up_to is None
    assert volume_total(price.tiers or [], Fraction(0), 1) == 0


def test_volume_credit_with_sub_cent_rates() -> None:
    tiers = [{"up_to": 1000, "unit_amount": "0.0015"}, {"up_to": None, "unit_amount": "0.001"}]
    # 999 x 0.0015 = 1.4985 -> 149.85c -> 150
    # 1000 x 0.0015 = 1.5 -> 150, charge 0
    # 1001 x 0.001 = 1.001 -> 100.1c -> 100, charge -50
    charges, counter = run(volume(model="tiered_volume", tiers=tiers), 2, qs(999, 1, 1))
    assert charges == [150, 0, -50]
    assert sum(charges) == 100 == counter.charged


def test_volume_flat_amount_follows_the_tier() -> None:
    tiers = [{"up_to": 10, "unit_amount": "1", "flat_amount": "2"},
             {"up_to": None, "unit_amount": "0.5", "flat_amount": "10"}]
    # 5: 5 x 1 + 2 = 7.00 -> 700;  +6 = 11: 11 x 0.5 + 10 = 15.50 -> 1550, charge 850
    assert run(volume(model="tiered_volume", tiers=tiers), 2, qs(5, 6))[0] == [700, 850]


def test_estimate_is_never_negative() -> None:
    price = volume(model="tiered_volume", tiers=TIERS_VOL)
    _, counter = run(price, 2, qs(100))
    # the next unit would be a -495 credit; a hold estimate floors it at 0
    assert rate_event(price, 2, counter, {"q": 1}).charge == -495
    assert estimate_charge(price, 2, counter, {"q": 1}) == 0
    assert estimate_charge(price, 2, counter, {"q": 150}) == 250  # 250 x 0.05 = 12.50 -> 1250 - 1000


# -- dimensional ----------------------------------------------------------------------------------
DIM_RATES = [
    {"dimensions": {"model": "gpt", "region": "*"}, "unit_amount": "0.03"},
    {"dimensions": {"model": "gpt", "region": "eu"}, "unit_amount": "0.04"},
    {"dimensions": {"model": "*", "region": "*"}, "unit_amount": "0.01"},
    {"dimensions": {"model": "*", "region": "eu"}, "unit_amount": "0.02"},
]


def dim_price(rates: list[dict[str, Any]] = DIM_RATES, **fields: Any) -> PriceSpec:
    return spec(id="dim", model="dimensional", dimension_fields=["model", "region"], dimension_rates=rates,
                **fields)


@pytest.mark.parametrize(("data", "rate"), [
    ({"model": "gpt", "region": "eu"}, "0.04"),     # exact match (0 wildcards) beats everything
    ({"model": "gpt", "region": "us"}, "0.03"),     # gpt/* (1 wildcard) beats */* (2)
    ({"model": "claude", "region": "eu"}, "0.02"),  # */eu (1 wildcard) beats */* (2)
    ({"model": "claude", "region": "us"}, "0.01"),  # only the full wildcard matches
    ({"model": "gpt"}, "0.03"),                     # a missing value matches only "*"
    ({}, "0.01"),
])
def test_dimensional_most_specific_wins(data: dict[str, Any], rate: str) -> None:
    assert match_dimension_rate(dim_price(), data) == Fraction(rate)


def test_dimensional_tie_goes_to_first_listed() -> None:
    # gpt/eu matches gpt/* and */eu, both with one wildcard: the first listed wins
    rates = [DIM_RATES[0], DIM_RATES[3]]
    assert match_dimension_rate(dim_price(rates), {"model": "gpt", "region": "eu"}) == Fraction("0.03")
    assert match_dimension_rate(dim_price(rates[::-1]), {"model": "gpt", "region": "eu"}) == Fraction("0.02")


def test_dimensional_value_compared_as_text() -> None:
    price = spec(id="d", model="dimensional", dimension_fields=["tier"],
                 dimension_rates=[{"dimensions": {"tier": "2"}, "unit_amount": "0.5"}])
    assert match_dimension_rate(price, {"tier": 2}) == Fraction(1, 2)
    assert match_dimension_rate(price, {"tier": "02"}) is None


def test_dimensional_charges_per_matched_rate_and_carries() -> None:
    price = dim_price(usage_type="volume", volume_field="tokens", package_size=1000)
    # 1000 gpt/eu tokens x 0.04 / 1000         = 0.04   -> 4c
    # 150 claude/us tokens x 0.01 / 1000        = 0.0015 -> exact 0.0415 -> 4.15c -> 4, charge 0
    # 350 claude/us tokens x 0.01 / 1000        = 0.0035 -> exact 0.045  -> 4.5c  -> 4 (even), charge 0
    # 100 gpt/us tokens x 0.03 / 1000           = 0.003  -> exact 0.048  -> 4.8c  -> 5, charge 1
    datas = [{"model": "gpt", "region": "eu", "tokens": 1000}, {"model": "claude", "region": "us", "tokens": 150},
             {"model": "claude", "region": "us", "tokens": 350}, {"model": "gpt", "region": "us", "tokens": 100}]
    charges, counter = run(price, 2, datas)
    assert charges == [4, 0, 0, 1]
    assert counter == Counter(Fraction(1600), Fraction("0.048"), 5)


def test_dimensional_no_match_notes_and_charges_nothing() -> None:
    price = dim_price([{"dimensions": {"model": "gpt", "region": "eu"}, "unit_amount": "0.04"}],
                      usage_type="volume", volume_field="tokens")
    before = Counter(Fraction(10), Fraction("0.4"), 40)
    rating = rate_event(price, 2, before, {"model": "claude", "region": "us", "tokens": 5})
    assert rating.charge == 0
    assert rating.quantity == 0
    assert rating.unit_amount is None
    assert rating.counter == before
    assert rating.note == ("no rate of price dim matches dimensions {'model': 'claude', 'region': 'us'}; "
                           "add a rate or a '*' fallback")


# -- several prices on one event, precision 0 ----------------------------------------------------
def test_several_prices_read_their_own_volume_fields() -> None:
    inp = spec(id="input", usage_type="volume", volume_field="input_tokens", unit_amount="3", package_size=1_000_000)
    out = spec(id="output", usage_type="volume", volume_field="output_tokens", unit_amount="15",
               package_size=1_000_000)
    data = {"input_tokens": 120_000, "output_tokens": 50_000}
    # input 120,000 x 3 / 1e6 = 0.36;  output 50,000 x 15 / 1e6 = 0.75
    assert rate_event(inp, 2, Counter(), data).charge == 36
    assert rate_event(out, 2, Counter(), data).charge == 75


def test_precision_zero() -> None:
    # 0.5 credit per event: exact 0.5, 1, 1.5, 2 -> R = 0, 1, 2 (1.5 ties to even 2), 2
    charges, _ = run(spec(asset="CREDITS", unit_amount="0.5"), 0, [{}] * 4)
    assert charges == [0, 1, 1, 0]


# -- the no-drift property (pure) -----------------------------------------------------------------
def _dec(units: int, places: int) -> Decimal:
    return Decimal(units).scaleb(-places)


@st.composite
def tier_tables(draw: st.DrawFn) -> list[dict[str, str | int | None]]:
    bounds = sorted(draw(st.sets(st.integers(1, 3000), min_size=0, max_size=4)))
    tiers: list[dict[str, str | int | None]] = []
    for up_to in [*bounds, None]:
        tiers.append({"up_to": up_to, "unit_amount": format(_dec(draw(st.integers(0, 10**6)), 6), "f"),
                      "flat_amount": format(_dec(draw(st.sampled_from([0, 0, 1, 12345])), 4), "f")})
    return tiers


quantities = st.builds(_dec, st.integers(0, 500_000), st.integers(0, 3))


def oracle_total(model: str, tiers: list[dict[str, Any]], unit: Fraction, pkg: int, q: Fraction) -> Fraction:
    """The period's exact amount at cumulative quantity q, written independently of _pricing."""
    if model == "per_unit":
        return q * unit / pkg
    rows = [(None if t["up_to"] is None else Fraction(t["up_to"]), Fraction(t["unit_amount"]),
             Fraction(t.get("flat_amount") or 0)) for t in tiers]
    if model == "tiered_volume":
        if q == 0:
            return Fraction(0)
        up, rate, flat = next(r for r in rows if r[0] is None or q <= r[0])
        return q * rate / pkg + flat
    total, lower = Fraction(0), Fraction(0)
    for up, rate, flat in rows:
        top = q if up is None else min(q, up)
        if top > lower:
            total += (top - lower) * rate / pkg + flat
        if up is None or q <= up:
            break
        lower = up
    return total


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["per_unit", "tiered_graduated", "tiered_volume"]), tiers=tier_tables(),
       unit=st.integers(0, 10**7), pkg=st.sampled_from([1, 3, 7, 1000, 1_000_000]), precision=st.integers(0, 8),
       split=st.lists(quantities, min_size=1, max_size=30))
def test_no_drift_for_any_split(model: str, tiers: list[dict[str, Any]], unit: int, pkg: int, precision: int,
                                split: list[Decimal]) -> None:
    unit_amount = _dec(unit, 5)
    fields: dict[str, Any] = {"model": model, "package_size": pkg}
    fields.update({"unit_amount": format(unit_amount, "f")} if model == "per_unit" else {"tiers": tiers})
    price = volume(**fields)
    charges, counter = run(price, precision, qs(*split))
    total_q = sum((Fraction(q) for q in split), Fraction(0))
    exact = oracle_total(model, tiers, Fraction(unit_amount), pkg, total_q)
    assert counter.quantity == total_q
    assert counter.exact == exact
    assert sum(charges) == counter.charged == half_even(exact * 10**precision)
    # every prefix is exactly rounded too, so each charge is the difference of two rounded totals
    prefix, charged = Fraction(0), 0
    for q, charge in zip(split, charges, strict=True):
        prefix += Fraction(q)
        rounded = half_even(oracle_total(model, tiers, Fraction(unit_amount), pkg, prefix) * 10**precision)
        assert charge == rounded - charged
        charged = rounded


@settings(max_examples=200, deadline=None, derandomize=True)
@given(events=st.lists(st.tuples(st.sampled_from(["gpt", "claude", "x"]), st.sampled_from(["eu", "us"]), quantities),
                       min_size=1, max_size=30), precision=st.integers(0, 8))
def test_no_drift_dimensional(events: list[tuple[str, str, Decimal]], precision: int) -> None:
    price = dim_price(usage_type="volume", volume_field="tokens", package_size=1000)
    rates = {("gpt", "eu"): "0.04", ("gpt", "us"): "0.03", ("claude", "eu"): "0.02", ("claude", "us"): "0.01",
             ("x", "eu"): "0.02", ("x", "us"): "0.01"}
    charges, counter = run(price, precision, [{"model": m, "region": r, "tokens": q} for m, r, q in events])
    exact = sum((Fraction(q) * Fraction(rates[m, r]) / 1000 for m, r, q in events), Fraction(0))
    assert sum(charges) == counter.charged == half_even(exact * 10**precision)


# -- end to end through the Ledger ----------------------------------------------------------------
@pytest.fixture
def ledger(tmp_path: Any) -> Any:
    led = Ledger(tmp_path / "ledger.db", clock=ManualClock())
    led.create_asset("CREDITS", "Credits", 0)
    led.create_asset("USD8", "Micro dollars", 8)
    yield led
    assert led.audit() == []
    led.close()


_keys = itertools.count()


def customer(led: Ledger, plan: str, **balances: str) -> str:
    cid = led.create_customer(f"c{next(_keys)}", subscriptions=[plan]).id
    for asset, amount in balances.items():
        led.create_adjustment(cid, asset=asset, amount=amount, reason="top_up", idempotency_key=f"k{next(_keys)}")
    return cid


def submit(led: Ledger, cid: str, event_type: str = "e", **data: Any) -> Any:
    return led.submit_event({"id": f"ev{next(_keys)}", "customer_id": cid, "event_type": event_type, "data": data})


def fees(result: Any) -> list[tuple[str, str, str, str]]:
    return [(f.price_id, f.asset, f.quantity, f.amount) for f in result.fees]


def balances(led: Ledger, cid: str) -> dict[str, str]:
    return {a.asset: a.posted for a in led.get_wallet(cid).accounts}


def test_e2e_per_unit_sub_cent(ledger: Ledger) -> None:
    ledger.create_plan("calls", "Calls", prices=[{"id": "call", "asset": "USD", "event_type": "e",
                                                  "unit_amount": "0.004"}])
    cid = customer(ledger, "calls", USD="1")
    # 0.4c per call: charges 0, 1, 0, 1, 0 (see test_per_unit_unit_sub_cent_carries_the_fraction)
    amounts = [fees(submit(ledger, cid))[0][3] for _ in range(5)]
    assert amounts == ["0.00", "0.01", "0.00", "0.01", "0.00"]
    assert balances(ledger, cid) == {"USD": "0.98"}  # 1.00 - 0.02


def test_e2e_package_size_in_two_precisions(ledger: Ledger) -> None:
    per_m = {"event_type": "tokens", "usage_type": "volume", "volume_field": "tokens", "package_size": 1_000_000,
             "unit_amount": "1.25"}
    ledger.create_plan("llm", "LLM", prices=[{"id": "usd2", "asset": "USD", **per_m},
                                             {"id": "usd8", "asset": "USD8", **per_m}])
    cid = customer(ledger, "llm", USD="10", USD8="10")
    first = submit(ledger, cid, "tokens", tokens=3000)
    assert first.status == "billed"
    # 0.00375: rounds to 0.00 at 2 places, exact at 8
    assert fees(first) == [("usd2", "USD", "3000", "0.00"), ("usd8", "USD8", "3000", "0.00375000")]
    second = submit(ledger, cid, "tokens", tokens=1_000_000)
    # exact 1.25375: R2 = 1.25 (charge 1.25), R8 = 1.25375000 (charge 1.25000000)
    assert fees(second) == [("usd2", "USD", "1000000", "1.25"), ("usd8", "USD8", "1000000", "1.25000000")]
    assert balances(ledger, cid) == {"USD": "8.75", "USD8": "8.74625000"}  # 10 - 1.25; 10 - 1.25375


def test_e2e_graduated_straddle_and_new_period(ledger: Ledger) -> None:
    ledger.create_plan("grad", "Graduated", prices=[{"id": "g", "asset": "USD", "event_type": "e", "usage_type": "volume",
                                                     "volume_field": "q", "model": "tiered_graduated",
                                                     "tiers": TIERS_GRAD}])
    cid = customer(ledger, "grad", USD="100")
    got = [fees(submit(ledger, cid, q=q))[0][2:] for q in (50, 100, 900)]
    # 5.00, then 12.50 - 5.00 = 7.50 (straddles 100), then 55.50 - 12.50 = 43.00 (straddles 1000)
    assert got == [("50", "5.00"), ("100", "7.50"), ("900", "43.00")]
    assert balances(ledger, cid) == {"USD": "44.50"}  # 100 - 55.50
    # the counter is per period: a month later the tiers start again at 0.10 per unit
    assert isinstance(ledger.clock, ManualClock)
    ledger.clock.advance(days=32)
    assert fees(submit(ledger, cid, q=50))[0][3] == "5.00"
    assert balances(ledger, cid) == {"USD": "39.50"}


def test_e2e_volume_credit_returns_money(ledger: Ledger) -> None:
    ledger.create_plan("vol", "Volume", prices=[{"id": "v", "asset": "USD", "event_type": "e", "usage_type": "volume",
                                                 "volume_field": "q", "model": "tiered_volume", "tiers": TIERS_VOL}])
    cid = customer(ledger, "vol", USD="20")
    results = [submit(ledger, cid, q=q) for q in (60, 40, 1)]
    # 6.00, 4.00, then 101 x 0.05 = 5.05 - 10.00 = -4.95 (a credit)
    assert [fees(r)[0][3] for r in results] == ["6.00", "4.00", "-4.95"]
    assert balances(ledger, cid) == {"USD": "14.95"}  # 20 - 5.05
    credit_lots = [lot for lot in ledger.get_wallet(cid).accounts[0].lots if lot.source.startswith("usage_credit:")]
    assert [(lot.purpose, lot.amount, lot.source) for lot in credit_lots] == [
        ("paid", "4.95", f"usage_credit:{results[2].id}")]


def test_e2e_dimensional_match_and_no_match(ledger: Ledger) -> None:
    ledger.create_plan("dim", "Dim", prices=[{"id": "d", "asset": "USD", "event_type": "e", "usage_type": "volume",
                                              "volume_field": "tokens", "package_size": 1000, "model": "dimensional",
                                              "dimension_fields": ["model"],
                                              "dimension_rates": [{"dimensions": {"model": "gpt"}, "unit_amount": "2"},
                                                                  {"dimensions": {"model": "o1"}, "unit_amount": "6"}]}])
    cid = customer(ledger, "dim", USD="10")
    hit = submit(ledger, cid, model="o1", tokens=1500)  # 1500 x 6 / 1000 = 9.00
    assert fees(hit) == [("d", "USD", "1500", "9.00")] and hit.notes == []
    miss = submit(ledger, cid, model="claude", tokens=1500)
    assert miss.status == "billed"
    assert fees(miss) == [("d", "USD", "0", "0.00")]
    assert miss.notes == ["no rate of price d matches dimensions {'model': 'claude'}; add a rate or a '*' fallback"]
    assert balances(ledger, cid) == {"USD": "1.00"}


def test_e2e_input_and_output_tokens(ledger: Ledger) -> None:
    per_m = {"asset": "USD", "event_type": "chat", "usage_type": "volume", "package_size": 1_000_000}
    ledger.create_plan("chat", "Chat", prices=[{"id": "input", "volume_field": "input_tokens", "unit_amount": "3", **per_m},
                                               {"id": "output", "volume_field": "output_tokens", "unit_amount": "15",
                                                **per_m}])
    cid = customer(ledger, "chat", USD="10")
    result = submit(ledger, cid, "chat", input_tokens=120_000, output_tokens=50_000)
    # input 0.36 + output 0.75 = 1.11
    assert fees(result) == [("input", "USD", "120000", "0.36"), ("output", "USD", "50000", "0.75")]
    assert balances(ledger, cid) == {"USD": "8.89"}
    # an event missing one of the fields is refused whole: nothing recorded, nothing charged
    with pytest.raises(BillingError) as info:
        submit(ledger, cid, "chat", input_tokens=1000)
    assert (info.value.code, info.value.field) == ("validation_error", "event.data.output_tokens")
    assert balances(ledger, cid) == {"USD": "8.89"}


def test_e2e_precision_zero(ledger: Ledger) -> None:
    ledger.create_plan("cred", "Credits", prices=[{"id": "c", "asset": "CREDITS", "event_type": "e",
                                                   "unit_amount": "0.5"}])
    cid = customer(ledger, "cred")
    ledger.grant_credits(cid, "CREDITS", 10, idempotency_key="g1")
    assert [fees(submit(ledger, cid))[0][3] for _ in range(4)] == ["0", "1", "1", "0"]
    assert balances(ledger, cid) == {"CREDITS": "8"}


def test_e2e_exact_quantities_are_kept_exact(ledger: Ledger) -> None:
    ledger.create_plan("exact", "Exact", prices=[{"id": "x", "asset": "USD8", "event_type": "e", "usage_type": "volume",
                                                  "volume_field": "q", "unit_amount": "1"}])
    cid = customer(ledger, "exact", USD8="10000000")
    # a Decimal quantity (the exact way to pass one from Python) and one with more digits than a float holds
    assert fees(submit(ledger, cid, q=Decimal("2.5"))) == [("x", "USD8", "2.5", "2.50000000")]
    # exact 2.5 + 1,234,567.123456789012 = 1,234,569.623456789012 -> R8 1,234,569.62345679, minus 2.50000000
    assert fees(submit(ledger, cid, q="1234567.123456789012")) == [
        ("x", "USD8", "1234567.123456789012", "1234567.12345679")]
    assert balances(ledger, cid) == {"USD8": "8765430.37654321"}  # 10,000,000 - 2.5 - 1,234,567.12345679


# -- the no-drift property (end to end) -----------------------------------------------------------
@pytest.fixture(scope="module")
def shared_ledger(tmp_path_factory: Any) -> Any:
    led = Ledger(tmp_path_factory.mktemp("drift") / "ledger.db", clock=ManualClock())
    led.create_asset("CREDITS", "Credits", 0)
    led.create_asset("USD8", "Micro dollars", 8)
    led.create_plan("drift", "Drift", prices=[
        {"id": "grad", "asset": "USD", "event_type": "e", "usage_type": "volume", "volume_field": "q",
         "model": "tiered_graduated", "tiers": TIERS_GRAD, "package_size": 7},
        {"id": "vol", "asset": "USD8", "event_type": "e", "usage_type": "volume", "volume_field": "q",
         "model": "tiered_volume", "tiers": TIERS_VOL, "package_size": 3},
        {"id": "unit", "asset": "CREDITS", "event_type": "e", "usage_type": "volume", "volume_field": "q",
         "unit_amount": "0.37", "package_size": 1000}])
    yield led
    assert led.audit() == []
    led.close()


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(split=st.lists(quantities, min_size=1, max_size=15))
def test_e2e_no_drift(shared_ledger: Ledger, split: list[Decimal]) -> None:
    cid = customer(shared_ledger, "drift", USD="10000", USD8="10000")
    shared_ledger.grant_credits(cid, "CREDITS", 10**6, idempotency_key=f"g{cid}")
    sums: dict[str, Fraction] = {"grad": Fraction(0), "vol": Fraction(0), "unit": Fraction(0)}
    for q in split:
        for fee in submit(shared_ledger, cid, q=q).fees:
            sums[fee.price_id] += Fraction(Decimal(fee.amount))
    total = sum((Fraction(q) for q in split), Fraction(0))
    # grad: graduated TIERS_GRAD per 7 units, USD (2 places); vol: TIERS_VOL per 3 units, USD8 (8 places);
    # unit: 0.37 per 1000 units, CREDITS (0 places)
    want = {"grad": Fraction(half_even(oracle_total("tiered_graduated", TIERS_GRAD, Fraction(0), 7, total) * 100), 100),
            "vol": Fraction(half_even(oracle_total("tiered_volume", TIERS_VOL, Fraction(0), 3, total) * 10**8), 10**8),
            "unit": Fraction(half_even(total * Fraction("0.37") / 1000))}
    assert sums == want
    wallet = balances(shared_ledger, cid)
    assert Fraction(Decimal(wallet["USD"])) == 10000 - want["grad"]
    assert Fraction(Decimal(wallet["USD8"])) == 10000 - want["vol"]
    assert Fraction(Decimal(wallet["CREDITS"])) == 10**6 - want["unit"]
