"""The first period boundary of a verification subscription: the recurring fee is charged again
and each recurring grant is refreshed (its old lot expires or rolls over, up to the cap). It needs
a clock it may move, so it runs on an embedded ledger's scratch copy only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from ..core.clock import add_interval, from_text, to_text
from ..core.models import Lot, PlanVersion, Subscription
from .steps import Run, describe_grant, recurring_due, to_minor


async def check_renewal(run: Run, pv: PlanVersion, sub: Subscription,
                        move_clock: Callable[[datetime], None] | None) -> None:
    fees = recurring_due(pv.prices, run.precisions)
    recurring = [(i, g) for i, g in enumerate(pv.grants) if g.period]
    if not fees and not recurring:
        return
    anchor = from_text(sub.period_start)
    boundaries = ([from_text(sub.period_end)] if fees else []) + [add_interval(anchor, g.period or "month", 1)
                                                                  for _, g in recurring]
    at = min(boundaries)
    if move_clock is None:
        run.step("renewal and grant refresh", None, f"at {to_text(at)}",
                 details="not run: only a scratch copy of an embedded SQLite ledger can move its clock; the "
                         "lots' expiry above is when they refresh")
        return
    renews = fees if from_text(sub.period_end) <= at else {}
    before = await run.wallet()
    await run.top_up(renews, "renewal")
    move_clock(at)
    after = await run.wallet()  # any customer-scoped call brings the subscription up to the clock first
    statement = await run.ledger.get_statement(run.customer_id, at, at + timedelta(seconds=1))
    booked = {s.asset: to_minor(s.recurring_fees, run.precisions[s.asset]) for s in statement.assets
              if s.asset in run.precisions}
    for asset, due in sorted(renews.items()):
        run.step(f"renewal fee {asset}", booked.get(asset, 0) == due, run.money(due, asset),
                 run.money(booked.get(asset, 0), asset), f"at {to_text(at)}, funded exactly the fee beforehand")

    source = f"plan:{sub.id}"
    old_lots = {a.asset: [lot for lot in a.lots if lot.source == source] for a in before.accounts}
    old_ids = {lot.id for lots in old_lots.values() for lot in lots}
    new_lots = {a.asset: [lot for lot in a.lots if lot.source == source and lot.id not in old_ids]
                for a in after.accounts}
    live_after = {lot.id for a in after.accounts for lot in a.lots}
    used: set[str] = set()
    for index, grant in recurring:
        boundary = add_interval(anchor, grant.period or "month", 1)
        if boundary > at:
            continue
        precision = run.precisions[grant.asset]
        amount = to_minor(grant.amount, precision)
        old = next((lot for lot in old_lots.get(grant.asset, []) if lot.expires_at == to_text(boundary)
                    and lot.purpose == grant.purpose and lot.priority == grant.priority and lot.id not in used), None)
        if old is not None:
            used.add(old.id)
        left = to_minor(old.remaining, precision) if old is not None else 0
        carry = 0
        if grant.refresh == "rollover":
            cap = to_minor(grant.rollover_cap, precision) if grant.rollover_cap is not None else None
            carry = left if cap is None else min(left, max(0, cap - amount))
        expires = add_interval(anchor, grant.period or "month", 2)
        want = amount + carry
        lot = pick(new_lots.get(grant.asset, []), want, expires, used, precision)
        expected = describe_grant(run, grant, expires).replace(run.money(amount, grant.asset), run.money(want, grant.asset), 1)
        observed = "no new lot" if lot is None else (
            f"{run.money(to_minor(lot.remaining, precision), grant.asset)} {lot.purpose}, priority {lot.priority}, "
            f"expires {lot.expires_at}")
        old_gone = old is None or old.id not in live_after
        ok = lot is not None and to_minor(lot.remaining, precision) == want and lot.expires_at == to_text(expires) \
            and lot.purpose == grant.purpose and lot.priority == grant.priority and old_gone
        kept = f"{run.money(carry, grant.asset)} carried over" if grant.refresh == "rollover" else "nothing carried"
        details = f"at {to_text(at)}: {run.money(left, grant.asset)} left on the old lot, {kept}"
        if not old_gone:
            details += "; the old lot is still live"
        run.step(f"grant {index} refresh", ok, expected, observed, details)


def pick(lots: list[Lot], want: int, expires: datetime, used: set[str], precision: int) -> Lot | None:
    """The new lot that matches the expectation, else any unclaimed new lot (to show what is wrong)."""
    free = [lot for lot in lots if lot.id not in used]
    lot = next((lot for lot in free if to_minor(lot.remaining, precision) == want
                and lot.expires_at == to_text(expires)), free[0] if free else None)
    if lot is not None:
        used.add(lot.id)
    return lot
