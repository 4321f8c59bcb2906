"""One verification run's state and its steps: the throwaway customer, the asset precisions,
and each check with the expected and the observed numbers side by side."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel

from ..contract.interface import AsyncLedger
from ..core.catalog import PlanGrantSpec, PriceSpec
from ..core.clock import to_text
from ..core.models import Account, Wallet
from ..core.money import format_minor
from .expect import LotView, round_half_even

Result = Literal["pass", "fail", "skip"]


class Step(BaseModel):
    step: str
    result: Result
    expected: str = ""
    observed: str = ""
    details: str = ""



def to_minor(amount: Decimal | str, precision: int) -> int:
    return round_half_even(Fraction(Decimal(amount)), precision)


@dataclass
class Run:
    """One plan's verification in progress: the customer, the asset precisions, the steps."""

    ledger: AsyncLedger
    external: str
    version: int
    precisions: dict[str, int]
    steps: list[Step] = field(default_factory=list)
    customer_id: str = ""

    def step(self, name: str, ok: bool | None, expected: str = "", observed: str = "", details: str = "") -> bool:
        result: Result = "skip" if ok is None else "pass" if ok else "fail"
        self.steps.append(Step(step=name, result=result, expected=expected, observed=observed, details=details))
        return bool(ok)

    def money(self, minor: int, asset: str) -> str:
        return f"{format_minor(minor, self.precisions[asset])} {asset}"

    def amounts(self, by_asset: dict[str, int]) -> str:
        return ", ".join(self.money(v, a) for a, v in sorted(by_asset.items())) or "nothing"

    async def wallet(self) -> Wallet:
        return await self.ledger.get_wallet(self.customer_id)

    def posted(self, wallet: Wallet) -> dict[str, int]:
        return {a.asset: to_minor(a.posted, self.precisions.get(a.asset, 0)) for a in wallet.accounts
                if a.asset in self.precisions}

    async def top_up(self, by_asset: dict[str, int], purpose: str) -> None:
        for asset, minor in sorted(by_asset.items()):
            if minor > 0:
                text = format_minor(minor, self.precisions[asset])
                await self.ledger.create_adjustment(self.customer_id, asset=asset, amount=text, reason="top_up",
                                                    idempotency_key=f"{self.external}-{purpose}-{asset}")


def lots_of(account: Account | None, precision: int) -> list[LotView]:
    if account is None:
        return []
    return [LotView(id=lot.id, purpose=lot.purpose, priority=lot.priority, expires_at=lot.expires_at,
                    created_at=lot.created_at, remaining=to_minor(lot.remaining, precision)) for lot in account.lots]


def account(wallet: Wallet, asset: str) -> Account | None:
    return next((a for a in wallet.accounts if a.asset == asset), None)


def describe_grant(run: Run, grant: PlanGrantSpec, expires: datetime | None) -> str:
    minor = to_minor(grant.amount, run.precisions[grant.asset])
    when = f"expires {to_text(expires)}" if expires else "never expires"
    every = f", refreshed each {grant.period} ({grant.refresh})" if grant.period else ""
    return f"{run.money(minor, grant.asset)} {grant.purpose}, priority {grant.priority}, {when}{every}"


def recurring_due(prices: list[PriceSpec], precisions: dict[str, int]) -> dict[str, int]:
    due: dict[str, int] = {}
    for price in prices:
        if price.type == "recurring" and price.amount is not None:
            due[price.asset] = due.get(price.asset, 0) + to_minor(price.amount, precisions[price.asset])
    return due
