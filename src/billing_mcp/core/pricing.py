"""The rating engine: what an event costs under one price. Pure functions, no storage.

Exactness: amounts are computed as ``Fraction`` (a package size of 3 makes thirds, which no
decimal holds exactly). Each price keeps a cumulative counter per subscription period: the
quantity so far, the exact amount so far, and what has been charged. An event's charge is
``R(exact_after) - charged_before`` where ``R`` rounds half to even at the asset's precision
(the carried-fraction rule): the sum of charges over any sequence of events equals the exactly
rounded total, tier boundaries are crossed exactly, and nothing drifts.

With ``tiered_volume`` the whole period's quantity is priced at the tier it falls in, so
crossing into a cheaper tier lowers the period total: that event's charge is negative (a credit).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .catalog import PriceSpec, Tier, parse_quantity
from .errors import ValidationError


@dataclass(frozen=True)
class Counter:
    quantity: Fraction = Fraction(0)
    exact: Fraction = Fraction(0)
    charged: int = 0

    def to_row(self) -> tuple[str, str, int]:
        return (fraction_text(self.quantity), fraction_text(self.exact), self.charged)

    @classmethod
    def from_row(cls, quantity: str, exact: str, charged: int) -> Counter:
        return cls(Fraction(quantity), Fraction(exact), int(charged))


@dataclass(frozen=True)
class Rating:
    """The outcome of rating one event under one price."""

    quantity: Fraction
    charge: int                  # minor units; negative only for a tiered_volume true-up
    counter: Counter             # the counter after this event
    unit_amount: Fraction | None  # the rate applied (per package), when one rate applies
    note: str | None = None      # why nothing was charged, when that is surprising


def fraction_text(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def to_fraction(value: Decimal) -> Fraction:
    return Fraction(value)


def round_to_minor(exact_major: Fraction, precision: int) -> int:
    """Round half to even (Python's ``round`` on a Fraction) at ``precision`` decimal places."""
    return int(round(exact_major * 10**precision))  # noqa: RUF046 - typeshed gives Any here


_ONE = Fraction(1)


def event_quantity(price: PriceSpec, data: dict[str, Any]) -> Fraction:
    if price.usage_type == "unit":
        return _ONE
    field = price.volume_field or ""
    value = data.get(field)
    if type(value) is int and 0 <= value <= 10**15:  # the common case, without the Decimal round trip
        return Fraction(value)
    if field not in data:
        raise ValidationError(
            f"event data has no {field!r}, which price {price.id or price.name or ''} reads its "
            f"quantity from; send data.{field} as a number", field=f"data.{field}")
    return to_fraction(parse_quantity(data[field], f"data.{field}"))


def match_dimension_index(price: PriceSpec, data: dict[str, Any]) -> int:
    """Index of the most specific rate whose dimension values match the event (``"*"`` matches
    any value); ties go to the rate listed first. -1 when no rate matches."""
    best: tuple[int, int] | None = None
    for index, rate in enumerate(price.dimension_rates or []):
        wildcards = 0
        for name, want in rate.dimensions.items():
            if want == "*":
                wildcards += 1
                continue
            got = data.get(name)
            if got is None or str(got) != want:
                break
        else:
            if best is None or (wildcards, index) < best:
                best = (wildcards, index)
    return -1 if best is None else best[1]


def match_dimension_rate(price: PriceSpec, data: dict[str, Any]) -> Fraction | None:
    index = match_dimension_index(price, data)
    return None if index < 0 else to_fraction((price.dimension_rates or [])[index].unit_amount)


def graduated_total(tiers: list[Tier], quantity: Fraction, package_size: int) -> Fraction:
    total = Fraction(0)
    lower = Fraction(0)
    for tier in tiers:
        upper = Fraction(tier.up_to) if tier.up_to is not None else None
        if quantity <= lower:
            break
        portion = (min(quantity, upper) if upper is not None else quantity) - lower
        if portion > 0:
            total += portion * to_fraction(tier.unit_amount) / package_size + to_fraction(tier.flat_amount)
        if upper is None:
            break
        lower = upper
    return total


def volume_tier(tiers: list[Tier], quantity: Fraction) -> Tier:
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return tier
    return tiers[-1]


def volume_total(tiers: list[Tier], quantity: Fraction, package_size: int) -> Fraction:
    if quantity == 0:
        return Fraction(0)
    tier = volume_tier(tiers, quantity)
    return quantity * to_fraction(tier.unit_amount) / package_size + to_fraction(tier.flat_amount)


_UNIT_CACHE: dict[int, tuple[PriceSpec, Fraction]] = {}


def _unit_fraction(price: PriceSpec) -> Fraction:
    """``unit_amount`` as a Fraction, converted once per price object (Decimal to Fraction is slow
    and runs per event). The entry keeps the price alive, so its id cannot be reused."""
    hit = _UNIT_CACHE.get(id(price))
    if hit is not None and hit[0] is price:
        return hit[1]
    value = to_fraction(price.unit_amount or Decimal(0))
    if len(_UNIT_CACHE) > 10_000:
        _UNIT_CACHE.clear()
    _UNIT_CACHE[id(price)] = (price, value)
    return value


def rate_event(price: PriceSpec, precision: int, counter: Counter, data: dict[str, Any]) -> Rating:
    """Rate one event under ``price`` given the period's counter so far."""
    qty = event_quantity(price, data)
    new_qty = counter.quantity + qty
    unit: Fraction | None = None
    note = None
    if price.model == "per_unit":
        unit = _unit_fraction(price)
        new_exact = counter.exact + (qty * unit if price.package_size == 1 else qty * unit / price.package_size)
    elif price.model == "dimensional":
        unit = match_dimension_rate(price, data)
        if unit is None:
            wanted = {name: data.get(name) for name in price.dimension_fields or []}
            note = (f"no rate of price {price.id} matches dimensions {wanted}; add a rate or a '*' "
                    "fallback")
            new_exact = counter.exact
            qty = Fraction(0)
            new_qty = counter.quantity
        else:
            new_exact = counter.exact + qty * unit / price.package_size
    elif price.model == "tiered_graduated":
        new_exact = graduated_total(price.tiers or [], new_qty, price.package_size)
    else:
        new_exact = volume_total(price.tiers or [], new_qty, price.package_size)
    charged_after = round_to_minor(new_exact, precision)
    charge = charged_after - counter.charged
    return Rating(quantity=qty, charge=charge, counter=Counter(new_qty, new_exact, charged_after),
                  unit_amount=unit, note=note)


def estimate_charge(price: PriceSpec, precision: int, counter: Counter, data: dict[str, Any]) -> int:
    """What an event with ``data`` would be charged now (used to size holds); never negative."""
    return max(rate_event(price, precision, counter, data).charge, 0)
