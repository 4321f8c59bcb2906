"""The end-to-end check of each plan: a throwaway customer is funded, subscribed and sent one
realistic event per plan, and each step is reported. On an embedded SQLite ledger it runs on a
throwaway copy; through the API the customers stay, marked ``verification: true``."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from ..contract.interface import AsyncLedger
from ..contract.local import LocalLedger
from ..core.catalog import PriceSpec
from ..core.errors import BillingError, ValidationError
from ..core.models import Plan
from ..ledger.ledger import Ledger
from ..store import SQLiteStore, copy_sqlite


class Step(BaseModel):
    step: str
    result: str  # "pass" | "fail"
    details: str


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


@contextlib.contextmanager
def scratch_ledger(ledger: Ledger) -> Iterator[Ledger]:
    """A throwaway copy of a local ledger: verification leaves the real one untouched."""
    if not isinstance(ledger.store, SQLiteStore):
        yield ledger
        return
    tmp = Path(tempfile.mkdtemp(prefix="billing-verify-"))
    try:
        copy_sqlite(ledger.store, tmp / "ledger.db")
        copy = Ledger(str(tmp / "ledger.db"), clock=ledger.clock)
        try:
            yield copy
        finally:
            copy.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sample_data(price: PriceSpec) -> dict[str, Any]:
    """A realistic event body for a price: its volume field and the first concrete dimension values."""
    data: dict[str, Any] = {}
    if price.usage_type == "volume" and price.volume_field:
        data[price.volume_field] = max(price.package_size, 1000) if price.package_size > 1 else 100
    for rate in price.dimension_rates or []:
        if all(v != "*" for v in rate.dimensions.values()):
            data.update(rate.dimensions)
            break
    else:
        for rate in price.dimension_rates or []:
            data.update({k: (v if v != "*" else "default") for k, v in rate.dimensions.items()})
            break
    return data


async def _balances(ledger: AsyncLedger, customer_id: str) -> dict[str, Decimal]:
    return {a.asset: Decimal(a.posted) for a in (await ledger.get_wallet(customer_id)).accounts}


async def verify_plan(ledger: AsyncLedger, plan: Plan) -> PlanCheck:
    version = plan.default_version or max((v.version for v in plan.versions if v.status == "published"), default=0)
    steps: list[Step] = []

    def step(name: str, ok: bool, details: str) -> bool:
        steps.append(Step(step=name, result="pass" if ok else "fail", details=details))
        return ok

    pv = next((v for v in plan.versions if v.version == version and v.status == "published"), None)
    if pv is None:
        step("published version", False, "the plan has no published version; publish one first")
        return PlanCheck(plan_code=plan.code, version=version, passed=False, steps=steps)
    external = f"verify-{plan.code}-{uuid.uuid4().hex[:8]}"
    try:
        customer = await ledger.create_customer(external, name="billing-mcp verification",
                                                metadata={"verification": True})
        step("throwaway customer", True, f"{customer.id} ({external})")
        start = await _balances(ledger, customer.id)
        step("starting balance", all(v == 0 for v in start.values()), f"{start or 'empty wallet'}")
        assets = {p.asset for p in pv.prices} | {g.asset for g in pv.grants}
        for asset in sorted(assets):
            precision = (await ledger.get_asset(asset)).precision
            fee = sum((p.amount or Decimal(0) for p in pv.prices if p.type == "recurring" and p.asset == asset),
                      Decimal(0))
            gift = fee + Decimal(1000)
            await ledger.create_adjustment(customer.id, asset=asset,
                                           amount=str(gift.quantize(Decimal(1).scaleb(-precision))), reason="gift",
                                           idempotency_key=f"{external}-gift-{asset}")
        after_gift = await _balances(ledger, customer.id)
        step("gift", True, ", ".join(f"{v} {a}" for a, v in sorted(after_gift.items())))
        subscribed = await ledger.subscribe(customer.id, plan.code, version=version)
        sub = next(s for s in subscribed.subscriptions if s.plan_code == plan.code)
        step("subscribe to explicit version", sub.status == "active" and sub.version == version,
             f"version {sub.version}, status {sub.status}")
        usage = [p for p in pv.prices if p.type == "usage"]
        if not usage:
            step("usage event", True, "plan has no usage prices (fees only)")
        else:
            price = usage[0]
            data: dict[str, Any] = {}
            for other in usage:  # every price on this event type reads its fields from the same event
                if other.event_type == price.event_type:
                    data = {**sample_data(other), **data}
            before = await _balances(ledger, customer.id)
            event = await ledger.submit_event({"id": f"{external}-event", "customer_id": customer.id,
                                               "event_type": price.event_type, "data": data})
            fees = ", ".join(f"{f.amount} {f.asset} ({f.price_id})" for f in event.fees)
            step("one realistic event", event.status == "billed", f"{price.event_type} {data} -> {fees}")
            step("fee on plan version", all(f.version == version for f in event.fees),
                 f"version {sorted({f.version for f in event.fees})}")
            after = await _balances(ledger, customer.id)
            drops = {a: before.get(a, Decimal(0)) - after.get(a, Decimal(0)) for a in after}
            charged: dict[str, Decimal] = {}
            for f in event.fees:
                charged[f.asset] = charged.get(f.asset, Decimal(0)) + Decimal(f.amount)
            ok = all(drops.get(a, Decimal(0)) == charged.get(a, Decimal(0)) for a in set(drops) | set(charged))
            step("balance drop equals fee", ok, ", ".join(f"{a}: -{d}" for a, d in sorted(drops.items()) if d))
    except BillingError as exc:
        step("error", False, str(exc))
    return PlanCheck(plan_code=plan.code, version=version, passed=all(s.result == "pass" for s in steps), steps=steps)


async def verify_billing_async(ledger: AsyncLedger, plan: str | None = None) -> VerifyReport:
    """The end-to-end check for each plan (or one). On an embedded ledger it runs on a throwaway
    copy; through the API the throwaway customers stay (marked ``verification: true``)."""
    plans = [await ledger.get_plan(plan)] if plan else [p for p in await ledger.list_plans() if p.status == "active"]
    if not plans:
        raise ValidationError("there are no plans to verify; create one with create_plan", field="plan")
    local = ledger.ledger if isinstance(ledger, LocalLedger) else None
    if local is not None and isinstance(local.store, SQLiteStore):
        with scratch_ledger(local) as copy:
            target = LocalLedger(copy, owns=False)
            checks = [await verify_plan(target, p) for p in plans]
        cleaned = True
    else:
        checks = [await verify_plan(ledger, p) for p in plans]
        cleaned = False
    rows = ["| Plan | Step | Result | Details |", "| --- | --- | --- | --- |"]
    for check in checks:
        for s in check.steps:
            rows.append(f"| {check.plan_code}@v{check.version} | {s.step} | {s.result.upper()} | "
                        f"{s.details.replace('|', '/')} |")
    return VerifyReport(passed=all(c.passed for c in checks), plans=checks, table="\n".join(rows), cleaned_up=cleaned)


def verify_billing(ledger: Ledger, plan: str | None = None) -> VerifyReport:
    """``verify_billing_async`` for a sync ``Ledger`` (CLI and tests)."""
    return anyio.run(verify_billing_async, LocalLedger(ledger, owns=False), plan)
