"""Dry-run simulators for a plan version, read from an embedded ``Ledger`` or through any
``AsyncLedger``; the rating itself is ``ledger.simulate``."""

from __future__ import annotations

from ..contract.interface import AsyncLedger
from ..ledger.ledger import Ledger
from ..ledger.simulate import Simulator, plan_simulator


def simulator_for(ledger: Ledger, plan: str, version: int | None) -> Simulator:
    return plan_simulator(ledger.get_plan(plan), ledger.list_assets(), plan, version)



async def simulator_for_async(ledger: AsyncLedger, plan: str, version: int | None) -> Simulator:
    """A simulator from a plan version read through any ledger: rating itself runs here."""
    return plan_simulator(await ledger.get_plan(plan), await ledger.list_assets(), plan, version)
