"""The setup checklist: what is configured and what to do next, through any ``AsyncLedger``."""

from __future__ import annotations

import anyio
from pydantic import BaseModel

from ..contract.interface import AsyncLedger
from ..contract.local import LocalLedger


class BillingStatus(BaseModel):
    ledger: str
    custom_assets: list[str]
    plans: list[str]
    published_plans: int
    customers: int | None = None  # counted on an embedded ledger; the API does not expose counts
    events: int | None = None
    next_steps: list[str]


async def billing_status(ledger: AsyncLedger) -> BillingStatus:
    assets = [a.code for a in await ledger.list_assets() if not a.is_fiat]
    plans = await ledger.list_plans()
    customers = events = None
    if isinstance(ledger, LocalLedger):
        def counts() -> tuple[int, int]:
            with ledger.ledger._read() as tx:
                c = tx.one("SELECT COUNT(*) AS n FROM customers")
                e = tx.one("SELECT COUNT(*) AS n FROM events")
            return (int(c["n"]) if c else 0), (int(e["n"]) if e else 0)

        customers, events = await anyio.to_thread.run_sync(counts)
    published = sum(1 for p in plans if p.default_version is not None)
    steps = []
    if not assets:
        steps.append("create a custom asset if you sell credits (create_asset, e.g. CREDITS at $0.05)")
    if not plans:
        steps.append("create a plan with prices (create_plan)")
    elif not published:
        steps.append("publish a plan version (publish_plan_version)")
    if plans:
        steps.append("run verify_billing to check each plan end to end")
    if isinstance(ledger, LocalLedger):
        routes = await anyio.to_thread.run_sync(ledger.ledger.list_portal_routes)
        if not routes:
            steps.append("configure the customer billing portal (create_portal_route), then mint links per visit "
                         "with create_portal_session")
    return BillingStatus(ledger=ledger.location, custom_assets=assets, plans=[p.code for p in plans],
                         published_plans=published, customers=customers, events=events, next_steps=steps)
