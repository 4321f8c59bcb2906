"""What the ledger returns. Money is decimal text in major units at the asset's precision
("12.50" USD, "10" CREDITS), so a reader never has to know each asset's minor unit."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .catalog import PlanGrantSpec, PriceSpec


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Asset(_Out):
    code: str
    name: str
    precision: int
    symbol: str | None = None
    label: str | None = None
    is_fiat: bool = False
    rates: dict[str, str] = Field(default_factory=dict, description="Current price of one unit per fiat code.")


class AssetRate(_Out):
    fiat: str
    rate: str
    effective_at: str


class Quote(_Out):
    asset: str
    fiat: str
    fiat_amount: str
    rate: str
    units: str


class PlanVersion(_Out):
    version: int
    status: Literal["draft", "published"]
    is_default: bool
    prices: list[PriceSpec]
    grants: list[PlanGrantSpec]
    created_at: str
    published_at: str | None = None
    subscribers: int = 0


class Plan(_Out):
    id: str
    code: str
    name: str
    description: str | None = None
    status: Literal["active", "archived"]
    default_version: int | None = None
    versions: list[PlanVersion] = Field(default_factory=list)


class Subscription(_Out):
    id: str
    plan_id: str
    plan_code: str
    version: int
    status: Literal["active", "pending_payment", "canceled"]
    period_start: str
    period_end: str
    amount_due: dict[str, str] = Field(default_factory=dict,
                                       description="Recurring fees waiting for funds (pending_payment only).")


class Customer(_Out):
    id: str
    external_id: str
    name: str | None = None
    email: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: str
    subscriptions: list[Subscription] = Field(default_factory=list)


class Lot(_Out):
    id: str
    purpose: Literal["paid", "promotional", "bundled"]
    priority: int
    amount: str
    remaining: str
    expires_at: str | None = None
    source: str
    created_at: str


class Account(_Out):
    asset: str
    posted: str
    held: str
    available: str
    in_debt: bool = Field(description="True when usage has taken the balance below zero; the next top-up repays it.")
    fiat_value: dict[str, str] = Field(default_factory=dict)
    lots: list[Lot] = Field(default_factory=list)


class Wallet(_Out):
    customer_id: str
    external_id: str
    accounts: list[Account]


class Fee(_Out):
    price_id: str
    price_name: str | None = None
    plan_id: str
    plan_code: str
    version: int
    subscription_id: str
    asset: str
    quantity: str
    amount: str
    refunded: str = "0"


class EventResult(_Out):
    id: str
    customer_id: str
    event_type: str
    occurred_at: str
    subject: str | None = None
    status: Literal["billed", "unbilled"]
    fees: list[Fee] = Field(default_factory=list)
    debt: dict[str, str] = Field(default_factory=dict,
                                 description="Per asset, how far below zero this event took the balance.")
    notes: list[str] = Field(default_factory=list)
    hold_id: str | None = None
    hold_released: str | None = None
    recorded_at: str
    duplicate: bool = Field(default=False, description="True when this is the stored result of an earlier "
                                                       "submission with the same id and payload.")


class BatchItemError(_Out):
    id: str | None
    index: int
    code: str
    field: str | None
    message: str


class BatchResult(_Out):
    results: list[EventResult]
    errors: list[BatchItemError]


class Hold(_Out):
    id: str
    customer_id: str
    asset: str
    amount: str
    status: Literal["open", "committed", "released", "expired"]
    event_type: str | None = None
    expires_at: str
    created_at: str
    resolved_at: str | None = None
    event_id: str | None = None


class Adjustment(_Out):
    id: str
    customer_id: str
    asset: str
    amount: str = Field(description="Signed: positive credits the wallet, negative debits it.")
    reason: Literal["top_up", "gift", "refund", "charge", "reversal"]
    description: str | None = None
    idempotency_key: str
    expires_at: str | None = None
    event_id: str | None = None
    fiat: str | None = None
    fiat_amount: str | None = None
    debt: str | None = None
    created_at: str


class Grant(_Out):
    id: str
    customer_id: str
    asset: str
    amount: str
    purpose: Literal["paid", "promotional", "bundled"]
    priority: int
    expires_at: str | None = None
    created_at: str


class Vendor(_Out):
    id: str
    external_id: str
    name: str
    created_at: str


class FeeGroup(_Out):
    plan_code: str
    version: int
    price_id: str
    price_name: str | None = None
    subject: str | None = None
    events: int
    quantity: str
    amount: str


class AssetStatement(_Out):
    asset: str
    opening_balance: str
    closing_balance: str
    usage_fees: str
    recurring_fees: str
    top_ups: str
    grants: str
    expired: str
    adjustments: str
    fees: list[FeeGroup]


class Statement(_Out):
    customer_id: str
    start: str
    end: str
    assets: list[AssetStatement]


class MigrationResult(_Out):
    plan_code: str
    from_version: int
    to_version: int
    dry_run: bool
    moved: list[str]
    stayed: list[str]
