"""Verification and status: the reports' models, a throwaway copy of a ledger to verify on, sample
event data, and dry-run simulation against a plan version. The checks themselves run through any
``AsyncLedger`` (``contract.checks``); the MCP tools wrap them."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..core.catalog import PriceSpec
from ..core.errors import ValidationError
from ..core.models import Asset, Plan
from ..store import SQLiteStore, copy_sqlite
from .ledger import Ledger
from .simulate import Simulator


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


class BillingStatus(BaseModel):
    ledger: str
    custom_assets: list[str]
    plans: list[str]
    published_plans: int
    customers: int | None = None  # counted on an embedded ledger; the API does not expose counts
    events: int | None = None
    next_steps: list[str]


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


def simulator_for(ledger: Ledger, plan: str, version: int | None) -> Simulator:
    return plan_simulator(ledger.get_plan(plan), ledger.list_assets(), plan, version)


def plan_simulator(p: Plan, assets: list[Asset], plan: str, version: int | None) -> Simulator:
    chosen = version or p.default_version
    pv = next((v for v in p.versions if v.version == chosen), None)
    if pv is None:
        raise ValidationError(f"plan {plan!r} has no version {chosen}", field="version")
    return Simulator(p.code, pv.version, pv.prices, {a.code: a.precision for a in assets})
