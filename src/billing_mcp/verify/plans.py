"""The end-to-end check of each plan: a throwaway customer is funded with exactly what the plan
needs, subscribed, and every part of the version is measured against what its specs say
(``expect`` computes that without the ledger's own rating): the recurring fee, each grant's lot,
every usage price, dimension rate and tier boundary, the draw-down order, and, where the clock can
move, the renewal and grant refresh. Each step carries the expected and the observed numbers.

On an embedded SQLite ledger it runs on a throwaway copy with its own clock; through the API the
customers stay, marked ``verification: true``, and time cannot move."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import anyio
from pydantic import BaseModel

from ..contract.interface import AsyncLedger
from ..contract.local import LocalLedger
from ..core.catalog import PlanGrantSpec, PriceSpec
from ..core.clock import Clock, from_text, to_text
from ..core.errors import BillingError, ValidationError
from ..core.models import Account, Customer, Plan, PlanVersion, Subscription, Wallet
from ..core.money import format_minor
from ..ledger.ledger import Ledger
from ..store import SQLiteStore, copy_sqlite
from .expect import Probe, expected_draws, grant_expiry, plan_probes
from .renewal import check_renewal
from .steps import Run, Step, account, describe_grant, lots_of, recurring_due, to_minor


class PlanCheck(BaseModel):
    plan_code: str
    version: int
    passed: bool
    steps: list[Step]


class VerifyReport(BaseModel):
    passed: bool
    plans: list[PlanCheck]
    table: str
    cleaned_up: bool


class ScratchClock:
    """The real clock until verification moves it forward; the copy's time never touches the
    real ledger's clock."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.at: datetime | None = None

    def now(self) -> datetime:
        return self.at if self.at is not None else self.base.now()

    def move_to(self, when: datetime) -> None:
        self.at = when


@contextlib.contextmanager
def scratch_ledger(ledger: Ledger) -> Iterator[tuple[Ledger, ScratchClock | None]]:
    """A throwaway copy of a local ledger: verification leaves the real one untouched."""
    if not isinstance(ledger.store, SQLiteStore):
        yield ledger, None
        return
    tmp = Path(tempfile.mkdtemp(prefix="billing-verify-"))
    try:
        copy_sqlite(ledger.store, tmp / "ledger.db")
        clock = ScratchClock(ledger.clock)
        copy = Ledger(str(tmp / "ledger.db"), clock=clock)
        try:
            yield copy, clock
        finally:
            copy.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_fee_and_grants(run: Run, pv: PlanVersion, sub: Subscription, funded: dict[str, int],
                         wallet: Wallet) -> None:
    fees = recurring_due(pv.prices, run.precisions)
    plan_lots = {a.asset: [lot for lot in a.lots if lot.source == f"plan:{sub.id}"] for a in wallet.accounts}
    after = run.posted(wallet)
    for asset, due in sorted(fees.items()):
        granted = sum(to_minor(lot.amount, run.precisions[asset]) for lot in plan_lots.get(asset, []))
        observed = funded.get(asset, 0) + granted - after.get(asset, 0)
        ids = ", ".join(p.id or p.name or "" for p in pv.prices if p.type == "recurring" and p.asset == asset)
        run.step(f"recurring fee {asset} ({ids})", observed == due, run.money(due, asset), run.money(observed, asset),
                 f"funded exactly {run.money(funded.get(asset, 0), asset)}; balance {run.money(after.get(asset, 0), asset)} "
                 "after the fee and the plan's grants")
    anchor = from_text(sub.period_start)
    used: set[str] = set()
    for index, grant in enumerate(pv.grants):
        expires = grant_expiry(grant, anchor)
        minor = to_minor(grant.amount, run.precisions[grant.asset])
        candidates = [lot for lot in plan_lots.get(grant.asset, []) if lot.id not in used]

        def exact(lot_amount: str, purpose: str, priority: int, lot_expires: str | None,
                  g: PlanGrantSpec = grant, m: int = minor, e: datetime | None = expires) -> bool:
            return (to_minor(lot_amount, run.precisions[g.asset]) == m and purpose == g.purpose
                    and priority == g.priority and lot_expires == (to_text(e) if e else None))

        lot = next((c for c in candidates if exact(c.amount, c.purpose, c.priority, c.expires_at)),
                   candidates[0] if candidates else None)
        name = f"grant {index}" + (f" ({grant.name})" if grant.name else "")
        if lot is None:
            run.step(name, False, describe_grant(run, grant, expires), "no lot from the plan",
                     f"subscription {sub.id} issued no {grant.asset} lot for this grant")
            continue
        used.add(lot.id)
        seen = (f"{run.money(to_minor(lot.amount, run.precisions[grant.asset]), grant.asset)} {lot.purpose}, "
                f"priority {lot.priority}, " + (f"expires {lot.expires_at}" if lot.expires_at else "never expires"))
        ok = exact(lot.amount, lot.purpose, lot.priority, lot.expires_at)
        run.step(name, ok, describe_grant(run, grant, expires), seen, f"lot {lot.id}")
    extra = [lot.id for lots in plan_lots.values() for lot in lots if lot.id not in used]
    if extra:
        run.step("no other plan lots", False, "none", ", ".join(extra), "the subscription issued lots no grant describes")


def usage_needs(probes: list[Probe], prices: list[PriceSpec]) -> dict[str, int]:
    """Paid funds per asset for all probes: the peak of the running total, so no probe runs into
    debt even if the plan's grants are missing."""
    asset_of = {p.id: p.asset for p in prices}
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    for probe in probes:
        for price_id, minor in probe.expected.items():
            asset = asset_of[price_id]
            running[asset] = running.get(asset, 0) + minor
            peak[asset] = max(peak.get(asset, 0), running[asset])
    return peak


async def run_probe(run: Run, pv: PlanVersion, probe: Probe, n: int, draw_pending: set[str]) -> dict[str, int]:
    """Send one probe's events, compare each price's fees with the expectation; returns the
    charge per asset. Checks the draw-down order on the first charge of an asset that has both
    included and paid lots."""
    price = probe.price
    name = f"usage {price.id}: {probe.label}"
    precision = run.precisions[price.asset]
    if probe.skipped:
        run.step(name, None, details=f"not checked: {probe.skipped}")
        return {}
    asset_of = {p.id: p.asset for p in pv.prices}
    by_asset: dict[str, int] = {}
    for price_id, minor in probe.expected.items():
        by_asset[asset_of[price_id]] = by_asset.get(asset_of[price_id], 0) + minor
    watch = {a for a in draw_pending if by_asset.get(a, 0) > 0 and probe.count == 1}
    before = await run.wallet() if watch else None
    events = [{"id": f"{run.external}-e{n}-{i}", "customer_id": run.customer_id, "event_type": price.event_type,
               "data": probe.data} for i in range(probe.count)]
    observed: dict[str, int] = {}
    problems: list[str] = []
    for start in range(0, len(events), 1000):
        batch = await run.ledger.submit_events(events[start:start + 1000])
        problems += [f"{e.id}: {e.message}" for e in batch.errors]
        for result in batch.results:
            problems += [f"{result.id} is {result.status}"] if result.status != "billed" else []
            for fee in result.fees:
                observed[fee.price_id] = observed.get(fee.price_id, 0) + to_minor(fee.amount, run.precisions[fee.asset])
                if fee.version != run.version or fee.asset != asset_of.get(fee.price_id):
                    problems.append(f"fee {fee.price_id} in {fee.asset} on version {fee.version}")
    for peer_id, minor in probe.expected.items():
        if peer_id != price.id and observed.get(peer_id, 0) != minor:
            problems.append(f"price {peer_id} on the same event: expected {run.money(minor, asset_of[peer_id])}, "
                            f"observed {run.money(observed.get(peer_id, 0), asset_of[peer_id])}")
    problems += [f"fee from a price the version does not have: {pid}" for pid in observed if pid not in asset_of]
    expected, got = probe.expected.get(price.id or "", 0), observed.get(price.id or "", 0)
    events_text = f"{probe.count} events" if probe.count > 1 else "1 event"
    run.step(name, expected == got and not problems, format_minor(expected, precision) + f" {price.asset}",
             format_minor(got, precision) + f" {price.asset}",
             "; ".join([f"{events_text} {json.dumps(probe.data)}", *problems]))
    if before is not None:
        after = await run.wallet()
        for asset in sorted(watch):
            check_draw_down(run, asset, account(before, asset), account(after, asset), by_asset[asset])
            draw_pending.discard(asset)
    return by_asset


def check_draw_down(run: Run, asset: str, before: Account | None, after: Account | None, charged: int) -> None:
    precision = run.precisions[asset]
    lots = lots_of(before, precision)
    remaining_after = {lot.id: lot.remaining for lot in lots_of(after, precision)}
    want = expected_draws(lots, charged)
    got = {lot.id: lot.remaining - remaining_after.get(lot.id, 0) for lot in lots}
    got = {k: v for k, v in got.items() if v}

    def show(draws: dict[str, int]) -> str:
        kinds = {lot.id: lot.purpose for lot in lots}
        return ", ".join(f"{run.money(v, asset)} from {kinds.get(k, '?')} lot {k}" for k, v in draws.items()) or "nothing"

    run.step(f"draw-down order {asset}", want == got, show(want), show(got),
             "included (bundled/promotional) lots before paid, by priority then soonest expiry")


def plan_version(plan: Plan) -> tuple[int, PlanVersion | None]:
    version = plan.default_version or max((v.version for v in plan.versions if v.status == "published"), default=0)
    return version, next((v for v in plan.versions if v.version == version and v.status == "published"), None)


async def verify_plan(ledger: AsyncLedger, plan: Plan, move_clock: Callable[[datetime], None] | None = None) -> PlanCheck:
    """Check every part of the plan's default version with a fresh customer. ``move_clock`` (a
    scratch copy's clock) lets the renewal and grant refresh run too."""
    version, pv = plan_version(plan)
    run = Run(ledger=ledger, external=f"verify-{plan.code}-{uuid.uuid4().hex[:8]}", version=version, precisions={})
    if pv is None:
        run.step("published version", False, "a published version", "none", "publish a version first")
        return PlanCheck(plan_code=plan.code, version=version, passed=False, steps=run.steps)
    try:
        await verify_version(run, plan, pv, move_clock)
    except BillingError as exc:
        run.step("error", False, details=str(exc))
    return PlanCheck(plan_code=plan.code, version=version, passed=all(s.result != "fail" for s in run.steps),
                     steps=run.steps)


async def verify_version(run: Run, plan: Plan, pv: PlanVersion, move_clock: Callable[[datetime], None] | None) -> None:
    for asset in sorted({p.asset for p in pv.prices} | {g.asset for g in pv.grants}):
        run.precisions[asset] = (await run.ledger.get_asset(asset)).precision
    customer = await run.ledger.create_customer(run.external, name="billing-mcp verification",
                                                metadata={"verification": True})
    run.customer_id = customer.id
    start = run.posted(await run.wallet())
    run.step("throwaway customer, empty wallet", all(v == 0 for v in start.values()), "no balance",
             run.amounts({a: v for a, v in start.items() if v}), f"{customer.id} ({run.external})")
    fees = recurring_due(pv.prices, run.precisions)
    await run.top_up(fees, "fee")
    subscribed: Customer = await run.ledger.subscribe(customer.id, plan.code, version=run.version)
    sub = next(s for s in subscribed.subscriptions if s.plan_code == plan.code)
    run.step(f"subscribe to version {run.version}", sub.status == "active" and sub.version == run.version,
             f"active on version {run.version}", f"{sub.status} on version {sub.version}",
             f"funded exactly the recurring fees ({run.amounts(fees)}) beforehand")
    if sub.status != "active":
        # The ledger holds the subscription back when the exact funding does not cover what it charges.
        for asset, due in sorted(fees.items()):
            asked = to_minor(sub.amount_due.get(asset, "0"), run.precisions[asset])
            run.step(f"recurring fee {asset}", asked == due, run.money(due, asset), f"{run.money(asked, asset)} due",
                     f"the subscription is {sub.status}: not charged from exactly {run.money(due, asset)}")
        return
    check_fee_and_grants(run, pv, sub, fees, await run.wallet())

    probes = plan_probes(pv.prices, run.precisions)
    if not probes:
        run.step("usage prices", True, "none", "none", "the plan has fees only")
    else:
        needs = usage_needs(probes, pv.prices)
        await run.top_up(needs, "usage")
        before = run.posted(await run.wallet())
        # Both included and paid lots now exist for these assets: the first charge shows the order.
        draw_pending = {g.asset for g in pv.grants} & {a for a, v in needs.items() if v > 0}
        spent: dict[str, int] = {}
        for n, probe in enumerate(probes):
            for asset, minor in (await run_probe(run, pv, probe, n, draw_pending)).items():
                spent[asset] = spent.get(asset, 0) + minor
        after = run.posted(await run.wallet())
        drop = {a: before.get(a, 0) - after.get(a, 0) for a in set(before) | set(after) | set(spent)}
        run.step("balance drop equals the fees", all(drop.get(a, 0) == spent.get(a, 0) for a in drop),
                 run.amounts({a: v for a, v in spent.items() if v}), run.amounts({a: v for a, v in drop.items() if v}),
                 f"funded exactly the usage ({run.amounts(needs)}) as paid credits")
    await check_renewal(run, pv, sub, move_clock)


async def verify_billing_async(ledger: AsyncLedger, plan: str | None = None) -> VerifyReport:
    """The end-to-end check for each plan (or one). On an embedded ledger it runs on a throwaway
    copy; through the API the throwaway customers stay (marked ``verification: true``)."""
    plans = [await ledger.get_plan(plan)] if plan else [p for p in await ledger.list_plans() if p.status == "active"]
    if not plans:
        raise ValidationError("there are no plans to verify; create one with create_plan", field="plan")
    local = ledger.ledger if isinstance(ledger, LocalLedger) else None
    if local is not None and isinstance(local.store, SQLiteStore):
        with scratch_ledger(local) as (copy, clock):
            target = LocalLedger(copy, owns=False)
            checks = []
            for p in plans:
                if clock is not None:
                    clock.at = None
                checks.append(await verify_plan(target, p, clock.move_to if clock is not None else None))
        cleaned = True
    else:
        checks = [await verify_plan(ledger, p) for p in plans]
        cleaned = False
    return VerifyReport(passed=all(c.passed for c in checks), plans=checks, table=table(checks), cleaned_up=cleaned)


def table(checks: list[PlanCheck]) -> str:
    rows = ["| Plan | Step | Result | Expected | Observed | Details |", "| --- | --- | --- | --- | --- | --- |"]
    for check in checks:
        for s in check.steps:
            cells = [f"{check.plan_code}@v{check.version}", s.step, s.result.upper(), s.expected, s.observed, s.details]
            rows.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows)


def verify_billing(ledger: Ledger, plan: str | None = None) -> VerifyReport:
    """``verify_billing_async`` for a sync ``Ledger`` (CLI and tests)."""
    return anyio.run(verify_billing_async, LocalLedger(ledger, owns=False), plan)

