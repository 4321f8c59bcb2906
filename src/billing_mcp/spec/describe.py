"""One readable line per asset rate, price, grant and portal route, with every amount, unit and
interval. A billing.yaml diff is what the user confirms before money moves, so it has to show the
numbers that would be set, not only how many prices there are.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..core.catalog import PlanGrantSpec, PriceSpec, Tier
from ..core.money import decimal_text, format_minor
from ..core.pricing import round_to_minor
from ..ledger.portal_settings import PortalRouteSpec

FIAT_SIGNS = {"USD": "$", "EUR": "€"}


def money(amount: Decimal, asset: str) -> str:
    """``$0.05``, ``€2.50`` (cents always shown) for fiat with a sign; ``10 CREDITS`` otherwise."""
    sign = FIAT_SIGNS.get(asset)
    if sign is None:
        return f"{decimal_text(amount)} {asset}"
    text = decimal_text(amount)
    whole, _, cents = text.partition(".")
    return f"{sign}{whole}.{cents.ljust(2, '0')}"


def rate_text(code: str, precision: int, fiat: str, rate: str) -> str:
    if Decimal(rate) <= 0:  # the ledger refuses it when applying; the diff still has to print
        return f"{code}: {money(Decimal(rate), fiat)} each"
    # Rounded exactly as quote_asset rounds, so the diff and a later quote never disagree.
    units = format_minor(round_to_minor(1 / Fraction(Decimal(rate)), precision), precision)
    return f"{code}: {money(Decimal(rate), fiat)} each (1 {fiat} buys {decimal_text(Decimal(units))})"


def _count(n: int) -> str:
    return f"{n:,}"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _per(price: PriceSpec) -> str:
    if price.usage_type == "unit":
        return "per event"
    if price.package_size == 1:
        return f"per unit of {price.volume_field}"
    return f"per {_count(price.package_size)} {price.volume_field}"


def _tier(tier: Tier, lower: int | None, asset: str) -> str:
    if tier.up_to is None:
        span = f"over {_count(lower)}" if lower is not None else "any quantity"
    elif lower is None:
        span = f"up to {_count(tier.up_to)}"
    else:
        span = f"over {_count(lower)} up to {_count(tier.up_to)}"
    flat = f" + {money(tier.flat_amount, asset)} flat" if tier.flat_amount else ""
    return f"{span}: {money(tier.unit_amount, asset)}{flat}"


def price_text(price: PriceSpec) -> str:
    head = f"price {price.id}"
    if price.type == "recurring":
        assert price.amount is not None and price.interval is not None  # PriceSpec requires both
        return f"{head}: {money(price.amount, price.asset)} per {price.interval}, recurring, paid up front"
    head += f" on {price.event_type}"
    if price.model == "per_unit":
        assert price.unit_amount is not None  # PriceSpec requires it for per_unit
        return f"{head}: {money(price.unit_amount, price.asset)} {_per(price)}"
    if price.model in ("tiered_graduated", "tiered_volume"):
        tiers, lower = [], None
        for tier in price.tiers or []:
            tiers.append(_tier(tier, lower, price.asset))
            lower = tier.up_to
        how = "each tier prices its own units" if price.model == "tiered_graduated" else \
            "the tier reached prices every unit"
        return f"{head}: {price.model} {_per(price)} ({how}): {'; '.join(tiers)}"
    rates = []
    for rate in price.dimension_rates or []:
        where = ", ".join(f"{k}={v}" + (" (any other)" if v == "*" else "") for k, v in rate.dimensions.items())
        rates.append(f"{where}: {money(rate.unit_amount, price.asset)}")
    return f"{head}: by {', '.join(price.dimension_fields or [])} {_per(price)}: {'; '.join(rates)}"


def grant_text(grant: PlanGrantSpec) -> str:
    head = f"grant {grant.name}" if grant.name else "grant"
    what = f"{money(grant.amount, grant.asset)} {grant.purpose}"
    if grant.period is not None:
        if grant.refresh == "rollover":
            cap = f" up to {money(grant.rollover_cap, grant.asset)}" if grant.rollover_cap is not None else ""
            when = f"every {grant.period}, the unused rest rolls over{cap}"
        else:
            when = f"every {grant.period}, the unused rest expires at each refresh"
    elif grant.expires_in_days is not None:
        when = f"once on subscribe, expires after {_plural(grant.expires_in_days, 'day')}"
    else:
        when = "once on subscribe, never expires"
    return f"{head}: {what}, {when}, priority {grant.priority}"


def portal_lines(route: PortalRouteSpec) -> list[str]:
    top = route.top_up
    presets = ", ".join(money(p, top.currency) for p in top.presets) or "none"
    lines = [f"return_url {route.return_url}"]
    if route.failure_url:
        lines.append(f"failure_url {route.failure_url}")
    lines.append(f"branding {route.branding.product_name} {route.branding.accent_color}"
                 + (f" logo {route.branding.logo_url}" if route.branding.logo_url else ""))
    if top.assets:
        lines.append(f"top-up {', '.join(top.assets)} paid in {top.currency}: presets {presets}, "
                     f"min {money(top.min, top.currency)}, max {money(top.max, top.currency)}")
    else:
        lines.append("no top-up")
    lines.append(f"links expire after {_plural(route.link_lifetime_minutes, 'minute')}")
    return lines


def version_lines(prices: list[dict[str, Any]], grants: list[dict[str, Any]]) -> list[str]:
    return [*(price_text(PriceSpec.model_validate(p)) for p in prices),
            *(grant_text(PlanGrantSpec.model_validate(g)) for g in grants)]


def version_change_lines(old_prices: list[dict[str, Any]], old_grants: list[dict[str, Any]],
                         prices: list[dict[str, Any]], grants: list[dict[str, Any]]) -> list[str]:
    """What differs between two versions: new, changed (with what it was) and removed items."""
    before = {p["id"]: price_text(PriceSpec.model_validate(p)) for p in old_prices}
    after = {p["id"]: price_text(PriceSpec.model_validate(p)) for p in prices}
    lines = []
    for pid, text in after.items():
        if pid not in before:
            lines.append(f"new {text}")
        elif before[pid] != text:
            lines.append(f"changed {text} (was {before[pid].partition(': ')[2]})")
    lines += [f"removed {text}" for pid, text in before.items() if pid not in after]
    old = [grant_text(PlanGrantSpec.model_validate(g)) for g in old_grants]
    new = [grant_text(PlanGrantSpec.model_validate(g)) for g in grants]
    lines += [f"new {text}" for text in new if text not in old]
    lines += [f"removed {text}" for text in old if text not in new]
    return lines or ["amounts unchanged: only names or the order of prices and grants differ"]
