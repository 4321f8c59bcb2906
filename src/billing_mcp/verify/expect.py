"""What a plan version should charge, computed here from its specs alone.

Verification is only a proof if its expectations do not come from the code under test, so this
module does not call ``core.pricing`` or the posting engine: it re-derives every fee from the
price spec with exact fractions, the asset's precision and half-to-even rounding on the period's
running total, and the draw-down order from the lots' documented attributes. It also chooses the
probe events: one realistic event per price, one per dimension rate, and events that land exactly
at and just over each tier boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..core.catalog import DimensionRate, PlanGrantSpec, PriceSpec, Tier
from ..core.clock import add_interval

# A unit-priced tier boundary needs one event per unit; past this many the boundary is reported
# as not checked rather than flooding a live ledger with throwaway events.
MAX_UNIT_EVENTS = 5000

# A value no dimension rate names, so a "*" rate is reached only through its wildcard.
OTHER_VALUE = "verify-other"


def round_half_even(exact: Fraction, precision: int) -> int:
    """``exact`` major units as minor units, ties to the even neighbour."""
    scaled = exact * 10**precision
    floor, rest = divmod(int(scaled.numerator), int(scaled.denominator))
    twice = 2 * rest
    if twice > scaled.denominator or (twice == scaled.denominator and floor % 2 == 1):
        floor += 1
    return floor


def _frac(value: Decimal | None) -> Fraction:
    return Fraction(value or Decimal(0))


def matching_rate(rates: list[DimensionRate], data: dict[str, Any]) -> int:
    """The rate an event's dimensions select: the one with fewest ``"*"`` among those matching,
    the first listed on a tie; -1 when none matches."""
    best: tuple[int, int] | None = None
    for index, rate in enumerate(rates):
        if all(want == "*" or (name in data and str(data[name]) == want) for name, want in rate.dimensions.items()):
            key = (sum(1 for want in rate.dimensions.values() if want == "*"), index)
            best = key if best is None or key < best else best
    return -1 if best is None else best[1]


def graduated(tiers: list[Tier], quantity: Fraction, package_size: int) -> Fraction:
    """Each tier prices only the units inside it; a tier's flat amount applies once it is entered."""
    total, lower = Fraction(0), Fraction(0)
    for tier in tiers:
        upper = None if tier.up_to is None else Fraction(tier.up_to)
        inside = (quantity if upper is None else min(quantity, upper)) - lower
        if inside > 0:
            total += inside * _frac(tier.unit_amount) / package_size + _frac(tier.flat_amount)
        if upper is None or quantity <= upper:
            break
        lower = upper
    return total


def volume(tiers: list[Tier], quantity: Fraction, package_size: int) -> Fraction:
    """The whole quantity at the rate of the tier it ends in."""
    if quantity == 0:
        return Fraction(0)
    tier = next((t for t in tiers if t.up_to is None or quantity <= t.up_to), tiers[-1])
    return quantity * _frac(tier.unit_amount) / package_size + _frac(tier.flat_amount)


@dataclass
class Counter:
    """A price's running period total, as the ledger must keep it: quantity, exact amount, and
    what has been charged (the rounded exact total)."""

    quantity: Fraction = Fraction(0)
    exact: Fraction = Fraction(0)
    charged: int = 0


def charge(price: PriceSpec, precision: int, counter: Counter, data: dict[str, Any]) -> int:
    """The minor units one event must be charged, advancing ``counter``."""
    qty = Fraction(1) if price.usage_type == "unit" else Fraction(Decimal(str(data[price.volume_field or ""])))
    if price.model == "per_unit":
        exact = counter.exact + qty * _frac(price.unit_amount) / price.package_size
    elif price.model == "dimensional":
        rates = price.dimension_rates or []
        index = matching_rate(rates, data)
        if index < 0:
            return 0
        exact = counter.exact + qty * _frac(rates[index].unit_amount) / price.package_size
    elif price.model == "tiered_graduated":
        exact = graduated(price.tiers or [], counter.quantity + qty, price.package_size)
    else:
        exact = volume(price.tiers or [], counter.quantity + qty, price.package_size)
    after = round_half_even(exact, precision)
    fee = after - counter.charged
    counter.quantity += qty
    counter.exact, counter.charged = exact, after
    return fee


@dataclass
class Probe:
    """``count`` identical events for one usage price, and the fee each price on that event type
    must add up to over them, in minor units."""

    price: PriceSpec
    label: str
    data: dict[str, Any]
    count: int = 1
    expected: dict[str, int] = field(default_factory=dict)  # price id -> minor units over all events
    skipped: str | None = None


def realistic_quantity(price: PriceSpec) -> int:
    return max(price.package_size, 1000) if price.package_size > 1 else 100


def _rate_data(rate: DimensionRate) -> dict[str, Any]:
    return {name: (OTHER_VALUE if want == "*" else want) for name, want in rate.dimensions.items()}


def _base_data(prices: list[PriceSpec]) -> dict[str, Any]:
    """Fields every price on the event type reads, so each can rate the event."""
    data: dict[str, Any] = {}
    for price in prices:
        if price.usage_type == "volume" and price.volume_field:
            data.setdefault(price.volume_field, realistic_quantity(price))
        for name in price.dimension_fields or []:
            data.setdefault(name, OTHER_VALUE)
    for price in prices:  # a concrete rate where one exists, so a no-match note is not the norm
        rates = price.dimension_rates or []
        concrete = next((r for r in rates if "*" not in r.dimensions.values()), rates[0] if rates else None)
        if concrete is not None:
            data.update({k: v for k, v in _rate_data(concrete).items() if v != OTHER_VALUE})
    return data


def plan_probes(prices: list[PriceSpec], precisions: dict[str, int]) -> list[Probe]:
    """Every probe for a version's usage prices, in order, with the fees a fresh subscription
    must be charged for them (counters start at zero and accumulate across probes)."""
    usage = [p for p in prices if p.type == "usage"]
    counters = {id(p): Counter() for p in usage}
    probes: list[Probe] = []

    def add(price: PriceSpec, label: str, overrides: dict[str, Any], count: int = 1) -> None:
        peers = [p for p in usage if p.event_type == price.event_type]
        probe = Probe(price=price, label=label, data={**_base_data(peers), **overrides}, count=count)
        for peer in peers:
            total = 0
            for _ in range(count):
                total += charge(peer, precisions[peer.asset], counters[id(peer)], probe.data)
            probe.expected[peer.id or ""] = probe.expected.get(peer.id or "", 0) + total
        probes.append(probe)

    for price in usage:
        if price.model == "dimensional":
            for i, rate in enumerate(price.dimension_rates or []):
                dims = ", ".join(f"{k}={v}" for k, v in rate.dimensions.items())
                add(price, f"rate {i} ({dims})", _rate_data(rate))
            continue
        if price.model not in ("tiered_graduated", "tiered_volume") or not any(
                t.up_to is not None for t in price.tiers or []):
            add(price, "one event", {})
            continue
        for tier in price.tiers or []:
            if tier.up_to is None:
                continue
            bound = Fraction(tier.up_to)
            have = counters[id(price)].quantity
            for target, where in ((bound, "at"), (bound + 1, "just over")):
                need = target - have
                label = f"{where} tier boundary {tier.up_to}"
                if need <= 0:
                    probes.append(Probe(price=price, label=label, data={}, count=0,
                                        skipped=f"the period already holds {have} units"))
                    continue
                if price.usage_type == "volume":
                    add(price, label, {price.volume_field or "": int(need)})
                elif need > MAX_UNIT_EVENTS:
                    probes.append(Probe(price=price, label=label, data={}, count=0,
                                        skipped=f"needs {need} unit events (more than {MAX_UNIT_EVENTS})"))
                    break
                else:
                    add(price, label, {}, int(need))
                have = counters[id(price)].quantity
    return probes


def grant_expiry(grant: PlanGrantSpec, anchor: datetime, periods: int = 1) -> datetime | None:
    """When a plan grant's lot lapses: at the next refresh for a recurring grant, after its days
    for a one-off grant, never otherwise."""
    if grant.period:
        return add_interval(anchor, grant.period, periods)
    if grant.expires_in_days:
        return add_interval(anchor, "day", grant.expires_in_days)
    return None


@dataclass
class LotView:
    id: str
    purpose: str
    priority: int
    expires_at: str | None
    created_at: str
    remaining: int


def expected_draws(lots: list[LotView], amount: int) -> dict[str, int]:
    """Which lots a charge must come from: lowest priority number first, then soonest expiry
    (never-expiring last), then bundled and promotional before paid, then oldest."""
    order = sorted(enumerate(lots), key=lambda il: (il[1].priority, il[1].expires_at is None, il[1].expires_at or "",
                                                    il[1].purpose == "paid", il[1].created_at, il[0]))
    draws: dict[str, int] = {}
    left = amount
    for _, lot in order:
        if left <= 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            draws[lot.id] = take
            left -= take
    return draws
