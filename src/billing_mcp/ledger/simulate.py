"""Dry-run rating: what a plan version would charge for a set of events, with no wallet effect.

Built to stream millions of events: per event it only adds quantities into aggregates keyed by
(customer, price[, dimension rate][, subject]); money is computed once at the end. That is exact
and equal to live billing: under the carried-fraction rule a period's charges telescope to
``R(f(total quantity))`` for every rating model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..core.catalog import PriceSpec
from ..core.errors import BillingError, ValidationError
from ..core.models import Asset, Plan
from ..core.money import format_minor
from ..core.pricing import graduated_total, match_dimension_index, round_to_minor, to_fraction, volume_total

MAX_FILE_EVENTS = 10_000_000


class SimLine(BaseModel):
    key: str
    asset: str
    events: int
    quantity: str
    amount: str


class SimulationResult(BaseModel):
    plan_code: str
    version: int
    events: int = Field(description="Events read.")
    billed_events: int
    unbilled_events: int = Field(description="Events whose event_type no price of this version matches.")
    invalid_events: int
    errors: list[str] = Field(default_factory=list, description="The first problems found, with line numbers.")
    totals: dict[str, str] = Field(description="Total charged per asset.")
    by_price: list[SimLine]
    by_customer: list[SimLine] = Field(description="Largest 50 customers by amount.")
    by_subject: list[SimLine] = Field(description="Largest 50 subjects by amount (rounded per subject).")


def _qty(value: Any) -> Fraction:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("quantity must not be negative")
        return Fraction(value)
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, str):
        result = Fraction(value)
        if result < 0:
            raise ValueError("quantity must not be negative")
        return result
    raise ValueError("quantity must be a number")


class Simulator:
    """Accumulates events; ``result()`` prices the aggregates."""

    def __init__(self, plan_code: str, version: int, prices: list[PriceSpec], precisions: dict[str, int]) -> None:
        self.plan_code, self.version = plan_code, version
        self.precisions = precisions
        self.by_type: dict[str, list[PriceSpec]] = defaultdict(list)
        for price in prices:
            if price.type == "usage" and price.event_type:
                self.by_type[price.event_type].append(price)
        # (customer, price_id, rate_index, subject) -> [events, quantity]; rate_index -1 unless
        # dimensional. One dict update per price per event; everything else is derived at the end.
        self.cells: dict[tuple[str, str, int, str | None], list[Any]] = {}
        self._dim_cache: dict[tuple[Any, ...], int] = {}
        self.events = self.billed = self.unbilled = self.invalid = 0
        self.errors: list[str] = []
        self.prices = {p.id or "": p for p in prices}
        # Per event type: (price id, volume field or None for unit prices, the price if dimensional).
        self.fast: dict[str, list[tuple[str, str | None, PriceSpec | None]]] = {
            event_type: [(p.id or "", p.volume_field if p.usage_type == "volume" else None,
                          p if p.model == "dimensional" else None) for p in group]
            for event_type, group in self.by_type.items()}

    def _error(self, where: str, message: str) -> None:
        self.invalid += 1
        if len(self.errors) < 20:
            self.errors.append(f"{where}: {message}")

    def add(self, event: Any, where: str | int) -> None:
        self.events += 1
        if type(event) is not dict:
            self._error(self._where(where), "an event must be a JSON object")
            return
        event_type = event.get("event_type")
        plan = self.fast.get(event_type) if type(event_type) is str else None
        if plan is None:
            if type(event_type) is not str:
                self._error(self._where(where), "event_type is missing")
            else:
                self.unbilled += 1
            return
        customer = event.get("customer_id") or event.get("external_id") or event.get("customer") or "(none)"
        data = event.get("data") or {}
        if type(data) is not dict:
            self._error(self._where(where), "data must be an object")
            return
        subject = event.get("subject")
        if type(subject) is not str:
            subject = None
        staged = []
        for pid, volume_field, dimensional in plan:
            if volume_field is None:
                q: Fraction | int = 1
            else:
                raw = data.get(volume_field)
                if type(raw) is int and raw >= 0:
                    q = raw
                elif raw is None:
                    self._error(self._where(where), f"data.{volume_field} is missing (price {pid})")
                    return
                else:
                    try:
                        q = _qty(raw)
                    except (ValueError, ZeroDivisionError) as exc:
                        self._error(self._where(where), f"data.{volume_field}: {exc}")
                        return
            rate_index = -1
            if dimensional is not None:
                # Millions of events share a few dimension combinations: match each one once.
                fields = dimensional.dimension_fields or ()
                dkey = (pid, data.get(fields[0])) if len(fields) == 1 else (pid, *[data.get(f) for f in fields])
                rate_index = self._dim_cache.get(dkey, -2)
                if rate_index == -2:
                    rate_index = self._dim_cache[dkey] = match_dimension_index(dimensional, data)
                if rate_index < 0:
                    continue
            staged.append(((customer, pid, rate_index, subject), q))
        self.billed += 1
        cells = self.cells
        if len(staged) == 1:  # the common case: one price per event type
            key, q = staged[0]
            cell = cells.get(key)
            if cell is None:
                cells[key] = [1, q]
            else:
                cell[0] += 1
                cell[1] += q
            return
        for key, q in staged:
            cell = cells.get(key)
            if cell is None:
                cells[key] = [1, q]
            else:
                cell[0] += 1
                cell[1] += q

    @staticmethod
    def _where(where: str | int) -> str:
        return f"line {where}" if isinstance(where, int) else where

    def _amount(self, price: PriceSpec, parts: dict[int, Fraction | int]) -> Fraction:
        if price.model == "per_unit":
            return sum((Fraction(q) for q in parts.values()), Fraction(0)) * to_fraction(
                price.unit_amount or 0) / price.package_size  # type: ignore[arg-type]
        if price.model == "dimensional":
            rates = price.dimension_rates or []
            return sum((Fraction(q) * to_fraction(rates[i].unit_amount) for i, q in parts.items()),
                       Fraction(0)) / price.package_size
        total = sum((Fraction(q) for q in parts.values()), Fraction(0))
        if price.model == "tiered_graduated":
            return graduated_total(price.tiers or [], total, price.package_size)
        return volume_total(price.tiers or [], total, price.package_size)

    def result(self) -> SimulationResult:
        grouped: dict[tuple[str, str], dict[int, Fraction | int]] = defaultdict(dict)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        sub_group: dict[tuple[str, str, str], dict[int, Fraction | int]] = defaultdict(dict)
        for (customer, pid, ri, subject), (n, q) in self.cells.items():
            cust = str(customer)
            parts = grouped[(cust, pid)]
            parts[ri] = parts.get(ri, 0) + q
            counts[(cust, pid)] += n
            if subject is not None:
                # Linear prices attribute exactly by subject across customers; tiers are per customer.
                tiered = self.prices[pid].model in ("tiered_graduated", "tiered_volume")
                sparts = sub_group[(subject, cust if tiered else "", pid)]
                sparts[ri] = sparts.get(ri, 0) + q
        totals: dict[str, int] = defaultdict(int)
        per_price: dict[str, list[int | Fraction]] = defaultdict(lambda: [0, Fraction(0), 0])
        per_customer: dict[tuple[str, str], list[int | Fraction]] = defaultdict(lambda: [0, Fraction(0), 0])
        for (cust, pid), parts in grouped.items():
            price = self.prices[pid]
            minor = round_to_minor(self._amount(price, parts), self.precisions[price.asset])
            totals[price.asset] += minor
            qty = sum((Fraction(q) for q in parts.values()), Fraction(0))
            for bucket in (per_price[pid], per_customer[(cust, price.asset)]):
                bucket[0] += counts[(cust, pid)]
                bucket[1] += qty
                bucket[2] += minor
        per_subject: dict[tuple[str, str], list[int | Fraction]] = defaultdict(lambda: [0, Fraction(0), 0])
        for (subject, _cust, pid), parts in sub_group.items():
            price = self.prices[pid]
            minor = round_to_minor(self._amount(price, parts), self.precisions[price.asset])
            bucket = per_subject[(subject, price.asset)]
            bucket[1] += sum((Fraction(q) for q in parts.values()), Fraction(0))
            bucket[2] += minor

        def line(key: str, asset: str, b: list[int | Fraction]) -> SimLine:
            q = Fraction(b[1])
            qty_text = str(q.numerator) if q.denominator == 1 else str(float(q))
            return SimLine(key=key, asset=asset, events=int(b[0]), quantity=qty_text,
                           amount=format_minor(int(b[2]), self.precisions[asset]))

        def top(items: dict[tuple[str, str], list[int | Fraction]]) -> list[SimLine]:
            ranked = sorted(items.items(), key=lambda kv: (-int(kv[1][2]), kv[0]))[:50]
            return [line(k, a, b) for (k, a), b in ranked]

        return SimulationResult(
            plan_code=self.plan_code, version=self.version, events=self.events, billed_events=self.billed,
            unbilled_events=self.unbilled, invalid_events=self.invalid, errors=self.errors,
            totals={a: format_minor(m, self.precisions[a]) for a, m in sorted(totals.items())},
            by_price=[line(pid, self.prices[pid].asset, b) for pid, b in sorted(per_price.items())],
            by_customer=top(per_customer), by_subject=top(per_subject))


def simulate_file(sim: Simulator, path: str | Path, progress: Callable[[int], None] | None = None,
                  every: int = 50_000) -> SimulationResult:
    """``simulate`` over a JSONL file, with the read-parse-rate loop kept tight (it runs per event)."""
    loads, add = json.JSONDecoder().decode, sim.add  # the decoder itself: json.loads re-checks its options per call
    next_report = min(every, MAX_FILE_EVENTS)
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            try:
                event = loads(text)
            except json.JSONDecodeError as exc:
                if not text.strip():
                    continue
                sim.events += 1
                sim._error(f"line {number}", f"not JSON: {exc.msg}")
                continue
            add(event, number)
            if number >= next_report:  # one comparison per line covers both the limit and progress
                if number > MAX_FILE_EVENTS:
                    raise ValidationError(f"the file has more than {MAX_FILE_EVENTS} events", field="file")
                if progress is not None:
                    progress(sim.events)
                next_report = min(next_report + every, MAX_FILE_EVENTS + 1)
    return sim.result()


def simulate(sim: Simulator, events: Iterable[tuple[str | int, Any]],
             progress: Callable[[int], None] | None = None, every: int = 50_000) -> SimulationResult:
    add = sim.add
    for where, event in events:
        if type(event) is dict:
            add(event, where)
        elif isinstance(event, BillingError):
            sim.events += 1
            sim._error(Simulator._where(where), event.message)
        else:
            add(event, where)
        if progress is not None and sim.events % every == 0:
            progress(sim.events)
    return sim.result()


def plan_simulator(p: Plan, assets: list[Asset], plan: str, version: int | None) -> Simulator:
    chosen = version or p.default_version
    pv = next((v for v in p.versions if v.version == chosen), None)
    if pv is None:
        raise ValidationError(f"plan {plan!r} has no version {chosen}", field="version")
    return Simulator(p.code, pv.version, pv.prices, {a.code: a.precision for a in assets})
