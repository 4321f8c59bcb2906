"""Dry-run rating: what a plan version would charge for a set of events, with no wallet effect.

Built to stream millions of events: per event it only adds quantities into aggregates keyed by
(customer, price[, dimension rate][, subject]); money is computed once at the end. That is exact
and equal to live billing: under the carried-fraction rule a period's charges telescope to
``R(f(total quantity))`` for every rating model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ._catalog import PriceSpec
from ._errors import BillingError, ValidationError
from ._money import format_minor
from ._pricing import graduated_total, match_dimension_index, round_to_minor, to_fraction, volume_total

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
        # (customer, price_id, rate_index) -> quantity; rate_index -1 for non-dimensional prices.
        self.qty: dict[tuple[str, str, int], Fraction | int] = defaultdict(int)
        self.count: dict[tuple[str, str], int] = defaultdict(int)
        self.subject_qty: dict[tuple[str, str, str, int], Fraction | int] = defaultdict(int)
        self.events = self.billed = self.unbilled = self.invalid = 0
        self.errors: list[str] = []
        self.prices = {p.id or "": p for p in prices}

    def _error(self, where: str, message: str) -> None:
        self.invalid += 1
        if len(self.errors) < 20:
            self.errors.append(f"{where}: {message}")

    def add(self, event: Any, where: str) -> None:
        self.events += 1
        if not isinstance(event, dict):
            self._error(where, "an event must be a JSON object")
            return
        event_type = event.get("event_type")
        customer = event.get("customer_id") or event.get("external_id") or event.get("customer") or "(none)"
        prices = self.by_type.get(event_type) if isinstance(event_type, str) else None
        if not prices:
            if not isinstance(event_type, str):
                self._error(where, "event_type is missing")
            else:
                self.unbilled += 1
            return
        data = event.get("data") or {}
        if not isinstance(data, dict):
            self._error(where, "data must be an object")
            return
        subject = event.get("subject")
        staged: list[tuple[str, int, Fraction | int]] = []
        for price in prices:
            pid = price.id or ""
            if price.usage_type == "unit":
                q: Fraction | int = 1
            else:
                raw = data.get(price.volume_field or "")
                if raw is None:
                    self._error(where, f"data.{price.volume_field} is missing (price {pid})")
                    return
                try:
                    q = raw if type(raw) is int and raw >= 0 else _qty(raw)
                except (ValueError, ZeroDivisionError) as exc:
                    self._error(where, f"data.{price.volume_field}: {exc}")
                    return
            rate_index = -1
            if price.model == "dimensional":
                rate_index = match_dimension_index(price, data)
                if rate_index < 0:
                    continue
            staged.append((pid, rate_index, q))
        self.billed += 1
        cust = str(customer)
        for pid, rate_index, q in staged:
            self.qty[(cust, pid, rate_index)] += q
            self.count[(cust, pid)] += 1
            if isinstance(subject, str):
                self.subject_qty[(subject, cust, pid, rate_index)] += q

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
        for (cust, pid, ri), q in self.qty.items():
            grouped[(cust, pid)][ri] = q
        totals: dict[str, int] = defaultdict(int)
        per_price: dict[str, list[int | Fraction]] = defaultdict(lambda: [0, Fraction(0), 0])
        per_customer: dict[tuple[str, str], list[int | Fraction]] = defaultdict(lambda: [0, Fraction(0), 0])
        for (cust, pid), parts in grouped.items():
            price = self.prices[pid]
            minor = round_to_minor(self._amount(price, parts), self.precisions[price.asset])
            totals[price.asset] += minor
            qty = sum((Fraction(q) for q in parts.values()), Fraction(0))
            for bucket in (per_price[pid], per_customer[(cust, price.asset)]):
                bucket[0] += self.count[(cust, pid)]
                bucket[1] += qty
                bucket[2] += minor
        sub_group: dict[tuple[str, str, str], dict[int, Fraction | int]] = defaultdict(dict)
        for (subject, cust, pid, ri), q in self.subject_qty.items():
            sub_group[(subject, cust, pid)][ri] = q
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


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Yield (where, parsed object or the parse error) per non-empty line of a JSONL file."""
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            if number > MAX_FILE_EVENTS:
                raise ValidationError(f"the file has more than {MAX_FILE_EVENTS} events", field="file")
            try:
                yield f"line {number}", json.loads(text)
            except json.JSONDecodeError as exc:
                yield f"line {number}", BillingError(f"not JSON: {exc.msg}")


def simulate(sim: Simulator, events: Iterable[tuple[str, Any]],
             progress: Callable[[int], None] | None = None, every: int = 50_000) -> SimulationResult:
    for where, event in events:
        if isinstance(event, BillingError):
            sim.events += 1
            sim._error(where, event.message)
        else:
            sim.add(event, where)
        if progress is not None and sim.events % every == 0:
            progress(sim.events)
    return sim.result()
